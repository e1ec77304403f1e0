"""Canonical chat messages: normalising one message, tool calls, and the order of turns.

A canonical message is ``{"role", "content": str}`` plus, when present, ``"loss_weight": float``
(LLaMA-Factory v1, OpenAI's ``weight``) and ``"tool_calls"`` on assistant turns, each
``{"type": "function", "function": {"name": str, "arguments": dict}}`` (the shape chat
templates expect).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from app.data.errors import Problem

ROLES = ("system", "user", "assistant", "tool")
ROLE_ALIASES = {"developer": "system", "function": "tool", "ipython": "tool"}
# Which role may come before each role ("call": an assistant turn that calls tools).
MAY_FOLLOW: dict[str, frozenset[str | None]] = {
    "system": frozenset({None}),
    "user": frozenset({None, "system", "assistant"}),
    "assistant": frozenset({"user", "tool"}),
    "tool": frozenset({"call", "tool"}),
}


@dataclass
class Turns:
    """Messages with, for each, where it came from in the record (for error messages)."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    where: list[str] = field(default_factory=list)

    def add(self, message: dict[str, Any], where: str) -> None:
        self.messages.append(message)
        self.where.append(where)

    def __iter__(self) -> Iterator[tuple[dict[str, Any], str]]:
        return iter(zip(self.messages, self.where, strict=True))

    def __len__(self) -> int:
        return len(self.messages)

    def __add__(self, other: Turns) -> Turns:
        return Turns(self.messages + other.messages, self.where + other.where)

    def split(self, at: int) -> tuple[Turns, Turns]:
        return (
            Turns(self.messages[:at], self.where[:at]),
            Turns(self.messages[at:], self.where[at:]),
        )


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def require_str(value: Any, where: str, *, empty_ok: bool = True) -> str:
    if not isinstance(value, str):
        if value is None:
            raise Problem("missing field '{field}'", where)
        raise Problem(f"'{{field}}' must be a string, got {type(value).__name__}", where)
    if not empty_ok and not value.strip():
        raise Problem("'{field}' is empty", where)
    return value


def tools_text(value: Any, where: str) -> str | None:
    """Tool schemas as a JSON string (the canonical ``tools``); None when there are none."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError as exc:
            raise Problem("'{field}' is not valid JSON", where) from exc
        return value
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    raise Problem("'{field}' must be a JSON string or a list of tool schemas", where)


def tool_call(raw: Any, where: str) -> dict[str, Any]:
    """OpenAI's ``{"function": {...}}`` or a flat ``{"name", "arguments"}`` (ShareGPT, v1)."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise Problem("the tool call is not valid JSON", where) from exc
    if not isinstance(raw, dict):
        raise Problem("a tool call must be an object with 'name' and 'arguments'", where)
    function = raw.get("function", raw)
    if not isinstance(function, dict):
        raise Problem("'function' of a tool call must be an object", where)
    name = function.get("name")
    if not isinstance(name, str) or not name.strip():
        raise Problem("the tool call has no function name", where)
    arguments = function.get("arguments", function.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError as exc:
            raise Problem("the tool call's arguments are not valid JSON", where) from exc
    if not isinstance(arguments, dict):
        raise Problem("the tool call's arguments must be a JSON object", where)
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


def tool_calls(raw: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise Problem("the tool call is not valid JSON", where) from exc
    calls = raw if isinstance(raw, list) else [raw]
    return [tool_call(call, f"{where}[{i}]") for i, call in enumerate(calls)]


def _content(raw: Any, where: str) -> tuple[str, list[dict[str, Any]]]:
    """Text of a message's content: a string, or typed parts (OpenAI ``text``, v1 ``value``)."""
    if raw is None:
        return "", []
    if isinstance(raw, str):
        return raw, []
    if not isinstance(raw, list):
        raise Problem("'{field}' must be a string or a list of content parts", where)
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, part in enumerate(raw):
        here = f"{where}[{i}]"
        kind = part.get("type", "text") if isinstance(part, dict) else None
        if kind == "text":
            texts.append(require_str(part.get("text", part.get("value")), f"{here}.value"))
        elif kind == "tool_call":
            calls.append(tool_call(part.get("value"), here))
        else:
            found = short(kind) if kind else type(part).__name__
            raise Problem(f"content part {found} is not supported (text and tool_call are)", here)
    return "".join(texts), calls


def _loss_weight(raw: Any, where: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise Problem(f"loss weight must be a number, got {short(raw)}", where)
    return float(raw)


def message(raw: Any, where: str) -> dict[str, Any]:
    """One OpenAI / TRL / LLaMA-Factory v1 message in canonical form."""
    if not isinstance(raw, dict):
        raise Problem("a message must be an object with 'role' and 'content'", where)
    role = raw.get("role")
    role = ROLE_ALIASES.get(role, role) if isinstance(role, str) else role
    if role not in ROLES:
        raise Problem(f"unknown role {short(raw.get('role'))} (expected {', '.join(ROLES)})", where)
    if "content" not in raw and not (raw.get("tool_calls") or raw.get("function_call")):
        raise Problem("missing field 'content'", f"{where}.content")
    content, calls = _content(raw.get("content"), f"{where}.content")
    for key in ("tool_calls", "function_call"):
        if raw.get(key):
            calls += tool_calls(raw[key], f"{where}.{key}")
    result: dict[str, Any] = {"role": role, "content": content}
    if calls:
        if role != "assistant":
            raise Problem("only assistant turns can call tools", where)
        result["tool_calls"] = calls
    weight = raw.get("loss_weight", raw.get("weight"))
    if weight is not None:
        result["loss_weight"] = _loss_weight(weight, f"{where}.loss_weight")
    return result


def message_list(raw: Any, where: str) -> Turns:
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        if raw is None:
            raise Problem("missing field '{field}'", where)
        raise Problem("'{field}' must be a list of messages", where)
    turns = Turns()
    for i, item in enumerate(raw):
        turns.add(message(item, f"{where}[{i}]"), f"{where}[{i}]")
    return turns


def plain(role: str, content: str) -> dict[str, Any]:
    return {"role": role, "content": content}


def _describe(role: str | None) -> str:
    return {None: "the start", "call": "a tool call"}.get(role) or f"{_a(str(role))} turn"


def check_order(turns: Turns) -> None:
    """system first (optional), then user/assistant alternating, tool results after tool calls;
    no empty user or assistant turns."""
    previous: str | None = None
    for msg, where in turns:
        role = msg["role"]
        if previous not in MAY_FOLLOW[role]:
            raise Problem(
                f"wrong role order: {_describe(role)} cannot follow {_describe(previous)}", where
            )
        if role == "assistant" and not msg["content"].strip() and not msg.get("tool_calls"):
            raise Problem("empty assistant turn", where)
        if role == "user" and not msg["content"].strip():
            raise Problem("empty user turn", where)
        previous = "call" if msg.get("tool_calls") else role


def _a(role: str) -> str:
    return f"an {role}" if role[0] in "aeio" else f"a {role}"


def check_ends_with(turns: Turns, role: str, what: str) -> None:
    if not turns:
        raise Problem(f"the {what} has no turns")
    last = turns.messages[-1]["role"]
    if last != role:
        message = f"the {what} must end with {_a(role)} turn, not {_a(last)} turn"
        raise Problem(message, turns.where[-1])
