"""Records out of decoded text, each with the physical line it starts on: JSON Lines and text."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import orjson

from app.data.errors import ImportRefused, RowError

MAX_LINE_CHARS = 64 * 1024 * 1024
# The standard library's decoder recurses once a level: past about 1,000 it gives up.
NESTED_TOO_DEEPLY = "bad JSON: arrays or objects nested too deeply (about 1,000 levels at most)"


class Record(NamedTuple):  # a tuple: the cheapest object to make a million of
    line: int
    value: Any


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# Standard JSON only: NaN and Infinity are refused (no database stores them in JSON).
DECODER = json.JSONDecoder(parse_constant=_no_constants)


def decode_json(text: str) -> Any:
    """``DECODER.decode(text)``, the same value or the same error, mostly parsed by orjson.

    orjson refuses what the standard library reads as inf (``1e400``) and lone surrogates:
    those, and every error, are left to the standard library, for its value or its message.
    It also reads integers beyond 64 bits as floats, so a value holding any float is read
    again by the standard library (floats are rare in datasets).
    """
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return DECODER.decode(text)
    try:
        exact = not _holds_float(value)
    except RecursionError:  # nested deeper than Python recurses: the standard library decides
        exact = False
    return value if exact else DECODER.decode(text)


def _holds_float(value: Any) -> bool:
    kind = type(value)
    if kind is dict:
        return _has_float_in(value.values())
    return kind is float or (kind is list and _has_float_in(value))


def _has_float_in(values: Iterable[Any]) -> bool:
    for value in values:
        kind = type(value)
        if kind is str:
            continue
        if kind is float:
            return True
        if kind is dict:
            if _has_float_in(value.values()):
                return True
        elif kind is list and _has_float_in(value):
            return True
    return False


def bad_json(line: int, exc: json.JSONDecodeError, column: bool = True) -> RowError:
    where = f" (column {exc.colno})" if column else ""
    return RowError(line, f"bad JSON: {exc.msg}{where}")


def iter_lines(chunks: Iterable[str]) -> Iterator[tuple[int, str]]:
    """(line number, line without its newline) for every physical line, split on '\\n' only."""
    number = 0
    carry = ""
    for chunk in chunks:
        parts = (carry + chunk).split("\n") if carry else chunk.split("\n")
        carry = parts.pop()
        if len(carry) > MAX_LINE_CHARS:
            raise ImportRefused(
                f"line {number + len(parts) + 1} is longer than "
                f"{MAX_LINE_CHARS // (1024 * 1024)} MiB characters"
            )
        for part in parts:
            number += 1
            yield number, part
    if carry:
        yield number + 1, carry


def iter_jsonl(lines: Iterable[tuple[int, str]]) -> Iterator[Record | RowError]:
    decode = decode_json
    for number, line in lines:
        if not line or line.isspace():
            continue
        try:
            yield Record(number, decode(line))
        except json.JSONDecodeError as exc:
            yield bad_json(number, exc)
        except ValueError as exc:
            yield RowError(number, f"bad JSON: {exc}")
        except RecursionError:
            yield RowError(number, NESTED_TOO_DEEPLY)


def iter_text_lines(lines: Iterable[tuple[int, str]]) -> Iterator[Record]:
    """Plain text: one ``{"text": ...}`` record per non-blank line (blank lines are skipped)."""
    for number, line in lines:
        text = line.removesuffix("\r")
        if text and not text.isspace():
            yield Record(number, {"text": text})
