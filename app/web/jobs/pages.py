"""Job (run) pages: the runs list with filters, the new-run form (generated from TrainingSpec,
with its live estimate), the live job page with cancel and resume, and the runs comparison.
``/jobs/{job_id:int}`` only matches numbers, so ``/jobs/new`` is the form."""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session, defer, selectinload

from app import broker, routing, run_queue, runs
from app.access import NotFound, get_owned, get_owned_checkpoint, owned
from app.chaining import chaining_context, next_stage_values
from app.chat import library as chat_library
from app.chat.lock import template_summary
from app.estimate import estimate_for
from app.exports import GGUF_QUANTIZATIONS, export_options
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
from app.metric_series import metric_series
from app.models import BaseModel, Job, JobStatus, User, Worker
from app.presets import PRESETS, preset_values
from app.queries import (
    checkpoint_exports,
    job_checkpoints,
    job_events,
    list_datasets,
    list_jobs,
)
from app.serialize import job_event_json, job_json
from app.settings import Settings
from app.web.datasets.pages import ROWS_PER_PAGE
from app.web.deps import FormValues, PageUser, SessionDep, SettingsDep
from app.web.forms import (
    adapter_choices,
    device_class_choices,
    estimate_display,
    hyperparameters_from_form,
    job_form_groups,
    method_choices,
    shown_fields,
    spec_defaults,
)
from app.web.params import MAX_ID, IdQuery, IdsListQuery, ObjectId, RefQuery, out_of_range
from app.web.rendering import render, templates

router = APIRouter(include_in_schema=False)

LOG_TAIL_LINES = 200


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


@router.get("/jobs")
def jobs_page(
    request: Request,
    session: SessionDep,
    user: PageUser,
    status: str = "",
    method: str = "",
    dataset_id: RefQuery = "",
    base_model: RefQuery = "",
) -> Response:
    error = None
    try:
        filters = runs.parse_filters(status, method, dataset_id, base_model)
    except runs.FilterError as exc:
        filters, error = runs.RunFilters(), str(exc)
    # Every one of the user's runs, with its base model and dataset, in three statements (not
    # one per model and dataset), and without the spec and other large columns the table never
    # shows: the filter choices below read these same objects from the session.
    every_job = session.scalars(
        owned(Job, user)
        .options(
            selectinload(Job.base_model),
            selectinload(Job.dataset),
            defer(Job.spec),
            defer(Job.stop_check),
            defer(Job.chat_template),
            defer(Job.error),
        )
        .order_by(Job.id.desc())
    ).all()
    jobs = runs.filter_jobs(session, user, filters) if filters.active else every_job
    context = {
        "user": user,
        "jobs": jobs,
        "filters": filters.as_dict(),
        "choices": runs.filter_choices(session, user),
        "filter_error": error,
        "selectable": True,
    }
    return render(request, "jobs.html", context, block="runs")


def _job_form_context(
    session: Session,
    settings: Settings,
    user: User,
    values: dict[str, Any],
    errors: dict[str, str],
) -> dict:
    values = {**spec_defaults(), **values}
    workers = session.scalars(select(Worker).order_by(Worker.name))
    return {
        "user": user,
        "parent": _parent_checkpoint(session, user, values.get("parent_checkpoint_id")),
        "groups": job_form_groups(),
        "adapters": adapter_choices(),
        "methods": method_choices(),
        "applicable": shown_fields(values, errors),
        "device_classes": device_class_choices(workers, settings.worker_offline_seconds),
        "values": values,
        "errors": errors,
        "models": session.scalars(select(BaseModel).order_by(BaseModel.id)).all(),
        "datasets": list_datasets(session, user),
        "presets": PRESETS,
        "chat_templates": chat_library.visible(session, user),
    }


def _parent_checkpoint(session: Session, user: User, value: Any) -> Any:
    """The checkpoint a chained run starts from, for the form's note (None if unknown)."""
    text = str(value or "").strip()
    if not text.isdigit() or out_of_range(text, 1, MAX_ID):
        return None
    with contextlib.suppress(NotFound):
        return get_owned_checkpoint(session, int(text), user)
    return None


