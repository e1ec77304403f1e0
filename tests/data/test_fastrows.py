"""The import's fast paths give the general path's bytes: fast writers and orjson parsing."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from app.data.canonical import Context, canonical_json, shape
from app.data.errors import Problem
from app.data.fastrows import FAST_WRITERS
from app.data.layouts import LAYOUTS
from app.data.records import DECODER, decode_json

STRINGS = [
    "",
    " ",
    "\n\t",
    "hi",
    'q"uote\\',
    "ctrl \u0001\u007f\u2028",
    "中文 😀",
    "x" * 300,
    "\ud800 lone",
]
ODD_VALUES: list[Any] = [None, 0, 1, 1.5, True, False, [], {}, ["a"], {"a": "b"}]
ROLES = ["system", "user", "assistant", "tool", "developer", "User", None, 3]


def _value(rng: random.Random) -> Any:
    return rng.choice(STRINGS) if rng.random() < 0.8 else rng.choice(ODD_VALUES)


def _maybe(rng: random.Random, record: dict[str, Any], key: str, odds: float = 0.2) -> None:
    if rng.random() < odds:
        record[key] = _value(rng)


def _alpaca(rng: random.Random) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for key in ("instruction", "input", "output"):
        _maybe(rng, record, key, 0.9)
    for key in ("system", "history", "label", "tools", "extra"):
        _maybe(rng, record, key)
    if rng.random() < 0.05:
        record["history"] = [["q", "a"]]
    if rng.random() < 0.1:
        record["tools"] = rng.choice(["", [], None, "[]"])
    return record


def _message(rng: random.Random) -> Any:
    if rng.random() < 0.03:
        return rng.choice(ODD_VALUES)
    message: dict[str, Any] = {"role": rng.choice(ROLES)}
    _maybe(rng, message, "content", 0.95)
    for key in ("tool_calls", "function_call", "loss_weight", "weight", "name"):
        if rng.random() < 0.05:
            message[key] = rng.choice([None, 0, 1, 0.5, [], "x"])
    return message


def _messages(rng: random.Random) -> dict[str, Any]:
    roles = ["system", "user", "assistant", "user", "assistant"]
    start = rng.randint(0, 1)
    messages: list[Any] = [
        {"role": role, "content": rng.choice(STRINGS[2:-1])}
        for role in roles[start : rng.randint(start, 5)]
    ]
    for _ in range(rng.randint(0, 2)):
        position = rng.randint(0, len(messages))
        messages.insert(position, _message(rng))
    record: dict[str, Any] = {"messages": messages if rng.random() < 0.95 else _value(rng)}
    for key in ("label", "tools"):
        _maybe(rng, record, key, 0.1)
    return record


def _general(layout: str, kind: str, record: dict[str, Any]) -> str | None:
    try:
        row = shape(LAYOUTS[layout].convert(record, Context(kind=kind)), kind)
    except (Problem, TypeError, ValueError, AttributeError, KeyError):
        return None
    return canonical_json(row)


@pytest.mark.parametrize(("layout", "kind"), sorted(FAST_WRITERS))
def test_fast_writers_write_the_general_paths_bytes(layout: str, kind: str) -> None:
    rng = random.Random(f"{layout}-{kind}")
    make = _alpaca if layout == "alpaca" else _messages
    fast_count = declined_valid = 0
    for _ in range(4000):
        record = make(rng)
        fast = FAST_WRITERS[layout, kind](record)
        if fast is not None:
            fast_count += 1
            assert fast == _general(layout, kind, record), record
        elif _general(layout, kind, record) is not None:
            declined_valid += 1  # a rarer valid record: the general path converts it
    assert fast_count > 150 and declined_valid > 0


JSON_TEXTS = [
    '{"a": 1}',
    '{"a": 1e400}',
    '{"n": 123456789012345678901234567890}',
    '{"n": -9223372036854775809}',
    '{"n": 18446744073709551615, "m": -9223372036854775808}',
    '[1, 2.5, {"x": [0.1, 1e16, -0.0]}]',
    '{"s": "\\ud800"}',
    '"\\udd1e\\ud834"',
    '{"a": 1, "a": 2, "b": 3}',
    '{"a": NaN}',
    "Infinity",
    "-Infinity",
    "\ufeff{}",
    "{} x",
    "{'a': 1}",
    '{"a": 1,}',
    '{"a": "\t"}',
    '{"a": 01}',
    '{"a": "\\q"}',
    "1" * 400,
    "1." + "1" * 400,
    " {} ",
    "{}\r",
    "[" * 2000 + "]" * 2000,
    '{"a": ' + "[" * 300 + "0.5" + "]" * 300 + "}",
    "",
    "12",
    "null",
    '"\u00e9 中文 😀"',
]


def _outcome(decode, text: str) -> tuple[str, str]:
    try:
        value = decode(text)
    except (ValueError, RecursionError) as exc:
        return type(exc).__name__, str(exc)
    return "ok", repr(value) + repr(_types(value))


def _types(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _types(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_types(item) for item in value]
    return type(value).__name__


@pytest.mark.parametrize("text", JSON_TEXTS)
def test_decode_json_gives_the_standard_librarys_value_or_error(text: str) -> None:
    assert _outcome(decode_json, text) == _outcome(DECODER.decode, text)


def test_decode_json_matches_the_standard_library_on_mutated_records() -> None:
    rng = random.Random(13)
    base = json.dumps(
        {"instruction": "q \u4e2d", "n": [1, 2.5, -3e-7, 12345678901234567890123], "ok": True}
    )
    alphabet = '{}[]",:0123456789.eE+- \\tnulrfaNI\u00e9\ud800'
    for _ in range(3000):
        chars = list(base)
        for _ in range(rng.randint(1, 3)):
            chars[rng.randrange(len(chars))] = rng.choice(alphabet)
        text = "".join(chars)
        assert _outcome(decode_json, text) == _outcome(DECODER.decode, text), text


def test_quote_escapes_every_code_point_as_the_standard_library_does() -> None:
    from json.encoder import encode_basestring

    from app.data.fastrows import quote

    for code in range(0x110000):
        text = f"a{chr(code)}b{chr(code)}"
        assert quote(text) == encode_basestring(text), hex(code)
    rng = random.Random(7)
    pool = [chr(i) for i in range(0x100)] + ["中", "😀", "\ud800"] + ["a"] * 200
    for _ in range(2000):
        text = "".join(rng.choice(pool) for _ in range(rng.randint(0, 2000)))
        assert quote(text) == encode_basestring(text)
