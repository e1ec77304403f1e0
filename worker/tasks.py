"""Celery tasks. They carry only ids; the database says what to do and records what happened."""

from __future__ import annotations

import socket
from pathlib import Path

from app.db import session_scope
from app.jobs import cancel_requested, transition
from app.launch import launch_plan
from app.models import Comparison, Export, ExportStatus, Generation, Job, JobStatus, utcnow
from app.settings import get_settings
from app.spec import TrainingSpec
from app.states import ACTIVE, move, move_where
from worker.celery_app import celery
from worker.evaluation.supervise import supervise_evaluation
from worker.job_processes import MARKER_VARIABLE, marker, stop_job_processes
from worker.registration import owns_cuda, registration, set_current_job
from worker.supervise import ChildResult, run_child, run_unattended
from worker.training.distributed import write_launch


@celery.task(name="worker.tasks.run_job")
def run_job(job_id: int) -> str:
    settings = get_settings()
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None or job.status != JobStatus.queued:
            return "skipped"  # cancelled while queued, or already handled by another delivery
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
            return "skipped"

    job_dir = settings.jobs_dir / str(job_id)
    try:
        spec = TrainingSpec.from_stored(*stored_spec)
    except ValueError as exc:  # a stored spec this version refuses: the job fails, saying why
        with session_scope() as session:
            transition(
                session,
                job_id,
                to=JobStatus.failed,
                from_=[JobStatus.running],
                attempt=attempt,
                error=f"the job's stored hyperparameters are no longer valid: {exc}",
            )
        return JobStatus.failed.value
    set_current_job(job_id)
    try:
        result = _train(job_id, attempt, job_dir, spec)
    finally:
        stop_job_processes(job_id, attempt)  # no rank outlives the run (cancel, a crash)
        set_current_job(None)
    with session_scope() as session:
        if result.cancelled:
            status = JobStatus.cancelled
        else:
            status = JobStatus.failed if result.failure else JobStatus.succeeded
        error = None if result.cancelled else result.failure
        transition(
            session, job_id, to=status, from_=[JobStatus.running], attempt=attempt, error=error
        )
    return status.value


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


def _cancel_requested(job_id: int) -> bool:
    with session_scope() as session:
        return cancel_requested(session, job_id)


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
