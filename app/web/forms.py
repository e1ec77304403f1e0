"""The job form, generated from TrainingSpec: one widget per field, with its help and bounds,
and the adapters it applies to (the page hides and disables the others); and the device class
choice, from the registered workers."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic.fields import FieldInfo

from app.methods import METHODS
from app.models import Worker
from app.routing import class_key
from app.spec import (
    ADAPTERS,
    HYPERPARAMETER_FIELDS,
    TrainingSpec,
    field_adapters,
    field_applies,
    field_condition,
    field_groups,
    field_methods,
)
from app.worker_registry import is_online

ADAPTER_LABELS = {
    "full": "Full fine-tuning (every weight)",
    "freeze": "Freeze (train the last blocks)",
    "lora": "LoRA",
    "dora": "DoRA (weight-decomposed LoRA)",
    "qlora": "QLoRA (LoRA on a 4/8-bit base)",
    "prefix": "Prefix tuning",
    "prompt": "Prompt tuning",
    "ptuning": "P-tuning",
    "ia3": "IA3",
}


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
    adapters: tuple[str, ...] | None = None  # None: every adapter
    methods: tuple[str, ...] | None = None  # None: every method
    when: dict[str, str] = field(default_factory=dict)
    above: dict[str, int] = field(default_factory=dict)  # shown only when each is exceeded


def _bounds(info: FieldInfo) -> tuple[float | None, float | None]:
    low = high = None
    for item in info.metadata:
        if isinstance(item, Ge | Gt):
            low = item.ge if isinstance(item, Ge) else item.gt
        if isinstance(item, Le | Lt):
            high = item.le if isinstance(item, Le) else item.lt
    return low, high


# Knobs the form shows only while another knob is above a value, a condition the spec's `when`
# (equality) cannot say: a strategy is how several devices share a run. The spec still refuses a
# non-default value that does not apply (app.spec_rules), with the reason next to the field.
SHOWN_ABOVE: dict[str, dict[str, int]] = {"distributed_strategy": {"num_devices": 1}}


def widget_for(name: str, info: FieldInfo) -> Widget:
    label = name.replace("_", " ")
    help_text = info.description or ""
    annotation: Any = info.annotation
    scope: dict[str, Any] = {
        "adapters": field_adapters(name),
        "methods": field_methods(name),
        "when": {k: str(v) for k, v in field_condition(name).items()},
        "above": SHOWN_ABOVE.get(name, {}),
    }
    if annotation is bool:
        return Widget(name, label, help_text, "checkbox", **scope)
    if get_origin(annotation) is Literal:
        choices = tuple(map(str, get_args(annotation)))
        return Widget(name, label, help_text, "select", choices=choices, **scope)
    if annotation in (int, float):
        low, high = _bounds(info)
        step = "1" if annotation is int else "any"
        return Widget(name, label, help_text, "number", min=low, max=high, step=step, **scope)
    pattern = next((m.pattern for m in info.metadata if hasattr(m, "pattern")), None)
    return Widget(name, label, help_text, "text", pattern=pattern, **scope)


def adapter_choices() -> list[tuple[str, str]]:
    return [(adapter, ADAPTER_LABELS.get(adapter, adapter)) for adapter in ADAPTERS]


def method_choices() -> list[tuple[str, str]]:
    return [(method.name, method.label) for method in METHODS.values()]


def applicable_fields(values: dict[str, Any]) -> set[str]:
    """The hyperparameters that apply given the form's method and adapter (and conditions)."""
    return {name for name in HYPERPARAMETER_FIELDS if field_applies(name, values)}


def _above(value: Any, threshold: int) -> bool:
    """Whether form text ``value`` is above ``threshold``; text that is no number shows the
    field (the number's own error is shown next to it)."""
    try:
        return float(value) > threshold
    except (TypeError, ValueError):
        return True


def shown_fields(values: dict[str, Any], errors: dict[str, str] | None = None) -> set[str]:
    """The hyperparameters the form shows (enabled): those that apply, less those whose
    ``SHOWN_ABOVE`` condition fails, unless the field has an error to show."""
    errors = errors or {}
    shown = applicable_fields(values)
    for name, conditions in SHOWN_ABOVE.items():
        default = {other: TrainingSpec.model_fields[other].default for other in conditions}
        met = all(
            _above(values.get(other, default[other]), threshold)
            for other, threshold in conditions.items()
        )
        if not met and name not in errors:
            shown.discard(name)
    return shown


def hyperparameters_from_form(values: dict[str, str]) -> dict[str, Any]:
    """Form text to hyperparameters: only the fields that apply to the chosen method and adapter
    (the others keep their defaults), and an unticked checkbox (which sends nothing) is False."""
    hyper: dict[str, Any] = {}
    for name in applicable_fields(values):
        if TrainingSpec.model_fields[name].annotation is bool:
            hyper[name] = name in values
        elif name in values:
            hyper[name] = values[name]
    return hyper


