"""An import's dataset while its rows are written, committed in short batches.

No import holds the database for its whole length: SQLite has one write lock for the whole
file, and an import of millions of rows in one transaction made every other user's writes
fail with "database is locked" (issue 14). So the dataset is created ``DATASET_IMPORTING``
(hidden from every listing and lookup: ``app.access.owned``) and committed at once; each batch
of rows is committed as it is written, with a heartbeat; at the end the import either
publishes it (``DATASET_READY``) or discards it, rows first, in batches. An import whose
process died leaves a dataset whose heartbeat goes stale; ``remove_abandoned_imports``
deletes those.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from app.models import DATASET_IMPORTING, DATASET_READY, Dataset, utcnow

HEARTBEAT_SECONDS = 15.0  # at least this often, even while reading records that store nothing
ABANDONED_AFTER = timedelta(minutes=10)  # a heartbeat this old: the importing process is gone
DELETE_BATCH_ROWS = 20_000


class StagedDataset:
    """The session's dataset during its import; ``commit_batch`` is the row writer's
    ``after_flush``."""

    def __init__(self, session: Session, dataset: Dataset) -> None:
        self.session = session
        self.dataset = dataset
        self.dataset_id = dataset.id
        self._last_beat = time.monotonic()

    @classmethod
    def start(cls, session: Session, dataset: Dataset) -> StagedDataset:
        dataset.status = DATASET_IMPORTING
        dataset.heartbeat_at = utcnow()
        session.add(dataset)
        session.commit()
        return cls(session, dataset)

    def commit_batch(self) -> None:
        self.dataset.heartbeat_at = utcnow()
        self.session.commit()
        self._last_beat = time.monotonic()

    def keep_alive(self) -> None:
        if time.monotonic() - self._last_beat >= HEARTBEAT_SECONDS:
            self.commit_batch()

    def publish(self) -> None:
        self.dataset.status = DATASET_READY
        self.dataset.heartbeat_at = None
        self.session.commit()

    def discard(self) -> None:
        self.session.rollback()
        discard_dataset(self.session, self.dataset_id)


def discard_dataset(session: Session, dataset_id: int) -> None:
    """Delete a dataset's rows in short committed batches, then the dataset."""
    batch = text(
        "DELETE FROM dataset_rows WHERE id IN "
        "(SELECT id FROM dataset_rows WHERE dataset_id = :id LIMIT :n)"
    )
    while session.execute(batch, {"id": dataset_id, "n": DELETE_BATCH_ROWS}).rowcount:
        session.commit()
    session.execute(delete(Dataset).where(Dataset.id == dataset_id))
    session.commit()


def remove_abandoned_imports(session: Session, now: datetime | None = None) -> int:
    """Discard the imports whose heartbeat stopped ``ABANDONED_AFTER`` ago; how many."""
    cutoff = (now or utcnow()) - ABANDONED_AFTER
    abandoned = session.scalars(
        select(Dataset.id).where(
            Dataset.status == DATASET_IMPORTING,
            (Dataset.heartbeat_at < cutoff) | Dataset.heartbeat_at.is_(None),
        )
    ).all()
    for dataset_id in abandoned:
        discard_dataset(session, dataset_id)
    return len(abandoned)
