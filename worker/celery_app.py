"""The worker's Celery app: the shared configuration plus this package's tasks."""

import logging

from celery.signals import worker_ready

from app.broker import make_celery
from app.settings import get_settings

logger = logging.getLogger(__name__)
celery = make_celery(get_settings())
celery.conf.include = ["worker.tasks"]

import worker.registration  # noqa: E402, F401  (registers the worker's devices and heartbeat)


@worker_ready.connect
def _requeue_jobs_of_lost_workers(**_: object) -> None:
    """A job left `running` by a worker that died gets another attempt (or fails at the cap)."""
    from datetime import timedelta

    from app.broker import enqueue_job
    from app.db import session_scope
    from app.jobs import reap_job, stale_jobs
    from app.models import Job, JobStatus
    from worker.job_processes import stop_job_processes

    settings = get_settings()
    with session_scope() as session:
        stale = stale_jobs(session, timedelta(seconds=settings.heartbeat_seconds * 12))
    for job_id, attempt in stale:
        # Its processes (every one of a multi-process run) are gone before it is requeued.
        stop_job_processes(job_id, attempt)
        try:
            with session_scope() as session:  # one job's failure leaves the others reaped
                moved = reap_job(session, job_id, attempt)
        except Exception:
            logger.exception("could not reap job %s", job_id)
            continue
        if moved.get(job_id) == JobStatus.queued:
            with session_scope() as session:
                job = session.get(Job, job_id)
                if job is not None:
                    enqueue_job(job)
