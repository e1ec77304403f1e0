"""Tables: CSV/TSV (header row, physical line numbers) and Parquet (row numbers, in batches)."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from app.data.errors import ImportRefused, RowError, UploadTooLarge
from app.data.records import MAX_LINE_CHARS, Record
from app.data.uploads import UploadLimits, size_text, too_many_records

PARQUET_BATCH_ROWS = 1024

csv.field_size_limit(MAX_LINE_CHARS)


def clean_column(name: object) -> str:
    return str(name).replace("\ufeff", "").strip()


def iter_csv(lines: Iterable[tuple[int, str]], delimiter: str = ",") -> Iterator[Record | RowError]:
    """One record per CSV row (a quoted field may span lines); ``line`` is where the row starts."""
    physical = {"line": 0}

    def feed() -> Iterator[str]:
        for number, line in lines:
            physical["line"] = number
            yield line + "\n"

    reader = csv.reader(feed(), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    last_line = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            yield RowError(last_line + 1, f"bad CSV: {exc}")
            last_line = physical["line"]
            continue
        start, last_line = last_line + 1, physical["line"]
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue
        if header is None:
            header = _header(cells, start)
            continue
        if len(cells) != len(header):
            yield RowError(start, f"expected {len(header)} columns, found {len(cells)}")
            continue
        yield Record(start, dict(zip(header, cells, strict=True)))


def _header(cells: list[str], line: int) -> list[str]:
    header = [clean_column(c) for c in cells]
    duplicates = sorted({c for c in header if header.count(c) > 1})
    if duplicates:
        raise ImportRefused(
            "the CSV header names a column twice",
            [RowError(line, f"duplicate column name(s): {', '.join(duplicates)}")],
        )
    return header


def iter_parquet(path: Path, limits: UploadLimits | None = None) -> Iterator[Record]:
    """One record per row; ``line`` is the 1-based row number."""
    import pyarrow as pa  # imported here: only Parquet uploads pay for it
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise ImportRefused(f"not a readable Parquet file: {exc}") from exc
    _check_parquet_size(table.metadata, limits or UploadLimits())
    row = 0
    try:
        for batch in table.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            names = [clean_column(n) for n in batch.schema.names]
            for values in zip(*(column.to_pylist() for column in batch.columns), strict=True):
                row += 1
                yield Record(row, dict(zip(names, values, strict=True)))
    except (pa.ArrowException, OSError) as exc:
        raise ImportRefused(f"the Parquet file is damaged after row {row}: {exc}") from exc


def _check_parquet_size(metadata: Any, limits: UploadLimits) -> None:
    """Refuse from the footer, before a row is read: too many rows, or column data that
    decompresses past the content limit."""
    if metadata.num_rows > limits.max_rows:
        raise too_many_records(limits.max_rows + 1, limits.max_rows)
    groups = (metadata.row_group(i) for i in range(metadata.num_row_groups))
    if sum(group.total_byte_size for group in groups) > limits.max_inflated_bytes:
        raise UploadTooLarge(
            f"the Parquet data decompresses to more than {size_text(limits.max_inflated_bytes)}"
            ", the limit for an upload's content (FTSTUDIO_MAX_INFLATED_BYTES); nothing was stored"
        )
