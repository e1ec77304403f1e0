"""The REST API under /api. Every route needs a bearer token or a browser session."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel as Body
from pydantic import Field

from app import broker, runs
from app.access import get_owned, get_owned_checkpoint
from app.base_models import ModelDirError, register_model
from app.data.errors import ImportRefused
from app.estimate import estimate_for
from app.exports import ExportRequestError, create_export, download_filename
from app.jobs import (
    JobAlreadyEnded,
    JobRequestError,
    ResumeRefused,
    create_job,
    request_cancel,
    resume_job,
    validate_request,
)
from app.models import BaseModel, Dataset, Export, ExportStatus, Job
from app.presets import PRESETS
from app.queries import job_checkpoints, job_events, job_metrics, list_datasets, list_jobs
from app.web.deps import AdminUser, CurrentUser, SessionDep, SettingsDep
from app.web.events import job_event_stream
from app.web.serialize import (
    checkpoint_json,
    dataset_json,
    export_json,
    job_event_json,
    job_json,
    metric_json,
    model_json,
)
from app.web.uploads import import_upload

router = APIRouter(prefix="/api", tags=["api"])


class ModelIn(Body):
    name: str = Field(min_length=1, max_length=200)
    path: str = Field(min_length=1)


class JobIn(Body):
    name: str | None = Field(default=None, max_length=200)
    method: str = "sft"
    adapter: str = "lora"
    base_model: int | str | None = Field(
        default=None, description="required unless parent_checkpoint_id gives it"
    )
    dataset_id: int
    eval_dataset_id: int | None = None
    parent_checkpoint_id: int | None = Field(
        default=None, description="start from this checkpoint of one of your jobs (chaining)"
    )
    chat_template_id: int | None = Field(
        default=None,
        description="train with this library template (default: the parent run's, else the "
        "base model's own); the job pins its current version",
    )
    hyperparameters: dict[str, Any] = Field(default_factory=dict)


class ExportIn(Body):
    kind: str = Field(default="merged", description="adapter | merged | gguf")
    quantization: str | None = Field(default=None, description="gguf only: f16 (default) | q8_0")


@router.get("/openapi.json", include_in_schema=False)
def get_openapi_schema(request: Request, user: CurrentUser) -> dict:
    return request.app.openapi()


@router.get("/presets")
def get_presets(user: CurrentUser) -> list[dict]:
    """Named starting points; send a preset's `hyperparameters` as POST /api/jobs's."""
    return [
        {
            "name": p.name,
            "title": p.title,
            "description": p.description,
            "hyperparameters": p.spec().model_dump(),
        }
        for p in PRESETS
    ]


@router.get("/models")
def get_models(session: SessionDep, user: CurrentUser) -> list[dict]:
    return [model_json(m) for m in session.query(BaseModel).order_by(BaseModel.id)]


@router.post("/models", status_code=201)
def post_model(body: ModelIn, session: SessionDep, user: AdminUser) -> dict:
    try:
        return model_json(register_model(session, body.name, Path(body.path)))
    except ModelDirError as exc:
        raise HTTPException(422, detail=str(exc)) from exc


@router.post("/datasets", status_code=201)
def post_dataset(
    file: UploadFile,
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
    name: Annotated[str | None, Form()] = None,
    kind: Annotated[str | None, Form()] = None,
    format: Annotated[str | None, Form()] = None,
    skip_invalid: Annotated[bool, Form()] = False,
    encoding: Annotated[str | None, Form()] = None,
    mapping: Annotated[str | None, Form()] = None,
) -> Any:
    try:
        result = import_upload(
            session,
            user,
            settings,
            file,
            name=name,
            kind=kind,
            format=format,
            skip_invalid=skip_invalid,
            encoding=encoding,
            mapping=mapping,
        )
    except ImportRefused as exc:
        session.rollback()
        return JSONResponse(
            {"detail": exc.detail, "errors": [e.as_dict() for e in exc.errors]}, status_code=422
        )
    session.commit()  # before the 201, so the new id is readable as soon as the client has it
    return {
        **dataset_json(result.dataset),
        "skipped": result.skipped,
        "skipped_errors": [e.as_dict() for e in result.skipped_errors],
    }


@router.get("/datasets")
def get_datasets(session: SessionDep, user: CurrentUser) -> list[dict]:
    return [dataset_json(d) for d in list_datasets(session, user)]


@router.get("/datasets/{dataset_id}")
def get_dataset(dataset_id: int, session: SessionDep, user: CurrentUser) -> dict:
    return dataset_json(get_owned(session, Dataset, dataset_id, user))


@router.post("/jobs", status_code=201)
def post_job(body: JobIn, session: SessionDep, user: CurrentUser) -> Any:
    try:
        job = create_job(session, user, **body.model_dump())
    except JobRequestError as exc:
        return JSONResponse({"detail": exc.errors}, status_code=422)
    session.commit()
    broker.enqueue_job(job.id)
    return job_json(job)


@router.post("/jobs/estimate")
def post_job_estimate(
    body: JobIn, session: SessionDep, settings: SettingsDep, user: CurrentUser
) -> Any:
    """The pre-launch estimate for the body POST /api/jobs would take (nothing is created)."""
    try:
        spec, model, dataset = validate_request(session, user, **body.model_dump())
    except JobRequestError as exc:
        return JSONResponse({"detail": exc.errors}, status_code=422)
    return estimate_for(session, spec, model, dataset, settings.device_memory_bytes)


@router.get("/jobs")
def get_jobs(
    session: SessionDep,
    user: CurrentUser,
    status: str = "",
    method: str = "",
    dataset_id: str = "",
    base_model: str = "",
) -> list[dict]:
    """Your jobs, newest first; each filter (status, method, dataset_id, base_model id or name)
    narrows the list when given."""
    from app.runs import FilterError, filter_jobs, parse_filters

    try:
        filters = parse_filters(status, method, dataset_id, base_model)
    except FilterError as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    jobs = filter_jobs(session, user, filters) if filters.active else list_jobs(session, user)
    return [job_json(j) for j in jobs]


@router.get("/jobs/{job_id}")
def get_job(job_id: int, session: SessionDep, settings: SettingsDep, user: CurrentUser) -> dict:
    """The job, its `events` (health alarms with `details.advice` and, for loss alarms, the
    batch's dataset `details.rows`; early stopping; resumes) and the `trainer_config` the run
    resolved (null until its training process starts)."""
    job = get_owned(session, Job, job_id, user)
    return {
        **job_json(job),
        "events": [job_event_json(e) for e in job_events(session, job.id)],
        "trainer_config": runs.trainer_config(settings.jobs_dir, job),
    }


@router.get("/jobs/{job_id}/metrics")
def get_job_metrics(job_id: int, session: SessionDep, user: CurrentUser) -> list[dict]:
    job = get_owned(session, Job, job_id, user)
    return [metric_json(m) for m in job_metrics(session, job.id)]


@router.get("/jobs/{job_id}/events")
def get_job_events(
    job_id: int, request: Request, session: SessionDep, user: CurrentUser
) -> StreamingResponse:
    job = get_owned(session, Job, job_id, user)
    # The stream outlives this request's session: end its transaction and give its connection
    # back now, or every open stream would hold one of the pool's connections.
    session.commit()
    session.close()
    return job_event_stream(request, job.id)


@router.post("/jobs/{job_id}/cancel")
def post_job_cancel(job_id: int, session: SessionDep, user: CurrentUser) -> dict:
    job = get_owned(session, Job, job_id, user)
    try:
        return job_json(request_cancel(session, job))
    except JobAlreadyEnded as exc:
        raise HTTPException(409, detail=str(exc)) from exc


@router.post("/jobs/{job_id}/resume")
def post_job_resume(
    job_id: int, session: SessionDep, settings: SettingsDep, user: CurrentUser
) -> dict:
    """Queue a failed or cancelled job again from its last complete checkpoint (409 if none)."""
    job = get_owned(session, Job, job_id, user)
    try:
        job = resume_job(session, job, settings.jobs_dir)
    except ResumeRefused as exc:
        raise HTTPException(409, detail=str(exc)) from exc
    broker.enqueue_job(job.id)
    return job_json(job)


@router.get("/jobs/{job_id}/checkpoints")
def get_job_checkpoints(job_id: int, session: SessionDep, user: CurrentUser) -> list[dict]:
    job = get_owned(session, Job, job_id, user)
    return [checkpoint_json(c) for c in job_checkpoints(session, job.id)]


@router.post("/checkpoints/{checkpoint_id}/exports", status_code=201)
def post_export(checkpoint_id: int, body: ExportIn, session: SessionDep, user: CurrentUser) -> dict:
    checkpoint = get_owned_checkpoint(session, checkpoint_id, user)
    try:
        export = create_export(session, user, checkpoint, body.kind, body.quantization)
    except ExportRequestError as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    session.commit()
    broker.enqueue_export(export.id)
    return export_json(export)


@router.get("/exports/{export_id}")
def get_export(export_id: int, session: SessionDep, user: CurrentUser) -> dict:
    return export_json(get_owned(session, Export, export_id, user))


@router.api_route("/exports/{export_id}/download", methods=["GET", "HEAD"])
def download_export(
    export_id: int, session: SessionDep, settings: SettingsDep, user: CurrentUser
) -> FileResponse:
    """The archive, streamed from disk; `Range` resumes a download (206, or 416 past the end)
    and the ETag is the archive's sha256 (also for `If-Range`)."""
    export = get_owned(session, Export, export_id, user)
    if export.status != ExportStatus.succeeded or not export.path:
        raise HTTPException(409, detail=f"export {export.id} is {export.status.value}, not ready")
    return FileResponse(
        settings.exports_dir / export.path,
        media_type="application/x-tar",
        filename=download_filename(export),
        headers={"ETag": f'"{export.sha256}"'},
    )
