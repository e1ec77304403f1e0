"""Pages for watching and comparing runs: the runs list with filters, the live job page, and
the comparison view. Included before the spine's page router, so these ``GET /jobs`` and
``GET /jobs/{id}`` are the ones served."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from app import runs
from app.access import get_owned, owned
from app.chaining import chaining_context
from app.chat.lock import template_summary
from app.exports import GGUF_QUANTIZATIONS, export_options
from app.models import Job
from app.queries import checkpoint_exports, job_checkpoints, job_events, job_metrics, list_jobs
from app.web.dataset_pages import ROWS_PER_PAGE
from app.web.deps import PageUser, SessionDep, SettingsDep
from app.web.rendering import render
from app.web.serialize import job_event_json, job_json

router = APIRouter(include_in_schema=False)

LOG_TAIL_LINES = 200


@router.get("/jobs")
def jobs_page(
    request: Request,
    session: SessionDep,
    user: PageUser,
    status: str = "",
    method: str = "",
    dataset_id: str = "",
    base_model: str = "",
) -> Response:
    error = None
    try:
        filters = runs.parse_filters(status, method, dataset_id, base_model)
    except runs.FilterError as exc:
        filters, error = runs.RunFilters(), str(exc)
    jobs = runs.filter_jobs(session, user, filters) if filters.active else list_jobs(session, user)
    context = {
        "user": user,
        "jobs": jobs,
        "filters": filters.as_dict(),
        "choices": runs.filter_choices(session, user),
        "filter_error": error,
        "selectable": True,
    }
    return render(request, "jobs.html", context, block="runs")


@router.get("/jobs/{job_id:int}")
def job_page(
    request: Request, job_id: int, session: SessionDep, settings: SettingsDep, user: PageUser
) -> Response:
    job = get_owned(session, Job, job_id, user)
    checkpoints = job_checkpoints(session, job.id)
    exports = checkpoint_exports(session, [c.id for c in checkpoints], user)
    points = [runs.metric_point(m) for m in job_metrics(session, job.id)]
    progress = runs.progress(job, points)
    log_text, log_offset = runs.log_tail_at(runs.log_path(settings.jobs_dir, job), LOG_TAIL_LINES)
    events = job_events(session, job.id)
    context = {
        "user": user,
        "job": job,
        "job_data": job_json(job),
        "export_options": export_options(job),
        "gguf_quantizations": GGUF_QUANTIZATIONS,
        "metrics": points,
        "loss_points": sum(1 for p in points if p.get("loss") is not None),
        "curves": runs.curve_keys(points),
        "progress": progress,
        "eta": runs.format_duration(progress["eta_seconds"]),
        "timeline": runs.timeline(job, events),
        "job_events": [job_event_json(e) for e in events],
        "rows_per_page": ROWS_PER_PAGE,  # a row's page on its dataset's page
        "trainer_config": runs.trainer_config(settings.jobs_dir, job),
        "queue_position": runs.queue_position(session, job),
        "log_tail": runs.screen_text(log_text),
        "log_offset": log_offset,
        "checkpoints": checkpoints,
        "exports_by_checkpoint": {
            c.id: [e for e in exports if e.checkpoint_id == c.id] for c in checkpoints
        },
        **chaining_context(session, job, user, settings.jobs_dir),
        "template_info": template_summary(session, job),
    }
    return render(request, "job.html", context, block="summary")


@router.get("/runs/compare")
def compare_page(
    request: Request,
    session: SessionDep,
    user: PageUser,
    ids: Annotated[list[str] | None, Query()] = None,
) -> Response:
    """Overlay chosen runs' curves; ``ids`` may repeat (checkboxes) or be comma-separated."""
    raw = ",".join(ids or [])
    error = None
    chosen: list[Job] = []
    if raw:
        try:
            wanted = runs.parse_ids(raw)
        except runs.FilterError as exc:
            error = str(exc)
        else:
            found = {j.id: j for j in session.scalars(owned(Job, user).where(Job.id.in_(wanted)))}
            chosen = [found[i] for i in wanted if i in found]
            if len(chosen) < len(wanted):
                error = "some of those runs do not exist"
    comparison = runs.compare_runs(session, chosen) if chosen else None
    context = {
        "user": user,
        "jobs": list_jobs(session, user),
        "chosen": [j.id for j in chosen],
        "comparison": comparison,
        "error": error,
    }
    return render(request, "compare.html", context)
