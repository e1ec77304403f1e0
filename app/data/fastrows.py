"""Canonical JSON written straight from the commonest records, without the general path.

A fast writer returns exactly ``canonical_json(shape(layout.convert(record, ctx), kind))``
for a record that is plainly valid, or None for anything else (an error, a rarer field), which
the general path then converts or refuses with its own message. The texts are the same bytes
(tests/data/test_fastrows.py checks each writer against the general path); only the dicts,
``Turns`` and checks in between are skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from json.encoder import encode_basestring  # how canonical_json writes a str
from typing import Any

import orjson
from orjson import dumps

FastWriter = Callable[[dict[str, Any]], str | None]


def quote(text: str) -> str:
    """``encode_basestring(text)``: orjson escapes every code point the same way (tests pin
    it), three times as fast; it refuses lone surrogates, which are left to the former."""
    try:
        return orjson.dumps(text).decode()
    except TypeError:
        return encode_basestring(text)


def _message(role: str, content: str) -> str:
    return f'{{"content": {quote(content)}, "role": "{role}"}}'


def _no_tools(record: dict[str, Any]) -> bool:
    """``tools_text`` gives None: the row has no ``tools``."""
    tools = record.get("tools")
    return tools is None or tools == "" or tools == []


def _or_empty(value: Any) -> Any:
    return "" if value is None else value  # ``_opt_text`` reads a missing field as ""


def alpaca_sft(record: dict[str, Any]) -> str | None:
    get = record.get
    if "instruction" not in record or "output" not in record or "label" in record:
        return None
    if get("history") or not _no_tools(record):
        return None
    system, instruction = _or_empty(get("system")), _or_empty(record["instruction"])
    extra, output = _or_empty(get("input")), _or_empty(record["output"])
    if not (type(system) is type(instruction) is type(extra) is type(output) is str):
        return None
    if not (instruction.strip() or extra.strip()) or not output.strip():
        return None
    prompt = f"{instruction}\n\n{extra}" if instruction and extra else instruction or extra
    try:  # orjson.dumps of a str: as encode_basestring (see quote), lone surrogates refused
        user, assistant = dumps(prompt).decode(), dumps(output).decode()
        head = f'{{"content": {dumps(system).decode()}, "role": "system"}}, ' if system else ""
    except TypeError:
        return None
    user_turn = f'{{"content": {user}, "role": "user"}}'
    return f'{{"messages": [{head}{user_turn}, {{"content": {assistant}, "role": "assistant"}}]}}'


# The roles each role may follow in a conversation without tools (``check_order``).
_FOLLOWS = {"system": (None,), "user": (None, "system", "assistant"), "assistant": ("user",)}


def messages_sft(record: dict[str, Any]) -> str | None:
    """OpenAI / TRL conversational ``messages`` of plain system, user and assistant turns."""
    messages = record.get("messages")
    if type(messages) is not list or "label" in record or not _no_tools(record):
        return None
    turns = []
    previous = None
    for message in messages:
        if type(message) is not dict:
            return None
        role, content = message.get("role"), message.get("content")
        if (
            type(role) is not str
            or role not in _FOLLOWS
            or previous not in _FOLLOWS[role]
            or type(content) is not str
        ):
            return None
        if role != "system" and not content.strip():
            return None
        if message.get("tool_calls") or message.get("function_call"):
            return None
        if message.get("loss_weight") is not None or message.get("weight") is not None:
            return None
        turns.append(_message(role, content))
        previous = role
    if previous != "assistant":
        return None
    return f'{{"messages": [{", ".join(turns)}]}}'


# (layout, kind) -> its fast writer.
FAST_WRITERS: dict[tuple[str, str], FastWriter] = {
    ("alpaca", "sft"): alpaca_sft,
    ("openai", "sft"): messages_sft,
    ("llamafactory_v1", "sft"): messages_sft,
}
