"""Browser pages (Jinja2 + HTMX). The same domain functions as the API, session-authenticated."""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request, UploadFile
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select

from app import broker
from app.access import NotFound, get_owned, get_owned_checkpoint
from app.auth import authenticate, user_for_token
from app.chaining import next_stage_values
from app.chat import library as chat_library
from app.data.errors import ImportRefused
from app.estimate import estimate_for
from app.exports import ExportRequestError, create_export
from app.jobs import (
    JobAlreadyEnded,
    JobRequest,
    JobRequestError,
    ResumeRefused,
    create_job,
    request_cancel,
    resume_job,
    validate_request,
)
from app.models import BaseModel, Job
from app.presets import PRESETS, preset_values
from app.queries import (
    list_datasets,
    list_jobs,
)
from app.web.deps import PageUser, SessionDep, SettingsDep
from app.web.forms import (
    adapter_choices,
    applicable_fields,
    estimate_display,
    hyperparameters_from_form,
    job_form_groups,
    method_choices,
    spec_defaults,
)
from app.web.rendering import render
from app.web.uploads import import_upload

router = APIRouter(include_in_schema=False)


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


@router.get("/login")
def login_page(request: Request, next: str = "/") -> Response:
    return render(request, "login.html", {"next": next})


@router.post("/login")
def login(
    request: Request,
    session: SessionDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    user = (
        user_for_token(session, token.strip())
        if token.strip()
        else authenticate(session, username, password)
    )
    if user is None:
        context = {"next": next, "username": username, "error": "Wrong name, password or token."}
        return render(request, "login.html", context, status_code=401)
    request.session.clear()
    request.session["user_id"] = user.id
    return _redirect(next if next.startswith("/") and not next.startswith("//") else "/")


@router.post("/logout")
def logout(request: Request, user: PageUser) -> Response:
    request.session.clear()
    return _redirect("/login")


@router.get("/")
def home(request: Request, session: SessionDep, user: PageUser) -> Response:
    context = {
        "user": user,
        "datasets": list_datasets(session, user)[:5],
        "jobs": list_jobs(session, user)[:10],
    }
    return render(request, "home.html", context)


@router.get("/datasets")
def datasets_page(request: Request, session: SessionDep, user: PageUser) -> Response:
    return render(
        request, "datasets.html", {"user": user, "datasets": list_datasets(session, user)}
    )


@router.post("/datasets")
def upload_dataset(
    request: Request,
    file: UploadFile,
    session: SessionDep,
    settings: SettingsDep,
    user: PageUser,
    name: Annotated[str, Form()] = "",
    kind: Annotated[str, Form()] = "",
    format: Annotated[str, Form()] = "",
    skip_invalid: Annotated[bool, Form()] = False,
    encoding: Annotated[str, Form()] = "",
    mapping: Annotated[str, Form()] = "",
) -> Response:
    form = {
        "name": name,
        "kind": kind,
        "format": format,
        "skip_invalid": skip_invalid,
        "encoding": encoding,
        "mapping": mapping,
    }
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
        context = {
            "user": user,
            "datasets": list_datasets(session, user),
            "refused": exc,
            **form,  # what was sent, so the form shows it again
        }
        return render(request, "datasets.html", context, status_code=422)
    session.commit()
    return _redirect(f"/datasets/{result.dataset.id}")


def _job_form_context(
    session: SessionDep, user: PageUser, values: dict[str, Any], errors: dict[str, str]
) -> dict:
    values = {**spec_defaults(), **values}
    return {
        "user": user,
        "parent": _parent_checkpoint(session, user, values.get("parent_checkpoint_id")),
        "groups": job_form_groups(),
        "adapters": adapter_choices(),
        "methods": method_choices(),
        "applicable": applicable_fields(values),
        "values": values,
        "errors": errors,
        "models": session.scalars(select(BaseModel).order_by(BaseModel.id)).all(),
        "datasets": list_datasets(session, user),
        "presets": PRESETS,
        "chat_templates": chat_library.visible(session, user),
    }


def _parent_checkpoint(session: SessionDep, user: PageUser, value: Any) -> Any:
    """The checkpoint a chained run starts from, for the form's note (None if unknown)."""
    if not str(value or "").isdigit():
        return None
    with contextlib.suppress(NotFound):
        return get_owned_checkpoint(session, int(value), user)
    return None


async def _job_form_values(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v for k, v in form.items() if k != "csrf_token" and isinstance(v, str)}


def _job_request(values: dict[str, str]) -> JobRequest:
    """The keyword arguments of create_job / validate_request from the form's text."""
    dataset = values.get("dataset_id") or "0"
    parent = values.get("parent_checkpoint_id") or ""
    return {
        "base_model": values.get("base_model", ""),
        "dataset_id": int(dataset) if dataset.isdigit() else 0,
        "method": values.get("method") or "sft",
        "adapter": values.get("adapter") or "lora",
        "hyperparameters": hyperparameters_from_form(values),
        "parent_checkpoint_id": int(parent) if parent.isdigit() else None,
        "chat_template_id": _int_or_none(values.get("chat_template_id")),
    }


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


@router.get("/jobs/new")
def new_job_page(
    request: Request,
    session: SessionDep,
    user: PageUser,
    dataset_id: int | None = None,
    preset: str | None = None,
    parent_checkpoint_id: int | None = None,
    method: str | None = None,
) -> Response:
    """The job form; with ``parent_checkpoint_id`` (a run's "next stage"), pre-filled to start
    from that checkpoint."""
    values: dict[str, Any] = preset_values(preset)
    if parent_checkpoint_id:
        wanted = method or values.get("method")
        values |= next_stage_values(session, user, parent_checkpoint_id, wanted)
    if dataset_id:
        values["dataset_id"] = dataset_id
    context = _job_form_context(session, user, values, {}) | {"preset": preset}
    return render(request, "job_new.html", context)


@router.post("/jobs/estimate")
async def job_estimate_fragment(
    request: Request, session: SessionDep, settings: SettingsDep, user: PageUser
) -> Response:
    """The form's live estimate panel (an HTMX fragment)."""
    values = await _job_form_values(request)
    context: dict[str, Any] = {"estimate": None, "problems": []}
    try:
        spec, model, dataset = validate_request(session, user, **_job_request(values))
    except JobRequestError as exc:
        context["problems"] = [(str(e["loc"][-1]), e["msg"]) for e in exc.errors]
    else:
        result = estimate_for(session, spec, model, dataset, settings.device_memory_bytes)
        context["estimate"] = result
        context["display"] = estimate_display(result)
    return render(request, "_job_estimate.html", context)


@router.post("/jobs")
async def create_job_from_form(request: Request, session: SessionDep, user: PageUser) -> Response:
    values = await _job_form_values(request)
    try:
        job = create_job(session, user, name=values.get("name") or None, **_job_request(values))
    except JobRequestError as exc:
        errors = {str(e["loc"][-1]): e["msg"] for e in exc.errors}
        context = _job_form_context(session, user, values, errors)
        return render(request, "job_new.html", context, status_code=422)
    session.commit()
    broker.enqueue_job(job.id)
    return _redirect(f"/jobs/{job.id}")


@router.post("/jobs/{job_id}/cancel")
def cancel_job_from_page(
    request: Request, job_id: int, session: SessionDep, user: PageUser
) -> Response:
    job = get_owned(session, Job, job_id, user)
    with contextlib.suppress(JobAlreadyEnded):  # the page shows the final status either way
        request_cancel(session, job)
    return _redirect(f"/jobs/{job.id}")


@router.post("/jobs/{job_id}/resume")
def resume_job_from_page(
    request: Request, job_id: int, session: SessionDep, settings: SettingsDep, user: PageUser
) -> Response:
    job = get_owned(session, Job, job_id, user)
    try:
        resume_job(session, job, settings.jobs_dir)
    except ResumeRefused as exc:
        raise HTTPException(409, detail=str(exc)) from exc
    broker.enqueue_job(job.id)
    return _redirect(f"/jobs/{job.id}")


@router.post("/checkpoints/{checkpoint_id}/exports")
def export_from_page(
    request: Request,
    checkpoint_id: int,
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
    broker.enqueue_export(export.id)
    return _redirect(f"/jobs/{checkpoint.job_id}")
