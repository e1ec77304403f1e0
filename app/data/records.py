"""Records out of decoded text, each with the physical line it starts on: JSON Lines and text."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from app.data.errors import ImportRefused, RowError

MAX_LINE_CHARS = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Record:
    line: int
    value: Any


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# Standard JSON only: NaN and Infinity are refused (no database stores them in JSON).
DECODER = json.JSONDecoder(parse_constant=_no_constants)


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
    decode = DECODER.decode
    for number, line in lines:
        if not line or line.isspace():
            continue
        try:
            yield Record(number, decode(line))
        except json.JSONDecodeError as exc:
            yield bad_json(number, exc)
        except ValueError as exc:
            yield RowError(number, f"bad JSON: {exc}")


def iter_text_lines(lines: Iterable[tuple[int, str]]) -> Iterator[Record]:
    """Plain text: one ``{"text": ...}`` record per non-blank line (blank lines are skipped)."""
    for number, line in lines:
        text = line.removesuffix("\r")
        if text and not text.isspace():
            yield Record(number, {"text": text})
