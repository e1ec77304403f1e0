"""The worker's Celery app: the shared configuration plus this package's tasks."""

from celery.signals import worker_ready

from app.broker import make_celery
from app.settings import get_settings

celery = make_celery(get_settings())
celery.conf.include = ["worker.tasks"]

import worker.registration  # noqa: E402, F401  (registers the worker's devices and heartbeat)


@worker_ready.connect
def _requeue_jobs_of_lost_workers(**_: object) -> None:
    """A job left `running` by a worker that died gets another attempt (or fails at the cap),
    and, when Redis came back without what it held, every queued item is sent again
    (``worker.redispatch``; a duplicate is skipped)."""
    from worker.reaper import reap_lost_jobs
    from worker.redispatch import redispatch_if_lost

    reap_lost_jobs()
    redispatch_if_lost()  # also sets the mark the next reaps look for
