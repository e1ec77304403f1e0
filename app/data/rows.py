"""Dataset rows, written one way and hashed one way.

``RowWriter`` is the only writer of ``DatasetRow``: an import, a governance version (dedup,
split, filter, decontamination) and the arena's preference dataset all stream their rows
through it, in batches. ``row_bytes`` defines the content hash: the sha256 of every row's
canonical JSON (sorted keys, UTF-8 kept) plus a newline, in row order; a dataset's download
is exactly those bytes, so its sha256 is its content hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from app.data.canonical import canonical_json
from app.models import DatasetRow

BATCH_ROWS = 2000


def row_bytes(row: dict[str, Any]) -> bytes:
    """One row as the content hash (and a download) sees it."""
    return _line(canonical_json(row))


def _line(text: str) -> bytes:
    return (text + "\n").encode()


class RowHasher:
    """The content hash, fed one row at a time in order."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()

    def update(self, row: dict[str, Any]) -> None:
        self.update_json(canonical_json(row))

    def update_json(self, text: str) -> None:
        """``update`` for a row already written as its ``canonical_json``."""
        self._sha.update(_line(text))

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def content_hash(rows: Iterable[dict[str, Any]]) -> str:
    hasher = RowHasher()
    for row in rows:
        hasher.update(row)
    return hasher.hexdigest()


class RowWriter:
    """Appends rows to one dataset in batches, numbering and hashing them in order.

    Each row is serialised once, as its canonical JSON: the same text feeds the content hash
    and is stored as is, through a plain executemany. ``flush`` before reading the rows back.
    """

    def __init__(self, session: Session, dataset_id: int, batch_rows: int = BATCH_ROWS) -> None:
        self.session = session
        self.dataset_id = dataset_id
        self.count = 0
        self.batch_rows = batch_rows
        self._hasher = RowHasher()
        self._batch: list[tuple[int, int, str]] = []
        self._sql = _insert_sql(session.get_bind().dialect)

    def add(self, row: dict[str, Any]) -> None:
        text = canonical_json(row)
        self._hasher.update_json(text)
        self._batch.append((self.dataset_id, self.count, text))
        self.count += 1
        if len(self._batch) >= self.batch_rows:
            self.flush()

    def add_all(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self.add(row)

    def flush(self) -> None:
        if self._batch:
            self.session.connection().exec_driver_sql(self._sql, self._batch)
            self._batch = []

    def hexdigest(self) -> str:
        return self._hasher.hexdigest()


def _insert_sql(dialect: Dialect) -> str:
    quote = dialect.identifier_preparer.quote
    table = dialect.identifier_preparer.format_table(DatasetRow.__table__)
    columns = ", ".join(quote(name) for name in ("dataset_id", "index", "data"))
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    data = f"{mark}::json" if dialect.name == "postgresql" else mark
    return f"INSERT INTO {table} ({columns}) VALUES ({mark}, {mark}, {data})"
