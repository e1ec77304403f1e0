"""Workers and the queue: which jobs wait in what order, and what each worker owns and does."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app import run_queue, worker_registry
from app.queries import queued_jobs
from app.web.deps import CurrentUser, PageUser, SessionDep, SettingsDep
from app.web.rendering import render

api = APIRouter(prefix="/api", tags=["workers"])
pages = APIRouter(include_in_schema=False)


def _workers(session, settings, user) -> list[dict]:
    return worker_registry.workers_view(session, user, settings.worker_offline_seconds)


@api.get("/queue")
def get_queue(session: SessionDep, user: CurrentUser) -> dict:
    """Queued jobs in the order workers take them; yours with their position in the queue."""
    entries = run_queue.queue_entries(session, user)
    return {"total_queued": len(queued_jobs(session)), "jobs": entries}


@api.get("/workers")
def get_workers(session: SessionDep, settings: SettingsDep, user: CurrentUser) -> list[dict]:
    """Every registered worker (online first): host, devices, device class, busy and its job.
    ``job_id`` is shown to the job's owner only; others see the worker busy."""
    return _workers(session, settings, user)


@pages.get("/workers")
def workers_page(
    request: Request, session: SessionDep, settings: SettingsDep, user: PageUser
) -> Response:
    context = {
        "user": user,
        "workers": _workers(session, settings, user),
        "queue": run_queue.queue_entries(session, user),
        "total_queued": len(queued_jobs(session)),
    }
    return render(request, "workers.html", context)


router = APIRouter()
router.include_router(api)
router.include_router(pages)
