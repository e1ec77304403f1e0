"""The Celery side of an evaluation: move it queued -> running, run the evaluation process,
record how it ended. Light to import (no torch): ``worker.tasks`` registers it as a task."""

from __future__ import annotations

from app.db import session_scope
from app.models import Evaluation, JobStatus
from app.settings import get_settings
from app.states import move
from worker.supervise import run_unattended

PROCESS_MODULE = "worker.evaluation"


def _move(evaluation_id: int, to: JobStatus, from_: JobStatus, **values: object) -> bool:
    with session_scope() as session:
        return move(session, Evaluation, evaluation_id, to=to, from_=from_, **values)


def supervise_evaluation(evaluation_id: int) -> str:
    if not _move(evaluation_id, JobStatus.running, JobStatus.queued):
        return "skipped"  # already handled by another delivery
    work_dir = get_settings().data_dir / "evaluations" / str(evaluation_id)
    result = run_unattended(PROCESS_MODULE, [str(evaluation_id)], work_dir, "evaluation.log")
    status = JobStatus.failed if result.failure else JobStatus.succeeded
    _move(evaluation_id, status, JobStatus.running, error=result.failure)
    return status.value
