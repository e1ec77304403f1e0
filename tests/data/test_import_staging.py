"""An import's dataset, or a governance version, while it is written (app.data.staging):
hidden until published, its batches committed as they go, and, when its process died, found by
its stale heartbeat and removed with its rows."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.access import NotFound, get_owned
from app.data.governance import FilterSpec, GovernanceError, filter_rows, split_by_column
from app.data.rows import RowWriter
from app.data.staging import (
    ABANDONED_AFTER,
    StagedDataset,
    discard_dataset,
    remove_abandoned_imports,
)
from app.data.versions import VersionWriter
from app.db import get_sessionmaker, session_scope
from app.models import DATASET_IMPORTING, DATASET_READY, Dataset, DatasetRow, User, utcnow
from app.queries import list_datasets
from tests.conftest import make_account


def _staged(owner_id: int, rows: int) -> int:
    """A dataset mid-import, with ``rows`` rows committed batch by batch; its id."""
    session = get_sessionmaker()()
    try:
        staged = StagedDataset.start(
            session, Dataset(owner_id=owner_id, name="half", kind="text", format="text")
        )
        writer = RowWriter(
            session, staged.dataset_id, batch_rows=10, after_flush=staged.commit_batch
        )
        writer.add_all({"text": f"row {i}"} for i in range(rows))
        return staged.dataset_id
    finally:
        session.close()  # no publish, no discard: as if the process had died here


def _rows(session, dataset_id: int) -> int:
    query = select(func.count()).where(DatasetRow.dataset_id == dataset_id)
    return session.scalar(query)


@pytest.fixture
def owner() -> Iterator[User]:
    """A user whose half-written imports are removed after the test."""
    account = make_account("stager")
    with session_scope() as session:
        user = session.get(User, account.user_id)
    yield user
    with session_scope() as session:
        for dataset_id in session.scalars(
            select(Dataset.id).where(
                Dataset.owner_id == user.id, Dataset.status == DATASET_IMPORTING
            )
        ):
            discard_dataset(session, dataset_id)


def test_an_import_in_progress_is_hidden_but_its_batches_are_committed(owner: User) -> None:
    dataset_id = _staged(owner.id, rows=25)
    with session_scope() as session:
        assert _rows(session, dataset_id) == 20  # two full batches; the third was never flushed
        assert dataset_id not in [d.id for d in list_datasets(session, owner)]
        with pytest.raises(NotFound):
            get_owned(session, Dataset, dataset_id, owner)
        remove_abandoned_imports(session)  # its heartbeat is fresh: still importing
        assert session.get(Dataset, dataset_id) is not None


def test_an_abandoned_import_is_removed_with_its_rows(owner: User) -> None:
    abandoned = _staged(owner.id, rows=30)
    live = _staged(owner.id, rows=10)
    with session_scope() as session:
        session.get(Dataset, abandoned).heartbeat_at = utcnow() - ABANDONED_AFTER - timedelta(1)
    with session_scope() as session:
        assert remove_abandoned_imports(session) == 1
        assert session.get(Dataset, abandoned) is None
        assert _rows(session, abandoned) == 0
        assert _rows(session, live) == 10
        assert remove_abandoned_imports(session, now=utcnow() + ABANDONED_AFTER * 2) >= 1
        assert _rows(session, live) == 0


def test_a_published_import_is_listed_and_never_removed(owner: User) -> None:
    session = get_sessionmaker()()
    try:
        staged = StagedDataset.start(
            session, Dataset(owner_id=owner.id, name="whole", kind="text", format="text")
        )
        staged.publish()
    finally:
        session.close()
    with session_scope() as session:
        dataset = get_owned(session, Dataset, staged.dataset_id, owner)
        assert dataset.status == DATASET_READY and dataset.heartbeat_at is None
        remove_abandoned_imports(session, now=utcnow() + ABANDONED_AFTER * 2)
        assert session.get(Dataset, staged.dataset_id) is not None


def _text_dataset(session, owner: User, rows: int) -> Dataset:
    dataset = Dataset(owner_id=owner.id, name="source", kind="text", format="text")
    session.add(dataset)
    session.flush()
    writer = RowWriter(session, dataset.id)
    writer.add_all({"text": f"row {i:04d}"} for i in range(rows))
    writer.flush()
    dataset.num_rows = rows
    session.commit()
    return dataset


def test_a_version_is_staged_and_a_refused_one_leaves_nothing(owner: User) -> None:
    """Governance versions are written as imports are: committed in batches while hidden."""
    session = get_sessionmaker()()
    try:
        source = _text_dataset(session, owner, rows=30)
        before = session.scalar(select(func.count()).select_from(Dataset))
        with VersionWriter(session, source, "half", {"op": "test"}) as writer:
            writer._rows.batch_rows = 10
            for i in range(25):
                writer.add({"text": f"kept {i}"})
            other = get_sessionmaker()()  # another request, meanwhile
            try:
                assert _rows(other, writer.dataset.id) == 20  # committed batch by batch
                with pytest.raises(NotFound):
                    get_owned(other, Dataset, writer.dataset.id, owner)
            finally:
                other.close()
            published = writer.finish()
        assert get_owned(session, Dataset, published.id, owner).num_rows == 25
        assert _rows(session, published.id) == 25

        with pytest.raises(GovernanceError):  # refused after writing every row
            filter_rows(session, source, FilterSpec(search="nowhere"), None)
        assert session.scalar(select(func.count()).select_from(Dataset)) == before + 1
        with pytest.raises(GovernanceError):  # a split that leaves no eval rows
            split_by_column(session, source, "text", ["no such value"])
        assert session.scalar(select(func.count()).select_from(Dataset)) == before + 1
    finally:
        session.close()
