"""Workers and the queue: which jobs wait in what order, and which workers are online."""

from __future__ import annotations

from fastapi import APIRouter

from app import broker, run_queue
from app.queries import queued_jobs
from app.web.deps import CurrentUser, SessionDep, SettingsDep

router = APIRouter(prefix="/api", tags=["workers"])


@router.get("/queue")
def get_queue(session: SessionDep, user: CurrentUser) -> dict:
    """Queued jobs in the order workers take them; yours with their position in the queue."""
    entries = run_queue.queue_entries(session, user)
    return {"total_queued": len(queued_jobs(session)), "jobs": entries}


@router.get("/workers")
def get_workers(session: SessionDep, settings: SettingsDep, user: CurrentUser) -> dict:
    """Workers online. Celery's broadcast answers where the broker has one (Redis); the
    embedded filesystem broker has none, so the database's record of jobs answers instead."""
    source, found = "celery", None
    if not settings.is_embedded_broker:
        found = run_queue.workers_from_celery(broker.get_celery())
    if found is None:
        source = "database"
        found = run_queue.workers_from_database(session, settings.heartbeat_seconds * 12)
    run_queue.hide_others_jobs(session, user, found)
    return {"source": source, "workers": found}
