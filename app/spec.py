"""TrainingSpec: the one home of every hyperparameter, its default, bounds and help text.

The job form is generated from it, the API validates against it, the job stores
``spec.model_dump()`` with ``SPEC_VERSION``, and ``worker.training.mapping`` turns it into
TRL/peft objects. Field names follow transformers/TRL/peft where those have one.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SPEC_VERSION = 1

Method = Literal["sft"]
Adapter = Literal["lora"]
Scheduler = Literal["linear", "cosine", "constant", "constant_with_warmup"]


def knob(default: Any, help: str, group: str = "training", **bounds: Any) -> Any:
    """A spec field with help text and the form group it is shown in."""
    return Field(default, description=help, json_schema_extra={"group": group}, **bounds)


class TrainingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Method = knob("sft", "Training method.", "method")
    adapter: Adapter = knob("lora", "How the weights are trained.", "method")

    num_train_epochs: float = knob(1.0, "Passes over the training data.", gt=0, le=100)
    max_steps: int = knob(
        -1, "Stop after this many optimizer steps (-1: run the epochs).", ge=-1, le=1_000_000
    )
    learning_rate: float = knob(2e-4, "Peak learning rate.", gt=0, le=1.0)
    lr_scheduler_type: Scheduler = knob("cosine", "Learning-rate schedule after warmup.")
    warmup_steps: float = knob(
        0.03, "Linear warmup: a whole number of steps, or a share of all steps below 1.", ge=0
    )
    weight_decay: float = knob(0.0, "AdamW weight decay.", ge=0, le=1)
    max_grad_norm: float = knob(1.0, "Gradient clipping norm (0: off).", ge=0, le=100)
    per_device_train_batch_size: int = knob(4, "Sequences per device per step.", ge=1, le=1024)
    gradient_accumulation_steps: int = knob(
        1, "Micro-batches accumulated per optimizer step.", ge=1, le=1024
    )
    max_length: int = knob(
        1024, "Tokens per sequence; longer rows are truncated.", ge=16, le=131072
    )
    completion_only_loss: bool = knob(
        True, "Train only on the final assistant turn (the completion), not on the prompt."
    )
    seed: int = knob(42, "Random seed for reproducible runs.", ge=0, le=2**31 - 1)

    logging_steps: int = knob(5, "Record metrics every N steps.", "logging", ge=1, le=100_000)
    save_steps: int = knob(
        500, "Save a checkpoint every N steps (a final one is always saved).", "logging", ge=1
    )
    save_total_limit: int = knob(3, "Keep at most N intermediate checkpoints.", "logging", ge=1)

    lora_r: int = knob(16, "LoRA rank.", "adapter", ge=1, le=1024)
    lora_alpha: int = knob(32, "LoRA scaling (alpha / r multiplies the update).", "adapter", ge=1)
    lora_dropout: float = knob(0.05, "Dropout on the LoRA path.", "adapter", ge=0, lt=1)
    lora_target_modules: str = knob(
        "all-linear",
        "Modules to adapt: all-linear, or a comma-separated list such as q_proj,v_proj.",
        "adapter",
        pattern=r"^(all-linear|[A-Za-z0-9_.]+(\s*,\s*[A-Za-z0-9_.]+)*)$",
    )

    @model_validator(mode="after")
    def _check_consistency(self) -> TrainingSpec:
        if self.warmup_steps >= 1 and not float(self.warmup_steps).is_integer():
            raise ValueError("warmup_steps must be a whole number of steps, or a share below 1")
        if self.max_steps > 0 and self.logging_steps > self.max_steps:
            raise ValueError("logging_steps is larger than max_steps: no metrics would be recorded")
        return self


# Fields the studio uses itself rather than handing to a library (see worker.training.mapping).
STUDIO_ONLY_FIELDS = frozenset({"method", "adapter"})

HYPERPARAMETER_FIELDS = tuple(
    name for name in TrainingSpec.model_fields if name not in STUDIO_ONLY_FIELDS
)


def field_groups() -> dict[str, list[tuple[str, Any]]]:
    """Spec fields by form group, in declaration order, for generating the job form."""
    groups: dict[str, list[tuple[str, Any]]] = {}
    for name, info in TrainingSpec.model_fields.items():
        group = (info.json_schema_extra or {}).get("group", "training")  # type: ignore[union-attr]
        groups.setdefault(group, []).append((name, info))
    return groups
