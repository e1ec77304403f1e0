"""REST routes for jobs (runs): create, estimate, list with filters, read, watch (events, logs,
metrics), cancel, resume, compare runs, and the presets to start from."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse

from app import broker, metric_series, routing, runs
from app.access import get_owned, owned
from app.estimate import estimate_for
from app.jobs import (
    JobAlreadyEnded,
    JobRequestError,
    ResumeRefused,
    create_job,
    request_cancel,
    resume_job,
    validate_request,
)
from app.models import Job, JobStatus
from app.presets import PRESETS
from app.queries import job_events, list_jobs
from app.serialize import job_event_json, job_json, json_bytes
from app.web.deps import CurrentUser, SessionDep, SettingsDep
from app.web.errors import invalid_fields
from app.web.events import job_event_stream, job_log_stream
from app.web.jobs.schemas import JobIn
from app.web.params import After, EventsAfter, IdsQuery, LastEventId, ObjectId, Offset, RefQuery
from app.web.rendering import json_response

router = APIRouter(prefix="/api", tags=["jobs"])


@router.get("/presets")
def get_presets(user: CurrentUser) -> list[dict]:
    """Named starting points; send a preset's `hyperparameters` as POST /api/jobs's."""
    return [
        {
            "name": p.name,
            "title": p.title,
            "description": p.description,
            "hyperparameters": p.hyperparameters(),
            "requires": list(p.requires),
        }
        for p in PRESETS
    ]


@router.post("/jobs", status_code=201)
def post_job(body: JobIn, session: SessionDep, user: CurrentUser) -> Any:
    """Create a job and queue it. Every TrainingSpec knob is documented under
    ``hyperparameters``; a refused request is a 422 naming each field (``loc``)."""
    try:
        job = create_job(session, user, **body.model_dump())
    except JobRequestError as exc:
        return invalid_fields(exc.errors)
    session.commit()
    broker.enqueue_job(job, fail_unsent=True)
    return job_json(job)


@router.post("/jobs/estimate")
def post_job_estimate(
    body: JobIn, session: SessionDep, settings: SettingsDep, user: CurrentUser
) -> Any:
    """The pre-launch estimate for the body POST /api/jobs would take (nothing is created)."""
    try:
        spec, model, dataset = validate_request(session, user, **body.model_dump())
    except JobRequestError as exc:
        return invalid_fields(exc.errors)
    return estimate_for(
        session,
        spec,
        model,
        dataset,
        settings.device_memory_bytes,
        device_class=body.device_class or None,
        stale_after_seconds=settings.worker_offline_seconds,
    )


@router.get("/jobs", response_model=list[dict[str, Any]])
def get_jobs(
    session: SessionDep,
    user: CurrentUser,
    status: str = "",
    method: str = "",
    dataset_id: RefQuery = "",
    base_model: RefQuery = "",
) -> Response:
    """Your jobs, newest first; each filter (status, method, dataset_id, base_model id or name)
    narrows the list when given."""
    try:
        filters = runs.parse_filters(status, method, dataset_id, base_model)
    except runs.FilterError as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    jobs = runs.filter_jobs(session, user, filters) if filters.active else list_jobs(session, user)
    # Encoded here, once: the shape is job_json's, and a second validating pass over every
    # job's hyperparameters would cost more than the query.
    return Response(json_bytes([job_json(j) for j in jobs]), media_type="application/json")


@router.get("/jobs/{job_id}", response_model=dict[str, Any])
def get_job(
    job_id: ObjectId, session: SessionDep, settings: SettingsDep, user: CurrentUser
) -> Response:
    """The job, its `phases` (where its wall clock went: queued, starting, imports, model
    load, data preparation, first step, training, stop check, saving, each with `started_at`
    and `seconds`), its `events` (health alarms with `details.advice` and, for loss alarms, the
    batch's dataset `details.rows`; early stopping; resumes), the `trainer_config` the run
    resolved (null until its training process starts; with the device, precision and
    attention kernel), its `launch` (processes, strategy and the generated config) and, while
    queued, `waiting_for`: what it waits for when no worker that can hold it is free."""
    job = get_owned(session, Job, job_id, user)
    waiting = None
    if job.status == JobStatus.queued:
        waiting = routing.waiting_for(session, job, user, settings.worker_offline_seconds)
    events = job_events(session, job.id)
    # Every event and the launch plan: encoded here, off the event loop (app.web.rendering).
    return json_response(
        {
            **job_json(job),
            "events": [job_event_json(e) for e in events],
            "phases": runs.phases(events),
            "trainer_config": runs.trainer_config(settings.jobs_dir, job),
            "launch": runs.launch(settings.jobs_dir, job),
            "waiting_for": waiting,
        }
    )


@router.get(
    "/jobs/{job_id}/metrics",
    response_model=list[dict[str, Any]] | dict[str, Any],
    responses={304: {"description": "unchanged since the ETag sent in If-None-Match"}},
)
def get_job_metrics(
    job_id: ObjectId,
    request: Request,
    session: SessionDep,
    user: CurrentUser,
    format: Annotated[Literal["list", "columnar", "chart"], Query()] = "list",
    max_points: Annotated[
        int, Query(ge=16, le=metric_series.MAX_CHART_POINTS)
    ] = metric_series.CHART_POINTS,
) -> Response:
    """The job's metric rows. ``format=list`` (default): one object per logged step.
    ``format=columnar``: ``{"columns": {key: [value per row]}}``, every key aligned with
    ``id``. ``format=chart``: each curve as ``[steps, values]`` downsampled to ``max_points``
    (keeping each bucket's first, last, lowest and highest point) plus ``last_id`` to stream
    after; every point stays in the other formats and the CSV. Each answer has an ETag that
    changes when a row is added; send it as ``If-None-Match`` to get a 304 instead."""
    job = get_owned(session, Job, job_id, user)
    series = metric_series.metric_series(session, job)
    # The body is the same for the same rows: a session cannot leak another user's (scoped
    # above), and the rows change only by being added, which changes the ETag.
    etag = series.format_etag(format, max_points)
    headers = {"ETag": etag, "Cache-Control": "private, no-cache", "Vary": "Authorization"}
    if etag in _if_none_match(request):
        return Response(status_code=304, headers=headers)
    return Response(
        series.encoded(format, max_points), media_type="application/json", headers=headers
    )


def _if_none_match(request: Request) -> set[str]:
    sent = request.headers.get("if-none-match", "")
    return {tag.strip().removeprefix("W/") for tag in sent.split(",") if tag.strip()}


@router.get("/jobs/{job_id}/events")
def get_job_events(
    job_id: ObjectId,
    request: Request,
    session: SessionDep,
    user: CurrentUser,
    after: After = 0,
    events_after: EventsAfter = 0,
    last_event_id: LastEventId = None,
) -> StreamingResponse:
    """Server-sent events: `metric` (each new metric row, its id as the SSE id), `alarm` (job
    events after `events_after`), `status` and `end`. A reconnecting EventSource resumes after
    its Last-Event-ID; a fresh page passes `?after=` for the last point it already drew."""
    job = get_owned(session, Job, job_id, user)
    # The stream outlives this request's session: end its transaction and give its connection
    # back now, or every open stream would hold one of the pool's connections.
    session.commit()
    session.close()
    after_metric = last_event_id if last_event_id is not None else after
    return job_event_stream(request, job.id, after_metric, events_after)


@router.post("/jobs/{job_id}/cancel")
def post_job_cancel(job_id: ObjectId, session: SessionDep, user: CurrentUser) -> dict:
    job = get_owned(session, Job, job_id, user)
    try:
        return job_json(request_cancel(session, job))
    except JobAlreadyEnded as exc:
        raise HTTPException(409, detail=str(exc)) from exc


@router.post("/jobs/{job_id}/resume")
def post_job_resume(
    job_id: ObjectId, session: SessionDep, settings: SettingsDep, user: CurrentUser
) -> dict:
    """Queue a failed or cancelled job again from its last complete checkpoint (409 if none)."""
    job = get_owned(session, Job, job_id, user)
    try:
        job = resume_job(session, job, settings.jobs_dir)
    except ResumeRefused as exc:
        raise HTTPException(409, detail=str(exc)) from exc
    broker.enqueue_job(job, fail_unsent=True)
    return job_json(job)


@router.get("/jobs/{job_id}/logs", response_class=PlainTextResponse)
def get_job_logs(
    job_id: ObjectId,
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
    tail: Annotated[int, Query(ge=1, le=runs.MAX_LOG_TAIL)] = 200,
) -> PlainTextResponse:
    """The last ``tail`` lines of the training process's output (text/plain)."""
    job = get_owned(session, Job, job_id, user)
    return PlainTextResponse(runs.log_tail(runs.log_path(settings.jobs_dir, job), tail))


@router.get("/jobs/{job_id}/logs/stream")
def get_job_log_stream(
    job_id: ObjectId,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
    offset: Offset = 0,
    last_event_id: LastEventId = None,
) -> StreamingResponse:
    """The training log as server-sent `log` events; resumes at Last-Event-ID (a byte offset)."""
    job = get_owned(session, Job, job_id, user)
    path = runs.log_path(settings.jobs_dir, job)
    session.commit()  # the stream outlives this request's session (see get_job_events)
    session.close()
    start = last_event_id if last_event_id is not None else offset
    return job_log_stream(request, job_id, path, start)


@router.get("/jobs/{job_id}/metrics.csv")
def get_job_metrics_csv(job_id: ObjectId, session: SessionDep, user: CurrentUser) -> Response:
    job = get_owned(session, Job, job_id, user)
    points = metric_series.metric_series(session, job).points
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
def get_runs_compare(session: SessionDep, user: CurrentUser, ids: IdsQuery = "") -> dict:
    """Chosen runs' curves, the hyperparameters that differ, and each run's final metrics."""
    return runs.compare_runs(session, compared_jobs(session, user, ids))
