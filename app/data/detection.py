"""Which layout and kind a file holds: from the first record, a format hint, or a mapping.

The decision is made once, on the first record that is an object, and explained in words
(stored in ``Dataset.detection``); every later record is converted the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.data.canonical import KINDS, Context, shape
from app.data.errors import ImportRefused, Problem, RowError
from app.data.fastrows import FAST_WRITERS, FastWriter
from app.data.layouts import LAYOUTS, Layout
from app.data.mapping import Mapping


def _is_v1(messages: list[Any]) -> bool:
    return any(
        isinstance(m, dict)
        and ("loss_weight" in m or (isinstance(m.get("content"), list) and _has_value_part(m)))
        for m in messages
    )


def _has_value_part(message: dict[str, Any]) -> bool:
    return any(isinstance(p, dict) and "value" in p for p in message["content"])


def _has(record: dict[str, Any], *keys: str) -> bool:
    return all(key in record for key in keys)


def _detect_chat(record: dict[str, Any]) -> tuple[str, str] | None:
    if _has(record, "chosen_messages", "rejected_messages"):
        return "llamafactory_v1_dpo", "'chosen_messages' and 'rejected_messages'"
    if isinstance(record.get("input"), dict) and _has(
        record, "preferred_output", "non_preferred_output"
    ):
        return "openai_dpo", "'input' with 'preferred_output' and 'non_preferred_output'"
    if isinstance(record.get("conversations"), list):
        if _has(record, "chosen", "rejected"):
            return "sharegpt_preference", "'conversations' with 'chosen' and 'rejected'"
        return "sharegpt", "a 'conversations' list of turns"
    messages = record.get("messages")
    if isinstance(messages, list):
        if _is_v1(messages):
            return "llamafactory_v1", "'messages' with typed content parts or 'loss_weight'"
        return "openai", "a 'messages' list with roles"
    return None


def _detect_columns(record: dict[str, Any]) -> tuple[str, str] | None:
    if _has(record, "chosen", "rejected"):
        if "instruction" in record:
            return "alpaca_preference", "'instruction' with 'chosen' and 'rejected'"
        return "trl_preference", "'chosen' and 'rejected'"
    if "instruction" in record:
        return "alpaca", "'instruction' and 'output'"
    if "prompt" in record:
        if "completion" in record:
            return "trl_prompt_completion", "'prompt' and 'completion'"
        return "trl_prompt", "a 'prompt' and no answer"
    if "text" in record:
        return "text", "a 'text' field"
    return None


def detect(record: dict[str, Any]) -> tuple[str, str] | None:
    """(layout name, why) for a record, or None when no layout fits."""
    found = _detect_chat(record) or _detect_columns(record)
    if found is None:
        return None
    name, why = found
    return name, f"{LAYOUTS[name].title}: the first record has {why}"


@dataclass(frozen=True)
class Plan:
    layout: Layout
    kind: str
    reason: str
    context: Context
    mapping: Mapping | None
    fast: FastWriter | None = None

    def convert(self, record: dict[str, Any]) -> dict[str, Any]:
        """The canonical row of one record; raises Problem."""
        return shape(self.layout.convert(self._mapped(record), self.context), self.kind)

    def fast_json(self, record: dict[str, Any]) -> str | None:
        """The row's ``canonical_json`` when a fast writer vouches for the record, else None
        (then ``convert`` it)."""
        return None if self.fast is None else self.fast(self._mapped(record))

    def _mapped(self, record: dict[str, Any]) -> dict[str, Any]:
        if self.mapping is not None and not self.mapping.is_identity:
            return self.mapping.apply(record)
        return record

    def row_error(self, line: int, problem: Problem) -> RowError:
        field = problem.field
        message = problem.message.replace("{field}", field or "record")
        if self.mapping is not None:
            field = self.mapping.translate_field(field) if field else None
            message = self.mapping.translate(message)
        return RowError(line, message, field)


# A format hint may name a family: the first record then picks its member (an Alpaca file of
# chosen/rejected pairs is alpaca_preference), and the first member is the fallback.
FAMILIES = {
    "alpaca": ("alpaca", "alpaca_preference"),
    "sharegpt": ("sharegpt", "sharegpt_preference"),
    "openai": ("openai", "openai_dpo"),
    "llamafactory_v1": ("llamafactory_v1", "llamafactory_v1_dpo"),
    "trl": ("trl_prompt_completion", "trl_preference", "trl_prompt", "openai", "text"),
}


def check_choices(kind: str | None, layout: str | None) -> None:
    if kind and kind not in KINDS:
        raise ImportRefused(f"unknown dataset kind '{kind[:40]}' (use one of: {', '.join(KINDS)})")
    if layout and layout not in LAYOUTS and layout not in FAMILIES:
        raise ImportRefused(
            f"unknown format '{layout[:40]}' (use one of: {', '.join(LAYOUTS)}, or a family: "
            f"{', '.join(FAMILIES)}), or leave it empty"
        )


def make_plan(
    first: dict[str, Any], line: int, kind: str | None, layout: str | None, mapping: Mapping | None
) -> Plan:
    record = mapping.apply(first) if mapping is not None else first
    name, reason = _choose_layout(record, line, layout, mapping)
    chosen = LAYOUTS[name]
    kind = kind or (mapping.kind if mapping else None) or chosen.default_kind(record)
    if kind not in chosen.kinds:
        raise ImportRefused(
            f"the {chosen.title} layout cannot make '{kind}' rows (it can make: "
            f"{', '.join(chosen.kinds)}); choose another kind or give a mapping"
        )
    context = Context(kind=kind, tags=mapping.tags if mapping else None)
    fast = FAST_WRITERS.get((chosen.name, kind))
    return Plan(chosen, kind, f"{reason}; kind {kind}", context, mapping, fast)


def _choose_layout(
    record: dict[str, Any], line: int, layout: str | None, mapping: Mapping | None
) -> tuple[str, str]:
    if layout:
        family = FAMILIES.get(layout, (layout,))
        found = detect(record)
        name = found[0] if found and found[0] in family else family[0]
        return name, f"{LAYOUTS[name].title}: format given ({layout})"
    if mapping is not None and mapping.layout:
        return mapping.layout, f"{LAYOUTS[mapping.layout].title}: from the {mapping.reason}"
    found = detect(record)
    if found is None:
        keys = ", ".join(sorted(map(str, record))[:20]) or "none"
        raise ImportRefused(
            "could not recognise the layout of the first record; give a format or a mapping",
            [RowError(line, f"unrecognised record layout (fields: {keys})")],
        )
    name, why = found
    return name, f"{why} (after the {mapping.reason})" if mapping else why