def _form_id(values: dict[str, str], name: str, errors: list[dict[str, Any]]) -> int | None:
    """An id typed into the form: None unless digits; one too large for the database is an
    error by its field (the form shows it), never a query."""
    text = (values.get(name) or "").strip()
    if not text.isdigit():
        return None
    if problem := out_of_range(text, 1, MAX_ID):
        errors.append({"loc": [name], "msg": f"{name} {problem}", "type": "value_error"})
        return None
    return int(text)


def _job_request(values: dict[str, str]) -> JobRequest:
    """The keyword arguments of create_job / validate_request from the form's text."""
    errors: list[dict[str, Any]] = []
    ids = {
        name: _form_id(values, name, errors)
        for name in ("dataset_id", "parent_checkpoint_id", "chat_template_id")
    }
    base_model = values.get("base_model", "")
    if base_model.strip().isdigit() and (problem := out_of_range(base_model.strip(), 1, MAX_ID)):
        errors.append(
            {"loc": ["base_model"], "msg": f"base_model {problem}", "type": "value_error"}
        )
    if errors:
        raise JobRequestError(errors)
    return {
        "base_model": base_model,
        "dataset_id": ids["dataset_id"] or 0,
        "method": values.get("method") or "sft",
        "adapter": values.get("adapter") or "lora",
        "hyperparameters": hyperparameters_from_form(values),
        "parent_checkpoint_id": ids["parent_checkpoint_id"],
        "chat_template_id": ids["chat_template_id"],
        "device_class": values.get("device_class") or None,
    }


