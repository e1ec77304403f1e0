"""The worker's Celery app: the shared configuration plus this package's tasks."""

import contextlib

from celery.signals import worker_ready

from app.broker import make_celery
from app.settings import get_settings

celery = make_celery(get_settings())
celery.conf.include = ["worker.tasks"]

import worker.registration  # noqa: E402, F401  (registers the worker's devices and heartbeat)


@worker_ready.connect
def _requeue_jobs_of_lost_workers(**_: object) -> None:
    """A job left `running` by a worker that died gets another attempt (or fails at the cap),
    and every queued item is sent again: its message may have gone with a Redis restart or a
    worker's failed send (``worker.redispatch``; a duplicate is skipped)."""
    from app.broker import BROKER_ERRORS, broker_lost_messages
    from worker.reaper import reap_lost_jobs
    from worker.redispatch import redispatch_queued

    reap_lost_jobs()
    # Sets the mark the next reaps look for; with Redis down they find it missing once it is back.
    with contextlib.suppress(BROKER_ERRORS):
        broker_lost_messages()
    redispatch_queued()
