"""Checkpoints and exports: a run's checkpoints, exporting one (adapter, merged model or GGUF)
from the API or the job page, the export's status and its resumable download."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from pydantic import BaseModel as Body
from pydantic import Field

from app import broker
from app.access import get_owned, get_owned_checkpoint
from app.exports import ExportRequestError, create_export, download_filename
from app.models import Export, ExportStatus, Job
from app.queries import job_checkpoints
from app.serialize import checkpoint_json, export_json
from app.web.deps import CurrentUser, PageUser, SessionDep, SettingsDep
from app.web.params import ObjectId

api = APIRouter(prefix="/api", tags=["checkpoints and exports"])
pages = APIRouter(include_in_schema=False)


class ExportIn(Body):
    kind: str = Field(default="merged", description="adapter | merged | gguf")
    quantization: str | None = Field(default=None, description="gguf only: f16 (default) | q8_0")


@api.get("/jobs/{job_id}/checkpoints")
def get_job_checkpoints(job_id: ObjectId, session: SessionDep, user: CurrentUser) -> list[dict]:
    job = get_owned(session, Job, job_id, user)
    return [checkpoint_json(c) for c in job_checkpoints(session, job.id)]


@api.post("/checkpoints/{checkpoint_id}/exports", status_code=201)
def post_export(
    checkpoint_id: ObjectId, body: ExportIn, session: SessionDep, user: CurrentUser
) -> dict:
    checkpoint = get_owned_checkpoint(session, checkpoint_id, user)
    try:
        export = create_export(session, user, checkpoint, body.kind, body.quantization)
    except ExportRequestError as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    session.commit()
    broker.enqueue_export(export.id, fail_unsent=True)
    return export_json(export)


@api.get("/exports/{export_id}")
def get_export(export_id: ObjectId, session: SessionDep, user: CurrentUser) -> dict:
    return export_json(get_owned(session, Export, export_id, user))


@api.get("/exports/{export_id}/download")
@api.head("/exports/{export_id}/download", include_in_schema=False)  # one operation id
def download_export(
    export_id: ObjectId, session: SessionDep, settings: SettingsDep, user: CurrentUser
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


@pages.post("/checkpoints/{checkpoint_id}/exports")
def export_from_page(
    request: Request,
    checkpoint_id: ObjectId,
    session: SessionDep,
    user: PageUser,
    kind: Annotated[str, Form()] = "merged",
    quantization: Annotated[str | None, Form()] = None,
) -> Response:
    checkpoint = get_owned_checkpoint(session, checkpoint_id, user)
    try:
        export = create_export(session, user, checkpoint, kind, quantization or None)
    except ExportRequestError as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    session.commit()
    broker.enqueue_export(export.id, fail_unsent=True)
    return RedirectResponse(f"/jobs/{checkpoint.job_id}", status_code=303)


router = APIRouter()
router.include_router(api)
router.include_router(pages)
