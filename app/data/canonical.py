"""Canonical rows, one shape per kind, as stored in ``DatasetRow.data``.

- sft: ``{"messages": [...], "tools"?: str}`` (ends with a non-empty assistant turn)
- preference: ``{"prompt": [... ending with a user turn], "chosen": [...], "rejected": [...]}``
- kto: ``{"messages": [... ending with an assistant turn], "label": bool}``
- text: ``{"text": str}``
- prompt: ``{"prompt": [... ending with a user turn], "reference"?: str}``

Layouts parse a record into ``Parsed``; ``shape`` validates it and builds the row of a kind.
The content hash of a dataset is the sha256 of its rows, each written as ``canonical_json`` and
a newline, in order, so equal rows in equal order give equal hashes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.data.errors import Problem
from app.data.messages import Turns, check_ends_with, check_order, short, tools_text

KINDS = ("sft", "preference", "kto", "text", "prompt")


@dataclass(frozen=True)
class Context:
    """What a layout's converter needs besides the record."""

    kind: str
    tags: dict[str, str] | None = None  # ShareGPT role/content tags; None: guessed per record


@dataclass
class Parsed:
    """A record, understood: a conversation (or a pair's prompt) and what goes with it."""

    messages: Turns | None = None
    chosen: Turns | None = None
    rejected: Turns | None = None
    label: bool | None = None
    text: str | None = None
    tools: str | None = None
    reference: str | None = None


def parse_label(value: Any, where: str = "label") -> bool:
    """KTO labels: JSON booleans, or the words true/false (CSV cells are text)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if value is None:
        raise Problem("missing field '{field}' (true or false)", where)
    raise Problem(f"label not boolean: expected true or false, got {short(value)}", where)


def chat(turns: Turns, record: dict[str, Any]) -> Parsed:
    """A conversation with the record's optional ``label`` (KTO) and ``tools``."""
    label = parse_label(record["label"]) if "label" in record else None
    return Parsed(messages=turns, label=label, tools=tools_text(record.get("tools"), "tools"))


def _conversation(parsed: Parsed) -> Turns:
    if parsed.messages is None:
        raise Problem("the record has no conversation")
    turns = parsed.messages + parsed.chosen if parsed.chosen is not None else parsed.messages
    check_order(turns)
    check_ends_with(turns, "assistant", "conversation")
    return turns


def _sft(parsed: Parsed) -> dict[str, Any]:
    row: dict[str, Any] = {"messages": _conversation(parsed).messages}
    if parsed.tools:
        row["tools"] = parsed.tools
    return row


def _kto(parsed: Parsed) -> dict[str, Any]:
    messages = _conversation(parsed).messages
    if parsed.label is None:
        raise Problem("missing field '{field}' (true or false)", "label")
    return {"messages": messages, "label": parsed.label}


def _prompt_of(parsed: Parsed) -> tuple[Turns, str | None]:
    if parsed.messages is None:
        raise Problem("the record has no prompt")
    prompt, reference = parsed.messages, parsed.reference
    if parsed.chosen is None and prompt.messages and prompt.messages[-1]["role"] == "assistant":
        prompt, answer = prompt.split(len(prompt) - 1)
        reference = reference or answer.messages[0]["content"]
    check_order(prompt)
    check_ends_with(prompt, "user", "prompt")
    return prompt, reference


def _prompt(parsed: Parsed) -> dict[str, Any]:
    prompt, reference = _prompt_of(parsed)
    row: dict[str, Any] = {"prompt": prompt.messages}
    if reference:
        row["reference"] = reference
    return row


def _answers(prompt: Turns, answers: Turns | None, name: str) -> list[dict[str, Any]]:
    if answers is None or not answers:
        raise Problem(f"missing field '{{field}}': a preference pair needs a {name} answer", name)
    for msg, where in answers:
        if msg["role"] not in ("assistant", "tool"):
            raise Problem(f"a {name} answer holds assistant turns, not a {msg['role']} turn", where)
    check_order(prompt + answers)
    check_ends_with(answers, "assistant", f"{name} answer")
    return answers.messages


def _preference(parsed: Parsed) -> dict[str, Any]:
    prompt, _ = _prompt_of(parsed)
    return {
        "prompt": prompt.messages,
        "chosen": _answers(prompt, parsed.chosen, "chosen"),
        "rejected": _answers(prompt, parsed.rejected, "rejected"),
    }


def _text(parsed: Parsed) -> dict[str, Any]:
    if parsed.text is None:
        raise Problem("missing field '{field}'", "text")
    if not parsed.text.strip():
        raise Problem("'{field}' is empty", "text")
    return {"text": parsed.text}


SHAPERS: dict[str, Callable[[Parsed], dict[str, Any]]] = {
    "sft": _sft,
    "preference": _preference,
    "kto": _kto,
    "text": _text,
    "prompt": _prompt,
}


def shape(parsed: Parsed, kind: str) -> dict[str, Any]:
    return SHAPERS[kind](parsed)


# json.dumps(row, sort_keys=True, ensure_ascii=False), without building an encoder per call.
_CANONICAL = json.JSONEncoder(sort_keys=True, ensure_ascii=False)


def canonical_json(row: dict[str, Any]) -> str:
    return _CANONICAL.encode(row)
