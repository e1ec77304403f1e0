"""Dataset operations shared by the API and the pages: request bodies (JSON for the API, the
same models for forms), the calls into app.data, and the version JSON shape."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel as Body
from pydantic import Field, ValidationError, model_validator
from sqlalchemy.orm import Session

from app.access import get_owned
from app.data import contamination as contam
from app.data import governance as gov
from app.data.tokens import TokenizerUnavailable, find_model, load_counter
from app.models import Dataset, User
from app.serialize import dataset_json
from app.web.params import CountField, IdField, RefText, SeedField


class DedupIn(Body):
    near: bool = Field(False, description="Also find near duplicates (MinHash LSH).")
    threshold: float = Field(0.8, gt=0, le=1, description="Jaccard similarity of word shingles.")
    num_perm: int = Field(128, ge=16, le=512)
    shingle: int = Field(3, ge=1, le=10, description="Words per shingle.")
    apply: bool = Field(True, description="false: only report; true: write the deduped version.")


class SplitIn(Body):
    eval_ratio: float | None = Field(None, gt=0, lt=1)
    seed: SeedField = 42
    by_column: str | None = Field(None, max_length=200)
    eval_values: list[Any] | None = None

    @model_validator(mode="after")
    def one_way(self) -> SplitIn:
        if (self.eval_ratio is None) == (self.by_column is None):
            raise ValueError("give either eval_ratio (random split) or by_column (+ eval_values)")
        if self.by_column is not None and not self.eval_values:
            raise ValueError("a split by column needs eval_values")
        return self


class FilterIn(Body):
    min_chars: CountField | None = None
    max_chars: CountField | None = None
    min_tokens: CountField | None = None
    max_tokens: CountField | None = None
    model: RefText | None = Field(None, description="Base model (id or name) for token lengths.")
    label: bool | None = None
    search: str | None = Field(None, max_length=1000)
    exclude_search: bool = False


class ContaminationIn(Body):
    against: IdField
    n: int = Field(13, ge=1, le=64)
    min_n: int = Field(5, ge=1, le=64)
    apply: bool = Field(False, description="true: write a version without the flagged rows.")


class OperationError(ValueError):
    """Why an operation was refused, in words a person can act on (422)."""


def validation_message(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'request'}: {e['msg']}" for e in exc.errors()
    )


def from_form(model: type[Body], form: dict[str, Any]) -> Any:
    """A body from form fields (empty fields left out); OperationError when invalid."""
    values = {k: v for k, v in form.items() if k != "csrf_token" and v not in ("", None)}
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise OperationError(validation_message(exc)) from exc


def version_json(dataset: Dataset) -> dict[str, Any]:
    return {
        **dataset_json(dataset),
        "parent_id": dataset.parent_id,
        "operation": dataset.operation,
        "content_hash": dataset.content_hash,
    }


def run_dedup(
    session: Session, dataset: Dataset, body: DedupIn
) -> tuple[gov.DedupReport, Dataset | None]:
    options = gov.DedupOptions(body.near, body.threshold, body.num_perm, body.shingle)
    try:
        report = gov.find_duplicates(session, dataset, options)
        version = gov.apply_dedup(session, dataset, options, report) if body.apply else None
    except gov.GovernanceError as exc:
        raise OperationError(str(exc)) from exc
    return report, version


def run_split(session: Session, dataset: Dataset, body: SplitIn) -> tuple[Dataset, Dataset]:
    try:
        if body.by_column is not None:
            return gov.split_by_column(session, dataset, body.by_column, body.eval_values or [])
        return gov.split_random(session, dataset, body.eval_ratio or 0.0, body.seed)
    except gov.GovernanceError as exc:
        raise OperationError(str(exc)) from exc


def run_filter(session: Session, dataset: Dataset, body: FilterIn) -> Dataset:
    spec = gov.FilterSpec(**body.model_dump())
    counter = None
    if spec.needs_tokens:
        model = find_model(session, body.model)
        if model is None:
            raise OperationError(f"no base model '{body.model or ''}' with a tokenizer")
        try:
            counter = load_counter(model)
        except TokenizerUnavailable as exc:
            raise OperationError(str(exc)) from exc
    try:
        return gov.filter_rows(session, dataset, spec, counter)
    except gov.GovernanceError as exc:
        raise OperationError(str(exc)) from exc


def run_contamination(
    session: Session, dataset: Dataset, body: ContaminationIn, user: User
) -> tuple[contam.ContaminationReport, Dataset, Dataset | None]:
    against = get_owned(session, Dataset, body.against, user)
    options = contam.ContaminationOptions(n=body.n, min_n=min(body.min_n, body.n))
    try:
        report = contam.check_contamination(session, dataset, against, options)
        version = (
            contam.decontaminate(session, dataset, against, options, report) if body.apply else None
        )
    except gov.GovernanceError as exc:
        raise OperationError(str(exc)) from exc
    return report, against, version
