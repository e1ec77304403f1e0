"""Paging and searching through a dataset's rows (search scans the rows in batches)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.data.rowtext import normalise, row_text
from app.data.versions import count_rows, iter_rows
from app.models import Dataset, DatasetRow

Row = tuple[int, dict[str, Any]]


def matches(row: dict[str, Any], needle: str) -> bool:
    """Case- and width-insensitive substring search over a row's text."""
    return needle in normalise(row_text(row))


def page_rows(
    session: Session, dataset: Dataset, offset: int, limit: int, search: str = ""
) -> tuple[int, list[Row]]:
    """(total rows or matches, the [offset, offset + limit) slice as (index, row) pairs)."""
    needle = normalise(search)
    if not needle:
        rows = session.execute(
            select(DatasetRow.index, DatasetRow.data)
            .where(DatasetRow.dataset_id == dataset.id)
            .order_by(DatasetRow.index)
            .offset(offset)
            .limit(limit)
        ).all()
        return count_rows(session, dataset.id), [(i, d) for i, d in rows]
    total = 0
    found: list[Row] = []
    for index, row in iter_rows(session, dataset.id):
        if matches(row, needle):
            if offset <= total < offset + limit:
                found.append((index, row))
            total += 1
    return total, found
