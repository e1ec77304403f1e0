"""Jobs whose worker died: requeued for another attempt (or failed at the cap).

Every worker reaps when it starts and then every ``REAP_EVERY_BEATS`` heartbeats, so a job
whose host went away is requeued even if no worker restarts there. A job is lost once its
heartbeat is older than ``worker_offline_seconds``. Before the job is requeued, its processes
on this host (every rank of a multi-process run) are killed and waited for; of two workers
reaping at once, the conditional transition lets one win.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from app.broker import BrokerUnavailable, enqueue_job
from app.db import session_scope
from app.jobs import LOST, reap_job, stale_jobs
from app.models import Job, JobStatus
from app.settings import get_settings
from worker.job_processes import stop_job_processes
from worker.redispatch import note_unsent

logger = logging.getLogger(__name__)

REAP_EVERY_BEATS = 6


def reap_lost_jobs() -> list[int]:
    """Requeue (or fail) every job whose worker stopped beating; returns the requeued ids."""
    stale_after = timedelta(seconds=get_settings().worker_offline_seconds)
    with session_scope() as session:
        stale = stale_jobs(session, stale_after)
    requeued = []
    for job_id, attempt in stale:
        if not stop_job_processes(job_id, attempt):  # all of its processes are gone first
            continue  # a process that will not die still holds its devices: not requeued yet
        try:  # one job's failure leaves the others reaped
            if requeue_job(job_id, attempt):
                requeued.append(job_id)
                logger.info("requeued job %s: its worker was lost", job_id)
        except Exception:
            logger.exception("could not reap job %s", job_id)
    return requeued


def requeue_job(job_id: int, attempt: int, cause: str = LOST) -> bool:
    """Queue this attempt of a running job again as a new one, resuming from its last complete
    checkpoint, and send it to its queue; at the attempt cap it fails instead, saying
    ``cause``. True when it was requeued. Its processes must be gone."""
    with session_scope() as session:
        moved = reap_job(session, job_id, attempt, cause)
    if moved.get(job_id) != JobStatus.queued:
        return False
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None:
            return False
        try:
            enqueue_job(job)
        except BrokerUnavailable:
            note_unsent()  # queued in the database: sent again once the broker answers
    return True