@router.get("/jobs/new")
def new_job_page(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    user: PageUser,
    dataset_id: IdQuery = None,
    preset: str | None = None,
    parent_checkpoint_id: IdQuery = None,
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
    context = _job_form_context(session, settings, user, values, {}) | {"preset": preset}
    return render(request, "job_new.html", context)


@router.post("/jobs/estimate")
def job_estimate_fragment(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    user: PageUser,
    values: FormValues,
) -> Response:
    """The form's live estimate panel (an HTMX fragment)."""
    context: dict[str, Any] = {"estimate": None, "problems": []}
    try:
        spec, model, dataset = validate_request(session, user, **_job_request(values))
    except JobRequestError as exc:
        context["problems"] = [(str(e["loc"][-1]), e["msg"]) for e in exc.errors]
    else:
        result = estimate_for(
            session,
            spec,
            model,
            dataset,
            settings.device_memory_bytes,
            device_class=values.get("device_class") or None,
            stale_after_seconds=settings.worker_offline_seconds,
        )
        context["estimate"] = result
        context["display"] = estimate_display(result)
    return render(request, "_job_estimate.html", context)


@router.post("/jobs")
def create_job_from_form(
    request: Request, session: SessionDep, settings: SettingsDep, user: PageUser, values: FormValues
) -> Response:
    """Create and queue the run; a refused request (the spec's rules, the model, or no
    registered worker that can hold it) re-renders the form with each error by its field."""
    try:
        job = create_job(session, user, name=values.get("name") or None, **_job_request(values))
    except JobRequestError as exc:
        errors = {str(e["loc"][-1]): e["msg"] for e in exc.errors}
        context = _job_form_context(session, settings, user, values, errors)
        return render(request, "job_new.html", context, status_code=422)
    session.commit()
    broker.enqueue_job(job, fail_unsent=True)
    return _redirect(f"/jobs/{job.id}")


@router.post("/jobs/{job_id}/cancel")
def cancel_job_from_page(
    request: Request, job_id: ObjectId, session: SessionDep, user: PageUser
) -> Response:
    job = get_owned(session, Job, job_id, user)
    with contextlib.suppress(JobAlreadyEnded):  # the page shows the final status either way
        request_cancel(session, job)
    return _redirect(f"/jobs/{job.id}")


@router.post("/jobs/{job_id}/resume")
def resume_job_from_page(
    request: Request, job_id: ObjectId, session: SessionDep, settings: SettingsDep, user: PageUser
) -> Response:
    job = get_owned(session, Job, job_id, user)
    try:
        resume_job(session, job, settings.jobs_dir)
    except ResumeRefused as exc:
        raise HTTPException(409, detail=str(exc)) from exc
    broker.enqueue_job(job, fail_unsent=True)
    return _redirect(f"/jobs/{job.id}")


@router.get("/jobs/{job_id:int}")
def job_page(
    request: Request, job_id: ObjectId, session: SessionDep, settings: SettingsDep, user: PageUser
) -> Response:
    job = get_owned(session, Job, job_id, user)
    checkpoints = job_checkpoints(session, job.id)
    exports = checkpoint_exports(session, [c.id for c in checkpoints], user)
    # The rows are read once per set (cached); the page carries only what it shows at once,
    # and job.js fetches the curves, downsampled, from GET /api/jobs/{id}/metrics?format=chart.
    series = metric_series(session, job)
    progress = runs.progress(job, series.points)
    log_text, log_offset = runs.log_tail_at(runs.log_path(settings.jobs_dir, job), LOG_TAIL_LINES)
    events = job_events(session, job.id)
    context = {
        "user": user,
        "job": job,
        "job_data": job_json(job),
        "export_options": export_options(job),
        "gguf_quantizations": GGUF_QUANTIZATIONS,
        "loss_points": series.loss_points,
        "curves": series.curves,
        "progress": progress,
        "eta": runs.format_duration(progress["eta_seconds"]),
        "timeline": runs.timeline(job, events),
        "phases": runs.phases(events),
        "job_events": [job_event_json(e) for e in events],
        "rows_per_page": ROWS_PER_PAGE,  # a row's page on its dataset's page
        **_devices_context(session, settings, job, user),  # with the trainer config
        "queue_position": run_queue.queue_position(session, job),
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


# What the trainer config says the run resolved on its device (issue 12), in display order.
RESOLVED_DEVICE_KEYS = (
    ("device", "device"),
    ("device_kind", "kind"),
    ("compute_capability", "compute capability"),
    ("requested_precision", "precision asked for"),
    ("precision", "precision used"),
    ("attn_implementation", "attention"),
    ("fused_kernels", "fused kernels"),
    ("packed_rows", "packing"),
    ("checkpointing", "gradient checkpointing"),
)


def _devices_context(session: Session, settings: Settings, job: Job, user: User) -> dict:
    """The run page's Devices section: the launch plan, what the run resolved on its device
    (once the trainer config exists) and, while queued, what it waits for."""
    config = runs.trainer_config(settings.jobs_dir, job)
    waiting = None
    if job.status == JobStatus.queued:
        waiting = routing.waiting_for(session, job, user, settings.worker_offline_seconds)
    launch = None
    with contextlib.suppress(ValueError):  # a stored spec this version no longer accepts
        launch = runs.launch(settings.jobs_dir, job)
    return {
        "trainer_config": config,
        "launch": launch,
        "resolved_device": [
            (label, config[key]) for key, label in RESOLVED_DEVICE_KEYS if (config or {}).get(key)
        ],
        "waiting_for": waiting,
    }


@router.get("/jobs/{job_id:int}/devices")
def job_devices_fragment(
    request: Request, job_id: ObjectId, session: SessionDep, settings: SettingsDep, user: PageUser
) -> Response:
    """The run page's Devices section alone (the page polls it while the run is queued)."""
    job = get_owned(session, Job, job_id, user)
    context = {"user": user, "job": job, **_devices_context(session, settings, job, user)}
    return templates.TemplateResponse(request, "job.html", context, block_name="devices")


@router.get("/runs/compare")
def compare_page(
    request: Request,
    session: SessionDep,
    user: PageUser,
    ids: IdsListQuery = None,
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
