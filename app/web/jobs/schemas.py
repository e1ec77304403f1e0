"""The job request body of POST /api/jobs and /api/jobs/estimate.

Its OpenAPI schema documents every TrainingSpec field with its type, default, bounds and help:
``method`` and ``adapter`` at the top level, the rest under ``hyperparameters``. The schema is
read from TrainingSpec itself (nothing is declared twice). Validation stays where it always
was: the body accepts any values here and ``app.jobs`` checks them against TrainingSpec, so a
bad hyperparameter is refused with ``loc: ["hyperparameters", <field>]`` and the spec's
message, cross-field conflicts included.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel as Body
from pydantic import Field, WithJsonSchema

from app.spec import HYPERPARAMETER_FIELDS, TrainingSpec
from app.web.params import IdField, RefField


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    """The schema with ``{"$ref": "#/$defs/X"}`` replaced by X's schema (the OpenAPI document
    has no ``$defs`` of TrainingSpec's to point at)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return _inline_refs({**defs[ref.removeprefix("#/$defs/")], **rest}, defs)
        return {k: _inline_refs(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


def spec_field_schemas() -> dict[str, dict[str, Any]]:
    """Each TrainingSpec field's JSON schema (type, default, bounds, ``description``)."""
    schema = TrainingSpec.model_json_schema()
    return _inline_refs(schema["properties"], schema.get("$defs", {}))


_FIELDS = spec_field_schemas()

HYPERPARAMETERS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Hyperparameters",
    "description": "TrainingSpec knobs besides method and adapter; each left out takes its "
    "default (GET /api/presets has named starting points).",
    "properties": {name: _FIELDS[name] for name in HYPERPARAMETER_FIELDS},
    "additionalProperties": False,
}

MethodField = Annotated[str, WithJsonSchema(_FIELDS["method"])]
AdapterField = Annotated[str, WithJsonSchema(_FIELDS["adapter"])]
HyperparametersField = Annotated[dict[str, Any], WithJsonSchema(HYPERPARAMETERS_SCHEMA)]


class JobIn(Body):
    """What POST /api/jobs takes (and /api/jobs/estimate, which creates nothing)."""

    name: str | None = Field(default=None, max_length=200)
    method: MethodField = TrainingSpec.model_fields["method"].default
    adapter: AdapterField = TrainingSpec.model_fields["adapter"].default
    base_model: RefField | None = Field(
        default=None, description="required unless parent_checkpoint_id gives it"
    )
    dataset_id: IdField
    eval_dataset_id: IdField | None = None
    parent_checkpoint_id: IdField | None = Field(
        default=None, description="start from this checkpoint of one of your jobs (chaining)"
    )
    chat_template_id: IdField | None = Field(
        default=None,
        description="train with this library template (default: the parent run's, else the "
        "base model's own); the job pins its current version",
    )
    device_class: str | None = Field(
        default=None,
        max_length=200,
        description="train only on a worker of this device class (as GET /api/workers names "
        "it, e.g. 'NVIDIA H100 80GB HBM3' or 'cpu'); null: any worker",
    )
    hyperparameters: HyperparametersField = Field(default_factory=dict)
