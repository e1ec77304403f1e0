"""Read records out of an uploaded file, keeping the physical line number of each."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from app.data.errors import RowError


@dataclass(frozen=True)
class Record:
    line: int
    value: Any


def _decode(raw: bytes) -> str:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RowError(1, f"file is not UTF-8 (bad byte at offset {exc.start})") from exc


def iter_records(raw: bytes, filename: str) -> Iterator[Record | RowError]:
    """Records of a .json array or .jsonl file; a record that cannot be parsed is a RowError."""
    text = _decode(raw)
    if filename.lower().endswith(".jsonl"):
        yield from _iter_jsonl(text)
    else:
        yield from _iter_json_array(text)


def _iter_jsonl(text: str) -> Iterator[Record | RowError]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield Record(number, json.loads(line))
        except json.JSONDecodeError as exc:
            yield RowError(number, f"bad JSON: {exc.msg} (column {exc.colno})")


def _iter_json_array(text: str) -> Iterator[Record | RowError]:
    decoder = json.JSONDecoder()
    pos = _skip_ws(text, 0)
    if pos >= len(text) or text[pos] != "[":
        if pos < len(text) and text[pos] == "{":
            # A single-line-per-record file saved as .json: read it as JSON Lines.
            yield from _iter_jsonl(text)
            return
        yield RowError(_line_of(text, pos), "expected a JSON array of records")
        return
    pos = _skip_ws(text, pos + 1)
    while pos < len(text) and text[pos] != "]":
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            yield RowError(exc.lineno, f"bad JSON: {exc.msg} (column {exc.colno})")
            return
        yield Record(_line_of(text, pos), value)
        pos = _skip_ws(text, end)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
        elif pos < len(text) and text[pos] != "]":
            yield RowError(_line_of(text, pos), "expected ',' or ']' between records")
            return
    if pos >= len(text):
        yield RowError(_line_of(text, pos), "the JSON array is not closed")


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1