def job_form_groups() -> dict[str, list[Widget]]:
    groups: dict[str, list[Widget]] = {}
    for group, fields in field_groups().items():
        widgets = [widget_for(n, i) for n, i in fields if n in HYPERPARAMETER_FIELDS]
        if widgets:
            groups[group] = widgets
    return groups


def spec_defaults() -> dict[str, Any]:
    return TrainingSpec().model_dump()


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def device_class_choices(
    workers: Iterable[Worker], stale_after_seconds: float
) -> list[tuple[str, str]]:
    """(value, label) of each device class the registered workers have, classes with an online
    worker first, e.g. ("NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3 (2 workers, up to 8
    devices)"). Classes that differ only in case or punctuation are one (as routing sees them).
    The form adds "Any worker" (empty) before these."""
    classes: dict[str, dict[str, Any]] = {}
    for worker in workers:
        if not worker.device_class:
            continue
        entry = classes.setdefault(
            class_key(worker.device_class),
            {"name": worker.device_class, "workers": 0, "online": 0, "max": 0},
        )
        entry["workers"] += 1
        entry["online"] += is_online(worker, stale_after_seconds)
        entry["max"] = max(entry["max"], worker.max_devices or 1)
    choices = []
    for entry in sorted(classes.values(), key=lambda e: (not e["online"], e["name"].lower())):
        parts = [_plural(entry["workers"], "worker"), f"up to {_plural(entry['max'], 'device')}"]
        if not entry["online"]:
            parts.append("offline")
        choices.append((entry["name"], f"{entry['name']} ({', '.join(parts)})"))
    return choices


def human_bytes(n: float | None) -> str:
    if n is None:
        return "unknown"
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def human_count(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:.2f}{unit} ({n:,})"
    return f"{n:,}"


BREAKDOWN_PARTS = (
    "weights",
    "gathered_weights",
    "reference_model",
    "gradients",
    "optimizer",
    "activations",
    "overhead",
)
SHOWN_WHEN_ZERO = {"weights", "gradients", "optimizer", "activations", "overhead"}


def _devices_text(result: dict[str, Any], breakdown: dict[str, Any]) -> str | None:
    """How the run spreads over its devices, e.g. "4 devices, deepspeed_zero3: weights,
    gradients, optimizer sharded 4 ways (per device above; 18.20 GiB on all)"."""
    count = int(breakdown.get("num_devices") or 1)
    if count <= 1:
        return None
    sharded = [part.replace("_", " ") for part in breakdown.get("sharded") or []]
    how = f"{', '.join(sharded)} sharded {count} ways" if sharded else "a full copy on each"
    every = breakdown.get("total_all_devices")
    on_all = f"; {human_bytes(every)} on all" if every else ""
    strategy = breakdown.get("distributed_strategy") or result.get("distributed_strategy")
    return f"{count} devices, {strategy}: {how} (per device above{on_all})"


def _device_memory_text(result: dict[str, Any]) -> str | None:
    """The device memory the fit is judged against and where it came from."""
    size = result.get("device_memory_bytes")
    if not size:
        return None
    source = result.get("device_memory_source")
    origin = {"setting": "FTSTUDIO_DEVICE_MEMORY_BYTES", None: ""}.get(source, source or "")
    if result.get("device_class") and source != "setting":
        origin = f"{origin}, {result['device_class']}"
    return f"{human_bytes(size)} per device" + (f" ({origin})" if origin else "")


def estimate_display(result: dict[str, Any]) -> dict[str, Any]:
    """Text for the estimate panel (memory is per device; a run on several devices gets a
    "devices" line in the breakdown saying what is sharded)."""
    breakdown = result.get("memory_breakdown") or {}
    share = result.get("trainable_share")
    devices = _devices_text(result, breakdown)
    per_step = result.get("rows_per_optimizer_step")
    tokens_per_step = result.get("tokens_per_optimizer_step")
    return {
        "trainable": human_count(result.get("trainable_parameters")),
        "total": human_count(result.get("total_parameters")),
        "share": f"{share * 100:.4g} %" if share is not None else "",
        "memory": human_bytes(result.get("memory_bytes")),
        "breakdown": [
            (part.replace("_", " "), human_bytes(breakdown[part]))
            for part in BREAKDOWN_PARTS
            if part in breakdown and (breakdown[part] or part in SHOWN_WHEN_ZERO)
        ]
        + ([("devices", devices)] if devices else []),
        "weight_dtype": breakdown.get("weight_dtype"),
        "sequence_length": breakdown.get("sequence_length"),
        "tokens": human_count(result.get("tokens_per_epoch")),
        "devices": devices,
        "per_step": (
            f"{per_step:,} rows"
            + (f", about {tokens_per_step:,} tokens" if tokens_per_step else "")
            + " per optimizer step"
        )
        if per_step
        else None,
        "device": _device_memory_text(result),
    }
