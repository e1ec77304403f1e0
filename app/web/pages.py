"""Browser pages (Jinja2 + HTMX). The same domain functions as the API, session-authenticated."""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, UploadFile
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select

from app import broker
from app.access import get_owned, get_owned_checkpoint
from app.auth import authenticate, user_for_token
from app.data.errors import ImportRefused
from app.data.importer import import_dataset
from app.exports import create_export
from app.jobs import JobAlreadyEnded, JobRequestError, create_job, request_cancel
from app.models import BaseModel, Dataset, Job
from app.queries import (
    checkpoint_exports,
    dataset_rows,
    job_checkpoints,
    job_metrics,
    list_datasets,
    list_jobs,
)
from app.spec import HYPERPARAMETER_FIELDS, TrainingSpec
from app.web.deps import PageUser, SessionDep, SettingsDep
from app.web.forms import job_form_groups, spec_defaults
from app.web.rendering import render
from app.web.serialize import job_json, metric_json

router = APIRouter(include_in_schema=False)
ROWS_PER_PAGE = 20


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
async def upload_dataset(
    request: Request,
    file: UploadFile,
    session: SessionDep,
    settings: SettingsDep,
    user: PageUser,
    name: Annotated[str, Form()] = "",
) -> Response:
    try:
        dataset = import_dataset(
            session,
            user,
            filename=file.filename or "upload.json",
            raw=await file.read(),
            name=name or None,
            uploads_dir=settings.uploads_dir,
        )
    except ImportRefused as exc:
        session.rollback()
        context = {
            "user": user,
            "datasets": list_datasets(session, user),
            "refused": exc,
            "name": name,
        }
        return render(request, "datasets.html", context, status_code=422)
    session.commit()
    return _redirect(f"/datasets/{dataset.id}")


@router.get("/datasets/{dataset_id}")
def dataset_page(
    request: Request, dataset_id: int, session: SessionDep, user: PageUser, page: int = 1
) -> Response:
    dataset = get_owned(session, Dataset, dataset_id, user)
    page = max(page, 1)
    total, rows = dataset_rows(session, dataset, (page - 1) * ROWS_PER_PAGE, ROWS_PER_PAGE)
    context = {
        "user": user,
        "dataset": dataset,
        "rows": rows,
        "page": page,
        "pages": max(1, -(-total // ROWS_PER_PAGE)),
        "first_index": (page - 1) * ROWS_PER_PAGE,
    }
    return render(request, "dataset.html", context, block="rows")


@router.get("/jobs")
def jobs_page(request: Request, session: SessionDep, user: PageUser) -> Response:
    return render(request, "jobs.html", {"user": user, "jobs": list_jobs(session, user)})


def _job_form_context(
    session: SessionDep, user: PageUser, values: dict[str, Any], errors: dict[str, str]
) -> dict:
    return {
        "user": user,
        "groups": job_form_groups(),
        "values": {**spec_defaults(), **values},
        "errors": errors,
        "models": session.scalars(select(BaseModel).order_by(BaseModel.id)).all(),
        "datasets": list_datasets(session, user),
    }


@router.get("/jobs/new")
def new_job_page(
    request: Request, session: SessionDep, user: PageUser, dataset_id: int | None = None
) -> Response:
    values = {"dataset_id": dataset_id} if dataset_id else {}
    return render(request, "job_new.html", _job_form_context(session, user, values, {}))


@router.post("/jobs")
async def create_job_from_form(request: Request, session: SessionDep, user: PageUser) -> Response:
    form = await request.form()
    values = {k: v for k, v in form.items() if k != "csrf_token" and isinstance(v, str)}
    hyper: dict[str, Any] = {k: values[k] for k in HYPERPARAMETER_FIELDS if k in values}
    for name, info in TrainingSpec.model_fields.items():
        if info.annotation is bool and name in HYPERPARAMETER_FIELDS:
            hyper[name] = name in values  # an unticked checkbox sends nothing
    try:
        job = create_job(
            session,
            user,
            base_model=values.get("base_model", ""),
            dataset_id=int(values.get("dataset_id") or 0),
            name=values.get("name") or None,
            hyperparameters=hyper,
        )
    except JobRequestError as exc:
        errors = {str(e["loc"][-1]): e["msg"] for e in exc.errors}
        context = _job_form_context(session, user, values, errors)
        return render(request, "job_new.html", context, status_code=422)
    session.commit()
    broker.enqueue_job(job.id)
    return _redirect(f"/jobs/{job.id}")


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: int, session: SessionDep, user: PageUser) -> Response:
    job = get_owned(session, Job, job_id, user)
    checkpoints = job_checkpoints(session, job.id)
    exports = checkpoint_exports(session, [c.id for c in checkpoints], user)
    context = {
        "user": user,
        "job": job,
        "job_data": job_json(job),
        "metrics": [metric_json(m) for m in job_metrics(session, job.id)],
        "checkpoints": checkpoints,
        "exports_by_checkpoint": {
            c.id: [e for e in exports if e.checkpoint_id == c.id] for c in checkpoints
        },
    }
    return render(request, "job.html", context, block="summary")


@router.post("/jobs/{job_id}/cancel")
def cancel_job_from_page(
    request: Request, job_id: int, session: SessionDep, user: PageUser
) -> Response:
    job = get_owned(session, Job, job_id, user)
    with contextlib.suppress(JobAlreadyEnded):  # the page shows the final status either way
        request_cancel(session, job)
    return _redirect(f"/jobs/{job.id}")


@router.post("/checkpoints/{checkpoint_id}/exports")
def export_from_page(
    request: Request, checkpoint_id: int, session: SessionDep, user: PageUser
) -> Response:
    checkpoint = get_owned_checkpoint(session, checkpoint_id, user)
    export = create_export(session, user, checkpoint, "merged")
    session.commit()
    broker.enqueue_export(export.id)
    return _redirect(f"/jobs/{checkpoint.job_id}")
