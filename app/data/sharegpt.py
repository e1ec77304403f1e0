"""ShareGPT: ``conversations`` of ``{"from", "value"}`` turns, ``system``, ``tools``.

Roles come from LLaMA-Factory's tags (``human``/``gpt``/``observation``/``function_call``/
``system`` by default; a dataset_info.json entry may rename them and the role/content keys).
A ``function_call`` turn becomes an assistant turn with ``tool_calls``; an ``observation``
turn becomes a ``tool`` turn.
"""

from __future__ import annotations

from typing import Any

from app.data.canonical import Context, Parsed, chat
from app.data.errors import Problem
from app.data.messages import Turns, plain, require_str, short, tool_calls

DEFAULT_TAGS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "observation_tag": "observation",
    "function_tag": "function_call",
    "system_tag": "system",
}
# Spellings seen in the wild, accepted when they do not clash with the dataset's own tags.
LENIENT_ROLES = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "model": "assistant",
    "system": "system",
    "observation": "tool",
    "tool": "tool",
    "function_call": "call",
}
TAG_ROLES = {
    "user_tag": "user",
    "assistant_tag": "assistant",
    "observation_tag": "tool",
    "function_tag": "call",
    "system_tag": "system",
}


def role_table(tags: dict[str, str]) -> dict[str, str]:
    table = {tags[key]: role for key, role in TAG_ROLES.items()}
    return {**{k: v for k, v in LENIENT_ROLES.items() if k not in table}, **table}


def record_tags(turns: Any, tags: dict[str, str] | None) -> dict[str, str]:
    """The tags given by a mapping, else guessed per record: from/value or role/content."""
    if tags is not None:
        return tags
    first = turns[0] if isinstance(turns, list) and turns else None
    if isinstance(first, dict) and "from" not in first and "role" in first:
        return {**DEFAULT_TAGS, "role_tag": "role", "content_tag": "content"}
    return DEFAULT_TAGS


def _add_call(turns: Turns, calls: list[dict[str, Any]], where: str) -> None:
    last = turns.messages[-1] if turns.messages else None
    if last and last["role"] == "assistant" and not last.get("tool_calls"):
        last["tool_calls"] = calls  # "gpt" text then "function_call": one assistant turn
    else:
        turns.add({"role": "assistant", "content": "", "tool_calls": calls}, where)


def sharegpt_turns(
    raw: Any, where: str, tags: dict[str, str] | None, system: str | None = None
) -> Turns:
    if isinstance(raw, dict):
        raw, single = [raw], True
    else:
        single = False
    if not isinstance(raw, list):
        if raw is None:
            raise Problem("missing field '{field}'", where)
        raise Problem("'{field}' must be a list of turns", where)
    tags = record_tags(raw, tags)
    role_key, content_key = tags["role_tag"], tags["content_tag"]
    roles = role_table(tags)
    turns = Turns()
    if system:
        turns.add(plain("system", system), "system")
    for i, turn in enumerate(raw):
        here = where if single else f"{where}[{i}]"
        if not isinstance(turn, dict):
            raise Problem(f"a turn must be an object with '{role_key}' and '{content_key}'", here)
        tag = turn.get(role_key)
        role = roles.get(tag) if isinstance(tag, str) else None
        if role is None:
            expected = ", ".join(tags[key] for key in TAG_ROLES)
            raise Problem(f"unknown role {short(tag)} (expected {expected})", f"{here}.{role_key}")
        value = turn.get(content_key)
        if role == "call":
            _add_call(turns, tool_calls(value, f"{here}.{content_key}"), here)
        else:
            turns.add(plain(role, require_str(value, f"{here}.{content_key}")), here)
    return turns


def _system(record: dict[str, Any]) -> str | None:
    value = record.get("system")
    return require_str(value, "system") if value is not None else None


def sharegpt(record: dict[str, Any], ctx: Context) -> Parsed:
    turns = sharegpt_turns(record.get("conversations"), "conversations", ctx.tags, _system(record))
    return chat(turns, record)


def _answer(record: dict[str, Any], key: str, tags: dict[str, str] | None) -> Turns:
    value = record.get(key)
    if isinstance(value, str):
        turns = Turns()
        turns.add(plain("assistant", value), key)
        return turns
    return sharegpt_turns(value, key, tags)


def sharegpt_preference(record: dict[str, Any], ctx: Context) -> Parsed:
    prompt = sharegpt_turns(record.get("conversations"), "conversations", ctx.tags, _system(record))
    return Parsed(
        messages=prompt,
        chosen=_answer(record, "chosen", ctx.tags),
        rejected=_answer(record, "rejected", ctx.tags),
    )
