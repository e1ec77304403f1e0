"""Stream the records of a JSON array (``[{...}, {...}]``) without loading the whole file.

An incremental splitter: a regular expression finds strings and brackets, so the end of each
top-level element is found without parsing it; the element is then parsed on its own. Memory
holds one element (plus a decoded chunk) at a time. Physical line numbers are kept by counting
newlines as the scan moves on. A record that is bad JSON but balanced is one RowError and the
scan continues; a broken structure (unclosed array, missing comma between records) stops it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator

from app.data.errors import ImportRefused, RowError
from app.data.records import NESTED_TOO_DEEPLY, Record, bad_json, decode_json

# A complete JSON string (unrolled loop: fast on long strings; JSON strings never hold a raw
# newline), or a lone quote (a string cut off by the end of the buffer, or unterminated), or a
# bracket.
TOKEN = re.compile(r'"[^"\\\n]*(?:\\[^\n][^"\\\n]*)*"|"|[{}\[\]]')
SCALAR_END = re.compile(r"[,\]\s]")
WHITESPACE = re.compile(r"[ \t\r\n]*")
MAX_RECORD_CHARS = 64 * 1024 * 1024


class _Scanner:
    def __init__(self, chunks: Iterable[str]) -> None:
        self._chunks = iter(chunks)
        self.buf = ""
        self.pos = 0
        self.line = 1
        self.eof = False

    def more(self, keep_from: int) -> bool:
        """Read the next chunk, dropping text before ``keep_from``; returns False at the end."""
        if self.eof:
            return False
        chunk = next(self._chunks, None)
        if chunk is None:
            self.eof = True
            return False
        if keep_from > 0:
            self.buf = self.buf[keep_from:]
            self.pos -= keep_from
        self.buf += chunk
        return True

    def advance(self, to: int) -> None:
        self.line += self.buf.count("\n", self.pos, to)
        self.pos = to

    def peek(self) -> str | None:
        """The next non-blank character (not consumed), or None at the end of the text."""
        while True:
            end = WHITESPACE.match(self.buf, self.pos).end()  # type: ignore[union-attr]
            self.advance(end)
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more(self.pos):
                return None

    def take_value(self) -> str:
        """The text of the element starting at ``pos``; moves past it."""
        end = self._container_end() if self.buf[self.pos] in "{[" else self._scalar_end()
        text = self.buf[self.pos : end]
        self.advance(end)
        return text

    def _container_end(self) -> int:
        depth = 0
        scan = self.pos
        while True:
            for match in TOKEN.finditer(self.buf, scan):
                token = match.group()
                if token == '"':
                    newline = self.buf.find("\n", match.end())
                    if newline < 0:  # cut off by the end of the buffer: read on
                        scan = match.start()
                        break
                    # Unterminated on its line: parsing the record reports it; strings never
                    # span lines, so the scan goes on from the next line.
                    scan = newline
                    break
                if token[0] == '"':
                    continue
                depth += 1 if token in "{[" else -1
                if depth == 0:
                    return match.end()
            else:
                scan = len(self.buf)
            if scan < len(self.buf) and self.buf[scan] == "\n":
                continue
            dropped = self.pos
            self._need_more(scan)
            scan -= dropped  # `more` dropped the text before `pos`

    def _scalar_end(self) -> int:
        start = self.pos
        while True:
            if self.buf[start] == '"':
                match = TOKEN.match(self.buf, start)
                if match and match.group() != '"':
                    return match.end()
            else:
                match = SCALAR_END.search(self.buf, start)
                if match:
                    return match.start()
            self._need_more(len(self.buf))
            start = self.pos

    def _need_more(self, scanned_to: int) -> None:
        if scanned_to - self.pos > MAX_RECORD_CHARS:
            raise ImportRefused(
                f"the record starting at line {self.line} is larger than "
                f"{MAX_RECORD_CHARS // (1024 * 1024)} MiB, or the JSON is broken from there on",
                [RowError(self.line, "record too large, or a quote or bracket is not closed")],
            )
        if not self.more(self.pos):
            raise ImportRefused(
                "the JSON array ends in the middle of a record",
                [RowError(self.line, "this record is not closed before the end of the file")],
            )


def iter_json_array(chunks: Iterable[str]) -> Iterator[Record | RowError]:
    scanner = _Scanner(chunks)
    if scanner.peek() != "[":
        raise ImportRefused(
            "expected a JSON array of records", [RowError(scanner.line, "expected '['")]
        )
    scanner.advance(scanner.pos + 1)
    found = scanner.peek()
    while found != "]":
        if found is None:
            raise _unclosed(scanner.line)
        line = scanner.line  # peek() stopped at the first character of the record
        yield _parse(scanner.take_value(), line)
        found = scanner.peek()
        if found == ",":
            scanner.advance(scanner.pos + 1)
            found = scanner.peek()
            if found == "]":
                yield RowError(scanner.line, "bad JSON: trailing comma before ']'")
        elif found != "]":
            raise _missing_comma(scanner.line, found)
    scanner.advance(scanner.pos + 1)
    if scanner.peek() is not None:
        raise ImportRefused(
            "unexpected content after the JSON array",
            [RowError(scanner.line, "expected the end of the file after ']'")],
        )


def _parse(text: str, line: int) -> Record | RowError:
    try:
        return Record(line, decode_json(text))
    except json.JSONDecodeError as exc:
        return bad_json(line + exc.lineno - 1, exc, column=exc.lineno > 1)
    except ValueError as exc:
        return RowError(line, f"bad JSON: {exc}")
    except RecursionError:
        return RowError(line, NESTED_TOO_DEEPLY)


def _unclosed(line: int) -> ImportRefused:
    return ImportRefused("the JSON array is not closed", [RowError(line, "expected ']'")])


def _missing_comma(line: int, found: str | None) -> ImportRefused:
    if found is None:
        return _unclosed(line)
    return ImportRefused(
        "the JSON array is broken: records must be separated by commas",
        [RowError(line, f"bad JSON: expected ',' or ']' between records, found {found!r}")],
    )
