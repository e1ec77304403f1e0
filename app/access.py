"""Owner-scoped lookups: another user's object does not exist (404), it is never 403."""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from app.models import (
    DATASET_IMPORTING,
    Checkpoint,
    Comparison,
    Dataset,
    Evaluation,
    Export,
    Generation,
    Job,
    User,
)


class NotFound(Exception):
    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found")
        self.what = what


# Every table with a non-null owner_id (chat templates may be shared: app.chat.library).
T = TypeVar("T", Dataset, Job, Export, Evaluation, Comparison, Generation)


def owned(model: type[T], user: User) -> Select[tuple[T]]:
    query = select(model).where(model.owner_id == user.id)
    if model is Dataset:  # an import in progress is not a dataset yet
        query = query.where(Dataset.status != DATASET_IMPORTING)
    return query


def get_owned(session: Session, model: type[T], object_id: int, user: User) -> T:
    obj = session.scalar(owned(model, user).where(model.id == object_id))
    if obj is None:
        raise NotFound(model.__name__.lower())
    return obj


def get_owned_checkpoint(session: Session, checkpoint_id: int, user: User) -> Checkpoint:
    checkpoint = session.scalar(
        select(Checkpoint)
        .join(Job, Checkpoint.job_id == Job.id)
        .where(Checkpoint.id == checkpoint_id, Job.owner_id == user.id)
    )
    if checkpoint is None:
        raise NotFound("checkpoint")
    return checkpoint
