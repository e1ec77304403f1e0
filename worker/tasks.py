"""Celery tasks. They carry only ids; the database says what to do and records what happened."""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path

from celery.signals import worker_shutting_down
from sqlalchemy.exc import DBAPIError

from app.broker import BrokerUnavailable, enqueue_job
from app.db import session_scope
from app.jobs import PREEMPTED, cancel_requested, transition
from app.launch import launch_plan
from app.models import Comparison, Export, ExportStatus, Generation, Job, JobStatus, utcnow
from app.settings import get_settings
from app.spec import TrainingSpec
from app.states import ACTIVE, move, move_where
from worker.celery_app import celery
from worker.db_retry import is_database_outage, retry_database
from worker.evaluation.supervise import supervise_evaluation
from worker.job_processes import MARKER_VARIABLE, marker, stop_job_processes
from worker.reaper import requeue_job
from worker.redispatch import note_unsent
from worker.registration import owns_cuda, registration, set_current_job
from worker.supervise import ChildResult, run_child, run_unattended
from worker.training.chaining import discard_incomplete_checkpoints
from worker.training.distributed import write_launch

logger = logging.getLogger(__name__)


@celery.task(name="worker.tasks.run_job")
def run_job(job_id: int) -> str:
    settings = get_settings()
    if _shutting_down.is_set():
        # The last message this worker takes before it stops (often the job it just requeued):
        # another worker runs it.
        retry_database(lambda: _pass_on(job_id), f"job {job_id}: passing it on")
        return "passed on"
    taken = retry_database(lambda: _take(job_id), f"job {job_id}: taking it")
    if taken is None:
        return "skipped"  # cancelled while queued, or already handled by another delivery
    attempt, stored_spec = taken

    job_dir = settings.jobs_dir / str(job_id)
    try:
        spec = TrainingSpec.from_stored(*stored_spec)
    except ValueError as exc:  # a stored spec this version refuses: the job fails, saying why
        error = f"the job's stored hyperparameters are no longer valid: {exc}"
        _finish(job_id, attempt, JobStatus.failed, error)
        return JobStatus.failed.value
    set_current_job(job_id)
    try:
        result = _train(job_id, attempt, job_dir, spec)
    finally:
        stop_job_processes(job_id, attempt)  # no rank outlives the run (cancel, a crash)
        set_current_job(None)
    if result.failure or result.cancelled:
        discard_incomplete_checkpoints(job_dir / "output")
    if _preempted(result):
        requeued = retry_database(
            lambda: requeue_job(job_id, attempt, PREEMPTED), f"job {job_id}: requeue"
        )
        logger.info("job %s stopped for the worker's shutdown; requeued: %s", job_id, requeued)
        return JobStatus.queued.value
    if result.cancelled:
        status = JobStatus.cancelled
    else:
        status = JobStatus.failed if result.failure else JobStatus.succeeded
    _finish(job_id, attempt, status, None if result.cancelled else result.failure)
    return status.value


def _take(job_id: int) -> tuple[int, tuple[dict, int]] | None:
    """Move the job from queued to running; its attempt and stored spec, or None if it was not
    queued."""
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None or job.status != JobStatus.queued:
            return None
        attempt, stored_spec = job.attempt, (job.spec, job.spec_version)
        if not transition(
            session,
            job_id,
            to=JobStatus.running,
            from_=[JobStatus.queued],
            attempt=attempt,
            worker=registration.name or socket.gethostname(),
            heartbeat_at=utcnow(),
        ):
            return None
    return attempt, stored_spec


def _pass_on(job_id: int) -> None:
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is not None and job.status == JobStatus.queued:
            try:
                enqueue_job(job)
            except BrokerUnavailable:
                note_unsent()  # another worker's reap sends it again


def _finish(job_id: int, attempt: int, status: JobStatus, error: str | None) -> None:
    """Record how the attempt ended; the outcome is known, so a database outage is waited out
    (a job left running would be retrained by the reaper)."""

    def record() -> None:
        with session_scope() as session:
            transition(
                session, job_id, to=status, from_=[JobStatus.running], attempt=attempt, error=error
            )

    retry_database(record, f"job {job_id}: recording it {status.value}")


_shutting_down = threading.Event()


@worker_shutting_down.connect
def _preempt_training(**_: object) -> None:
    """A warm shutdown (SIGTERM) waits for the running task: rather than hold it for the rest
    of the run, the training process checkpoints and stops, and the job is requeued."""
    _shutting_down.set()


