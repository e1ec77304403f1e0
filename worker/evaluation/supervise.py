"""The Celery side of an evaluation: move it queued -> running, run the evaluation process,
record how it ended. Light to import (no torch): ``worker.tasks`` registers it as a task."""

from __future__ import annotations

from sqlalchemy import update

from app.db import session_scope
from app.models import Evaluation, JobStatus, utcnow
from app.settings import get_settings
from worker.supervise import run_unattended

PROCESS_MODULE = "worker.evaluation"


def _move(evaluation_id: int, from_: JobStatus, **values: object) -> bool:
    with session_scope() as session:
        return bool(
            session.execute(
                update(Evaluation)
                .where(Evaluation.id == evaluation_id, Evaluation.status == from_)
                .values(**values)
            ).rowcount
        )


def supervise_evaluation(evaluation_id: int) -> str:
    if not _move(evaluation_id, JobStatus.queued, status=JobStatus.running):
        return "skipped"  # already handled by another delivery
    work_dir = get_settings().data_dir / "evaluations" / str(evaluation_id)
    result = run_unattended(PROCESS_MODULE, [str(evaluation_id)], work_dir, "evaluation.log")
    status = JobStatus.failed if result.failure else JobStatus.succeeded
    error = result.failure
    _move(evaluation_id, JobStatus.running, status=status, error=error, finished_at=utcnow())
    return status.value
