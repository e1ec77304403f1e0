"""The Celery client and its configuration, shared by the web process and the worker.

The web process only sends task names with ids; it never imports the worker's code.

Every item is committed as queued before its task is sent (the worker must find it), so a
broker that does not answer leaves a committed item with no message. A sender in a request
passes ``fail_unsent=True``: the item then ends failed, saying nothing ran, and
``BrokerUnavailable`` becomes a 503 with Retry-After (``app.web.errors``). The worker's own
sends (a requeue, a pass-on) leave the item queued for ``worker.redispatch`` instead. That
module also re-sends everything queued when Redis comes back empty (``broker_lost_messages``).
"""

from __future__ import annotations

from functools import lru_cache

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from app.db import session_scope
from app.models import Comparison, Evaluation, Export, ExportStatus, Generation, Job, JobStatus
from app.routing import job_queue
from app.settings import Settings, get_settings
from app.states import WorkItem, move, move_where

RUN_JOB_TASK = "worker.tasks.run_job"
RUN_EXPORT_TASK = "worker.tasks.run_export"
RUN_EVALUATION_TASK = "worker.tasks.run_evaluation"
RUN_COMPARISON_TASK = "worker.tasks.run_comparison"
RUN_GENERATION_TASK = "worker.tasks.run_generation"


def make_celery(settings: Settings) -> Celery:
    settings.ensure_dirs()
    celery = Celery("ftstudio", broker=settings.celery_broker_url)
    celery.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.queue,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        broker_transport_options=_transport_options(settings),
    )
    return celery


def _transport_options(settings: Settings) -> dict[str, object]:
    if not settings.is_embedded_broker:
        # Redis: re-deliver a task whose worker vanished after this long (longest expected run).
        return {"visibility_timeout": 7 * 24 * 3600}
    inbox = str(settings.broker_dir / "in")
    return {
        "data_folder_in": inbox,
        "data_folder_out": inbox,
        "processed_folder": str(settings.broker_dir / "processed"),
        "control_folder": str(settings.broker_dir / "control"),
        "store_processed": False,
    }


@lru_cache
def get_celery() -> Celery:
    return make_celery(get_settings())


RETRY_AFTER_SECONDS = 10
# How hard one send tries before the broker counts as down: about 1.5 s in all, so a request
# is answered quickly (Celery's default retries would hold it for longer, then fail anyway).
SEND_RETRY_POLICY = {"max_retries": 3, "interval_start": 0, "interval_step": 0.5}
BROKER_ERRORS = (OperationalError, redis.exceptions.ConnectionError, OSError)
# A key the worker keeps in Redis beside the messages: gone means Redis lost what it held.
BROKER_MARK_KEY = "ftstudio:broker-mark"
UNSENT_ERROR = "not queued: the task queue (Redis) did not answer, so nothing ran; submit again"

_TASKS: dict[WorkItem, str] = {
    Job: RUN_JOB_TASK,
    Export: RUN_EXPORT_TASK,
    Evaluation: RUN_EVALUATION_TASK,
    Comparison: RUN_COMPARISON_TASK,
    Generation: RUN_GENERATION_TASK,
}


class BrokerUnavailable(Exception):
    """The task queue did not take a message."""


def enqueue_job(job: Job, *, fail_unsent: bool = False) -> None:
    """Send a training job to the queue of its device class and count (``app.routing``)."""
    queue = job_queue(get_settings().queue, job)
    _send(Job, job.id, queue, fail_unsent)


def enqueue_export(export_id: int, *, fail_unsent: bool = False) -> None:
    _send(Export, export_id, get_settings().queue, fail_unsent)


def enqueue_comparison(comparison_id: int, *, fail_unsent: bool = False) -> None:
    _send(Comparison, comparison_id, get_settings().queue, fail_unsent)


def enqueue_generation(generation_id: int, *, fail_unsent: bool = False) -> None:
    _send(Generation, generation_id, get_settings().queue, fail_unsent)


def enqueue_evaluation(evaluation_id: int, *, fail_unsent: bool = False) -> None:
    _send(Evaluation, evaluation_id, get_settings().queue, fail_unsent)


def _send(model: WorkItem, ident: int, queue: str, fail_unsent: bool) -> None:
    """Send ``model`` ``ident``'s task; BrokerUnavailable when the broker does not take it
    (the item failed first, saying so, when ``fail_unsent``)."""
    try:
        get_celery().send_task(
            _TASKS[model], args=[ident], queue=queue, retry_policy=SEND_RETRY_POLICY
        )
    except BROKER_ERRORS as exc:
        if fail_unsent:
            _fail_unsent(model, ident)
        raise BrokerUnavailable(f"the task queue did not answer: {exc}") from exc


def _fail_unsent(model: WorkItem, ident: int) -> None:
    queued = ExportStatus.queued if model is Export else JobStatus.queued
    failed = ExportStatus.failed if model is Export else JobStatus.failed
    with session_scope() as session:
        move(session, model, ident, to=failed, from_=queued, error=UNSENT_ERROR)
        if model is Comparison:  # its answers were to be generated by the same task
            mine = Generation.comparison_id == ident
            move_where(session, Generation, mine, to=failed, from_=queued, error=UNSENT_ERROR)


def broker_lost_messages() -> bool:
    """Whether Redis came back without what it held (restarted without persistence, flushed):
    True once per loss, as it sets the mark again. Never for the embedded broker, whose
    messages are files."""
    settings = get_settings()
    if settings.is_embedded_broker:
        return False
    client = redis.Redis.from_url(settings.broker_url, socket_timeout=5)
    try:
        return bool(client.set(BROKER_MARK_KEY, "1", nx=True))
    finally:
        client.close()


def broker_reachable() -> bool:
    try:
        with get_celery().connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True
    except Exception:
        return False
