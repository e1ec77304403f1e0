"""REST routes for watching and comparing runs: logs, metrics CSV, comparison, queue, workers."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse

from app import broker, runs
from app.access import get_owned, owned
from app.models import Job
from app.queries import job_metrics, queued_jobs
from app.web.deps import CurrentUser, SessionDep, SettingsDep
from app.web.events import job_log_stream

router = APIRouter(prefix="/api", tags=["runs"])


@router.get("/jobs/{job_id}/logs", response_class=PlainTextResponse)
def get_job_logs(
    job_id: int,
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
    tail: int = Query(200, ge=1, le=runs.MAX_LOG_TAIL),
) -> PlainTextResponse:
    """The last ``tail`` lines of the training process's output (text/plain)."""
    job = get_owned(session, Job, job_id, user)
    return PlainTextResponse(runs.log_tail(runs.log_path(settings.jobs_dir, job), tail))


@router.get("/jobs/{job_id}/logs/stream")
def get_job_log_stream(
    job_id: int, request: Request, session: SessionDep, settings: SettingsDep, user: CurrentUser
) -> StreamingResponse:
    """The training log as server-sent `log` events; resumes at Last-Event-ID (a byte offset)."""
    job = get_owned(session, Job, job_id, user)
    path = runs.log_path(settings.jobs_dir, job)
    session.commit()  # the stream outlives this request's session (see get_job_events)
    session.close()
    return job_log_stream(request, job_id, path)


@router.get("/jobs/{job_id}/metrics.csv")
def get_job_metrics_csv(job_id: int, session: SessionDep, user: CurrentUser) -> Response:
    job = get_owned(session, Job, job_id, user)
    points = [runs.metric_point(m) for m in job_metrics(session, job.id)]
    return Response(
        runs.metrics_csv(points),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="job-{job.id}-metrics.csv"'},
    )


def compared_jobs(session: SessionDep, user: CurrentUser, ids: str) -> list[Job]:
    try:
        wanted = runs.parse_ids(ids)
    except runs.FilterError as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    found = {j.id: j for j in session.scalars(owned(Job, user).where(Job.id.in_(wanted)))}
    missing = [i for i in wanted if i not in found]
    if missing:
        raise HTTPException(404, detail=f"job {missing[0]} not found")
    return [found[i] for i in wanted]


@router.get("/runs/compare")
def get_runs_compare(session: SessionDep, user: CurrentUser, ids: str = "") -> dict:
    """Chosen runs' curves, the hyperparameters that differ, and each run's final metrics."""
    return runs.compare_runs(session, compared_jobs(session, user, ids))


@router.get("/queue")
def get_queue(session: SessionDep, user: CurrentUser) -> dict:
    """Queued jobs in the order workers take them; yours with their position in the queue."""
    entries = runs.queue_entries(session, user)
    return {"total_queued": len(queued_jobs(session)), "jobs": entries}


@router.get("/workers")
def get_workers(session: SessionDep, settings: SettingsDep, user: CurrentUser) -> dict:
    """Workers online. Celery's broadcast answers where the broker has one (Redis); the
    embedded filesystem broker has none, so the database's record of jobs answers instead."""
    source, found = "celery", None
    if not settings.is_embedded_broker:
        found = runs.workers_from_celery(broker.get_celery())
    if found is None:
        source = "database"
        found = runs.workers_from_database(session, settings.heartbeat_seconds * 12)
    runs.hide_others_jobs(session, user, found)
    return {"source": source, "workers": found}
