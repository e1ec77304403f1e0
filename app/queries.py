"""Read queries shared by the API and the pages (always owner-scoped by the caller)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.access import owned
from app.models import (
    Checkpoint,
    Dataset,
    DatasetRow,
    Export,
    Job,
    JobEvent,
    JobStatus,
    Metric,
    User,
)


def list_datasets(session: Session, user: User) -> Sequence[Dataset]:
    return session.scalars(owned(Dataset, user).order_by(Dataset.id.desc())).all()


def list_jobs(session: Session, user: User) -> Sequence[Job]:
    return session.scalars(owned(Job, user).order_by(Job.id.desc())).all()


def dataset_rows(
    session: Session, dataset: Dataset, offset: int, limit: int
) -> tuple[int, list[dict]]:
    total = session.scalar(select(func.count()).where(DatasetRow.dataset_id == dataset.id)) or 0
    rows = session.scalars(
        select(DatasetRow.data)
        .where(DatasetRow.dataset_id == dataset.id)
        .order_by(DatasetRow.index)
        .offset(offset)
        .limit(limit)
    ).all()
    return total, list(rows)


def job_metrics(session: Session, job_id: int, after_id: int = 0) -> Sequence[Metric]:
    return session.scalars(
        select(Metric).where(Metric.job_id == job_id, Metric.id > after_id).order_by(Metric.id)
    ).all()


def job_events(session: Session, job_id: int, after_id: int = 0) -> Sequence[JobEvent]:
    """The job's events (health alarms, early stopping, resumes) in the order they happened."""
    return session.scalars(
        select(JobEvent)
        .where(JobEvent.job_id == job_id, JobEvent.id > after_id)
        .order_by(JobEvent.id)
    ).all()


def job_checkpoints(session: Session, job_id: int) -> Sequence[Checkpoint]:
    return session.scalars(
        select(Checkpoint)
        .where(Checkpoint.job_id == job_id)
        .order_by(Checkpoint.step, Checkpoint.id)
    ).all()


def checkpoint_exports(session: Session, checkpoint_ids: list[int], user: User) -> Sequence[Export]:
    return session.scalars(
        owned(Export, user).where(Export.checkpoint_id.in_(checkpoint_ids)).order_by(Export.id)
    ).all()


def queued_jobs(session: Session) -> Sequence[Job]:
    """Every queued job (all owners) in the order the workers take them: oldest first.

    Callers show other owners' jobs only as a count ahead of the caller's own."""
    return session.scalars(
        select(Job).where(Job.status == JobStatus.queued).order_by(Job.created_at, Job.id)
    ).all()
