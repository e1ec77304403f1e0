"""Immutable dataset versions: rows streamed in batches (``app.data.rows``), lineage.

A governance operation never edits a dataset: it writes a new one whose ``parent_id`` names
the source and whose ``operation`` records what was done, with its own rows and content hash.
The new version is staged as an import is (``app.data.staging``): hidden and committed batch by
batch, so a dedup or a filter of a large dataset never holds the write lock for its length;
published by ``finish``, discarded when its ``with`` block fails.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, Self

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.data.rows import RowWriter, content_hash
from app.data.staging import StagedDataset
from app.models import Dataset, DatasetRow

BATCH_ROWS = 1000
MAX_ANCESTORS = 100


def iter_rows(
    session: Session, dataset_id: int, batch: int = BATCH_ROWS
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(index, row) in order, fetched ``batch`` at a time by keyset paging on the index."""
    last = -1
    while True:
        chunk = session.execute(
            select(DatasetRow.index, DatasetRow.data)
            .where(DatasetRow.dataset_id == dataset_id, DatasetRow.index > last)
            .order_by(DatasetRow.index)
            .limit(batch)
        ).all()
        if not chunk:
            return
        yield from ((index, data) for index, data in chunk)
        last = chunk[-1][0]
        if len(chunk) < batch:
            return


def count_rows(session: Session, dataset_id: int) -> int:
    query = select(func.count()).where(DatasetRow.dataset_id == dataset_id)
    return session.scalar(query) or 0


def rows_at(session: Session, dataset_id: int, indexes: Iterable[int]) -> dict[int, dict]:
    """The rows at ``indexes`` (fetched in chunks), keyed by index."""
    wanted = sorted(set(indexes))
    found: dict[int, dict] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        found.update(
            session.execute(
                select(DatasetRow.index, DatasetRow.data).where(
                    DatasetRow.dataset_id == dataset_id, DatasetRow.index.in_(chunk)
                )
            ).all()
        )
    return found


class VersionWriter:
    """Writes a new version's rows in committed batches as they come (``RowWriter``), hashing
    them; use it as a context manager, so a failure discards what was written."""

    def __init__(self, session: Session, parent: Dataset, name: str, op: dict[str, Any]) -> None:
        self.session = session
        dataset = Dataset(
            owner_id=parent.owner_id,
            name=name[:200],
            kind=parent.kind,
            format=parent.format,
            source_filename=parent.source_filename,
            sha256=parent.sha256,
            detection=parent.detection,
            mapping=parent.mapping,
            parent_id=parent.id,
            operation=op,
            num_rows=0,
        )
        self._staged = StagedDataset.start(session, dataset)
        self.dataset = self._staged.dataset
        self._rows = RowWriter(session, self.dataset.id, after_flush=self._staged.commit_batch)
        self._finished = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if not self._finished:  # failed, or refused after writing: nothing of it is kept
            self._staged.discard()

    def add(self, row: dict[str, Any]) -> None:
        self._rows.add(row)
        self.dataset.num_rows += 1

    def finish(self, **result: Any) -> Dataset:
        """Publish the version with ``result`` added to its operation."""
        self._rows.flush()
        self.dataset.content_hash = self._rows.hexdigest()
        self.dataset.operation = {**(self.dataset.operation or {}), **result}
        self._staged.publish()
        self._finished = True
        return self.dataset


def version_name(parent: Dataset, suffix: str) -> str:
    return f"{parent.name} · {suffix}"


def ancestors(session: Session, dataset: Dataset) -> list[Dataset]:
    """Parent, grandparent, ... (same owner only), nearest first."""
    chain: list[Dataset] = []
    current = dataset
    while current.parent_id is not None and len(chain) < MAX_ANCESTORS:
        parent = session.get(Dataset, current.parent_id)
        if parent is None or parent.owner_id != dataset.owner_id:
            break
        chain.append(parent)
        current = parent
    return chain


def children(session: Session, dataset: Dataset) -> list[Dataset]:
    return list(
        session.scalars(
            select(Dataset)
            .where(Dataset.parent_id == dataset.id, Dataset.owner_id == dataset.owner_id)
            .order_by(Dataset.id)
        )
    )


def ensure_content_hash(session: Session, dataset: Dataset) -> str:
    """The dataset's content hash, computed (streaming) and stored when it was never set."""
    if not dataset.content_hash:
        dataset.content_hash = content_hash(row for _, row in iter_rows(session, dataset.id))
        session.flush()
    return dataset.content_hash
