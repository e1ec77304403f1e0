"""The Celery client and its configuration, shared by the web process and the worker.

The web process only sends task names with ids; it never imports the worker's code.
"""

from __future__ import annotations

from functools import lru_cache

from celery import Celery

from app.models import Job
from app.routing import job_queue
from app.settings import Settings, get_settings

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


def enqueue_job(job: Job) -> None:
    """Send a training job to the queue of its device class and count (``app.routing``)."""
    queue = job_queue(get_settings().queue, job)
    get_celery().send_task(RUN_JOB_TASK, args=[job.id], queue=queue)


def enqueue_export(export_id: int) -> None:
    get_celery().send_task(RUN_EXPORT_TASK, args=[export_id], queue=get_settings().queue)


def enqueue_comparison(comparison_id: int) -> None:
    get_celery().send_task(RUN_COMPARISON_TASK, args=[comparison_id], queue=get_settings().queue)


def enqueue_generation(generation_id: int) -> None:
    get_celery().send_task(RUN_GENERATION_TASK, args=[generation_id], queue=get_settings().queue)


def enqueue_evaluation(evaluation_id: int) -> None:
    get_celery().send_task(RUN_EVALUATION_TASK, args=[evaluation_id], queue=get_settings().queue)


def broker_reachable() -> bool:
    try:
        with get_celery().connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True
    except Exception:
        return False
