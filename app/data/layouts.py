"""Layouts the studio recognises, each turned into canonical ``sft`` rows: {"messages": [...]}."""

from __future__ import annotations

from typing import Any

ROLES = ("system", "user", "assistant", "tool")


def detect_layout(record: Any) -> str | None:
    if not isinstance(record, dict):
        return None
    if "instruction" in record and "output" in record:
        return "alpaca"
    if isinstance(record.get("messages"), list):
        return "openai"
    return None


def _text(record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"field '{key}' must be a string")
    return value


def alpaca_to_messages(record: dict[str, Any]) -> list[dict[str, str]]:
    missing = [key for key in ("instruction", "output") if key not in record]
    if missing:
        raise ValueError(f"missing field {', '.join(repr(k) for k in missing)} (Alpaca layout)")
    instruction = _text(record, "instruction")
    extra_input = _text(record, "input")
    output = _text(record, "output")
    if not instruction.strip() and not extra_input.strip():
        raise ValueError("field 'instruction' is empty")
    if not output.strip():
        raise ValueError("field 'output' is empty: nothing for the assistant to learn")
    messages: list[dict[str, str]] = []
    if system := _text(record, "system"):
        messages.append({"role": "system", "content": system})
    for turn in record.get("history") or []:
        if not (isinstance(turn, list | tuple) and len(turn) == 2):
            raise ValueError("field 'history' must be a list of [user, assistant] pairs")
        messages += [
            {"role": "user", "content": str(turn[0])},
            {"role": "assistant", "content": str(turn[1])},
        ]
    prompt = (
        f"{instruction}\n\n{extra_input}"
        if instruction and extra_input
        else instruction or extra_input
    )
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]
    return messages


def openai_to_messages(record: dict[str, Any]) -> list[dict[str, str]]:
    messages = []
    for position, message in enumerate(record["messages"], start=1):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise ValueError(f"message {position} has no valid role ({', '.join(ROLES)})")
        content = message.get("content")
        if not isinstance(content, str):
            raise ValueError(f"message {position} content must be a string")
        messages.append({"role": message["role"], "content": content})
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("the last message must be an assistant turn")
    if not messages[-1]["content"].strip():
        raise ValueError("the last assistant turn is empty")
    return messages


CONVERTERS = {"alpaca": alpaca_to_messages, "openai": openai_to_messages}