def _preempted(result: ChildResult) -> bool:
    """The run ended unfinished while this worker shuts down: the training process saved and
    exited with EXIT_PREEMPTED, or the SIGTERM reached it before it listened (its imports), or
    torchrun, which exits with its own code, stopped its ranks. It resumes on another worker
    from its last complete checkpoint (a real failure fails again there; attempts are capped)."""
    return _shutting_down.is_set() and result.returncode != 0 and not result.cancelled


def _train(job_id: int, attempt: int, job_dir: Path, spec: TrainingSpec) -> ChildResult:
    """The training process, or with ``num_devices`` > 1 torchrun and one process per device,
    by the launch plan kept in the job's folder."""
    settings = get_settings()
    plan = launch_plan(spec, backend="nccl" if owns_cuda() else "gloo")
    write_launch(job_dir, plan)
    launcher = plan["config"]["launcher"] if plan["config"] else []
    return run_child(
        "worker.training.run",
        [str(job_id)],
        log_path=job_dir / "train.log",
        error_path=job_dir / "error.txt",
        heartbeat=lambda: _heartbeat(job_id, attempt),
        should_cancel=lambda: _cancel_requested(job_id),
        heartbeat_seconds=settings.heartbeat_seconds,
        cancel_grace_seconds=settings.cancel_grace_seconds,
        launcher=launcher,
        extra_env={MARKER_VARIABLE: marker(job_id, attempt)},
        should_preempt=_shutting_down.is_set,
    )


@celery.task(name="worker.tasks.run_export")
def run_export(export_id: int) -> str:
    with session_scope() as session:
        if not move(session, Export, export_id, to=ExportStatus.running, from_=ExportStatus.queued):
            return "skipped"
    export_dir = get_settings().exports_dir / str(export_id)
    result = run_unattended("worker.export", [str(export_id)], export_dir, "export.log")
    status = ExportStatus.failed if result.failure else ExportStatus.succeeded
    with session_scope() as session:
        move(
            session, Export, export_id, to=status, from_=ExportStatus.running, error=result.failure
        )
    return "done"


def _heartbeat(job_id: int, attempt: int) -> None:
    """The job's heartbeat; a beat the database misses is skipped (the reaper waits for twelve)
    rather than ending the supervision of a run that trains on."""
    try:
        with session_scope() as session:
            move(
                session,
                Job,
                job_id,
                to=None,
                from_=JobStatus.running,
                attempt=attempt,
                heartbeat_at=utcnow(),
            )
    except DBAPIError as exc:
        if not is_database_outage(exc):
            raise
        logger.warning("job %s: heartbeat skipped, the database is unreachable", job_id)


def _cancel_requested(job_id: int) -> bool:
    """Whether the job's cancel flag is set; not while the database is unreachable."""
    try:
        with session_scope() as session:
            return cancel_requested(session, job_id)
    except DBAPIError as exc:
        if not is_database_outage(exc):
            raise
        return False


def _run_generation_process(kind: str, ident: int) -> str:
    """Supervise ``worker.comparisons`` for a comparison or a playground turn; the process writes
    each generation's progress, this records how the whole thing ended."""
    work_dir = get_settings().data_dir / "generations" / f"{kind}-{ident}"
    result = run_unattended("worker.comparisons", [kind, str(ident)], work_dir, "generate.log")
    failed, error = result.failure is not None, result.failure
    with session_scope() as session:
        if kind == "comparison":
            status = JobStatus.failed if failed else JobStatus.succeeded
            move(session, Comparison, ident, to=status, from_=JobStatus.running, error=error)
        # a generation the process never finished (it crashed first) fails with the reason
        mine = Generation.comparison_id == ident if kind == "comparison" else Generation.id == ident
        move_where(
            session,
            Generation,
            mine,
            to=JobStatus.failed,
            from_=ACTIVE,
            error=error or "not generated",
        )
    return "failed" if failed else "succeeded"


@celery.task(name="worker.tasks.run_comparison")
def run_comparison(comparison_id: int) -> str:
    with session_scope() as session:
        moved = move(
            session, Comparison, comparison_id, to=JobStatus.running, from_=JobStatus.queued
        )
    return _run_generation_process("comparison", comparison_id) if moved else "skipped"


@celery.task(name="worker.tasks.run_generation")
def run_generation(generation_id: int) -> str:
    """A playground turn: taken once (queued -> running here), like a comparison."""
    with session_scope() as session:
        moved = move(
            session, Generation, generation_id, to=JobStatus.running, from_=JobStatus.queued
        )
    return _run_generation_process("generation", generation_id) if moved else "skipped"


@celery.task(name="worker.tasks.run_evaluation")
def run_evaluation(evaluation_id: int) -> str:
    return supervise_evaluation(evaluation_id)
