"""The job form, generated from TrainingSpec: one widget per field, with its help and bounds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic.fields import FieldInfo

from app.spec import HYPERPARAMETER_FIELDS, TrainingSpec, field_groups


@dataclass(frozen=True)
class Widget:
    name: str
    label: str
    help: str
    kind: str  # number | checkbox | select | text
    choices: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    step: str = "any"
    pattern: str | None = None


def _bounds(info: FieldInfo) -> tuple[float | None, float | None]:
    low = high = None
    for item in info.metadata:
        if isinstance(item, Ge | Gt):
            low = item.ge if isinstance(item, Ge) else item.gt
        if isinstance(item, Le | Lt):
            high = item.le if isinstance(item, Le) else item.lt
    return low, high


def widget_for(name: str, info: FieldInfo) -> Widget:
    label = name.replace("_", " ")
    help_text = info.description or ""
    annotation: Any = info.annotation
    if annotation is bool:
        return Widget(name, label, help_text, "checkbox")
    if get_origin(annotation) is Literal:
        return Widget(
            name, label, help_text, "select", choices=tuple(map(str, get_args(annotation)))
        )
    if annotation in (int, float):
        low, high = _bounds(info)
        step = "1" if annotation is int else "any"
        return Widget(name, label, help_text, "number", min=low, max=high, step=step)
    pattern = next((m.pattern for m in info.metadata if hasattr(m, "pattern")), None)
    return Widget(name, label, help_text, "text", pattern=pattern)


def job_form_groups() -> dict[str, list[Widget]]:
    groups: dict[str, list[Widget]] = {}
    for group, fields in field_groups().items():
        widgets = [widget_for(n, i) for n, i in fields if n in HYPERPARAMETER_FIELDS]
        if widgets:
            groups[group] = widgets
    return groups


def spec_defaults() -> dict[str, Any]:
    return TrainingSpec().model_dump()
