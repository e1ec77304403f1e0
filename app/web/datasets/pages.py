"""Dataset pages: the list with the upload form, and a dataset's page (stats with a histogram,
rows with paging and search, lineage, and the governance actions; each applied action redirects
to the new version's page)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, UploadFile
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from app.access import get_owned
from app.data.browse import page_rows
from app.data.errors import ImportRefused
from app.data.stats import DEFAULT_MAX_LENGTH, STATS_VERSION, StatsRequestError, dataset_stats
from app.data.tokens import find_model, models_with_tokenizer
from app.data.versions import ancestors, children
from app.models import Dataset, User
from app.queries import list_datasets
from app.web.datasets.actions import (
    ContaminationIn,
    DedupIn,
    FilterIn,
    OperationError,
    SplitIn,
    from_form,
    run_contamination,
    run_dedup,
    run_filter,
    run_split,
)
from app.web.datasets.views import describe_operation, display_row, histogram_bars, percent
from app.web.deps import FormValues, PageUser, SessionDep, SettingsDep
from app.web.params import ObjectId, Page, RefQuery
from app.web.rendering import render
from app.web.uploads import import_upload

router = APIRouter(prefix="/datasets", include_in_schema=False)
ROWS_PER_PAGE = 20


@router.get("")
def datasets_page(request: Request, session: SessionDep, user: PageUser) -> Response:
    return render(
        request, "datasets.html", {"user": user, "datasets": list_datasets(session, user)}
    )


@router.post("")
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
        result = import_upload(session, user, settings, file, **form)  # type: ignore[arg-type]
    except ImportRefused as exc:
        session.rollback()
        context = {
            "user": user,
            "datasets": list_datasets(session, user),
            "refused": exc,
            **form,  # what was sent, so the form shows it again
        }
        return render(request, "datasets.html", context, status_code=exc.status_code)
    session.commit()
    return RedirectResponse(f"/datasets/{result.dataset.id}", status_code=303)


def _open_version(session: Session, dataset: Dataset) -> RedirectResponse:
    """Commit before answering: the browser follows the redirect at once."""
    session.commit()
    return RedirectResponse(f"/datasets/{dataset.id}", status_code=303)


def _rows_context(session: Session, dataset: Dataset, page: int, search: str) -> dict[str, Any]:
    page = max(page, 1)
    total, rows = page_rows(session, dataset, (page - 1) * ROWS_PER_PAGE, ROWS_PER_PAGE, search)
    return {
        "rows": [(index, display_row(row)) for index, row in rows],
        "page": page,
        "pages": max(1, -(-total // ROWS_PER_PAGE)),
        "total": total,
        "search": search,
    }


def _stats_context(stats: dict[str, Any] | None) -> dict[str, Any]:
    if not stats:
        return {"stats": None}
    tokens = stats.get("tokens")
    shown = tokens or stats["chars"]
    return {
        "stats": stats,
        "bars": histogram_bars(shown.get("histogram"), tokens["max_length"] if tokens else None),
        "bars_unit": "tokens" if tokens else "characters",
        "percent": percent,
    }


def _cached_stats(session: Session, dataset: Dataset) -> dict[str, Any] | None:
    """The cached default stats, when they are for the current default model."""
    cached = dataset.stats or {}
    model = find_model(session, None)
    params = {
        "model": model.name if model else None,
        "model_id": model.id if model else None,
        "max_length": DEFAULT_MAX_LENGTH,
    }
    fresh = cached.get("version") == STATS_VERSION and cached.get("params") == params
    return cached if fresh else None


def _page_context(
    session: Session,
    user: User,
    dataset: Dataset,
    *,
    page: int = 1,
    search: str = "",
    stats: dict[str, Any] | None = None,
) -> dict[str, Any]:
    stats = stats or _cached_stats(session, dataset)
    chain = ancestors(session, dataset)
    made = children(session, dataset)
    return {
        "user": user,
        "dataset": dataset,
        "operation": describe_operation(dataset.operation) if dataset.parent_id else None,
        "ancestors": [(d, describe_operation(d.operation) if d.parent_id else None) for d in chain],
        "children": [(d, describe_operation(d.operation)) for d in made],
        "models": models_with_tokenizer(session),
        "selected_model": (stats or {}).get("params", {}).get("model_id"),
        "max_length": (stats or {}).get("params", {}).get("max_length", DEFAULT_MAX_LENGTH),
        "others": [d for d in list_datasets(session, user) if d.id != dataset.id],
        **_rows_context(session, dataset, page, search),
        **_stats_context(stats),
    }


@router.get("/{dataset_id}")
def dataset_page(
    request: Request,
    dataset_id: ObjectId,
    session: SessionDep,
    user: PageUser,
    page: Page = 1,
    search: str = "",
) -> Response:
    dataset = get_owned(session, Dataset, dataset_id, user)
    context = _page_context(session, user, dataset, page=page, search=search[:1000])
    return render(request, "dataset.html", context, block="rows")


@router.get("/{dataset_id}/stats")
def stats_panel(
    request: Request,
    dataset_id: ObjectId,
    session: SessionDep,
    user: PageUser,
    model: RefQuery = "",
    max_length: str = "",
) -> Response:
    """The stats block for a model and max_length (the whole page without HTMX)."""
    dataset = get_owned(session, Dataset, dataset_id, user)
    error = None
    stats = None
    try:
        length = int(max_length) if max_length.strip() else None
        stats = dataset_stats(session, dataset, model or None, length)
    except (ValueError, StatsRequestError) as exc:
        error = str(exc) if isinstance(exc, StatsRequestError) else "max_length must be a number"
    context = _page_context(session, user, dataset, stats=stats)
    context["stats_error"] = error
    return render(request, "dataset.html", context, block="stats")


def _refused_page(
    request: Request, session: Session, user: User, dataset: Dataset, exc: OperationError
) -> Response:
    session.rollback()
    context = _page_context(session, user, dataset)
    context["action_error"] = str(exc)
    return render(request, "dataset.html", context, status_code=422)


@router.post("/{dataset_id}/dedup/review")
def dedup_review(
    request: Request, dataset_id: ObjectId, session: SessionDep, user: PageUser, form: FormValues
) -> Response:
    dataset = get_owned(session, Dataset, dataset_id, user)
    context: dict[str, Any] = {"dataset": dataset}
    try:
        body = from_form(DedupIn, dict(form) | {"apply": "false"})
        report, _ = run_dedup(session, dataset, body)
        context["report"] = report.as_json()
    except OperationError as exc:
        context["error"] = str(exc)
    return render(request, "_dataset_dedup_review.html", context)


@router.post("/{dataset_id}/dedup")
def dedup_apply(
    request: Request, dataset_id: ObjectId, session: SessionDep, user: PageUser, form: FormValues
) -> Response:
    dataset = get_owned(session, Dataset, dataset_id, user)
    try:
        body = from_form(DedupIn, dict(form) | {"apply": "true"})
        _, version = run_dedup(session, dataset, body)
    except OperationError as exc:
        return _refused_page(request, session, user, dataset, exc)
    assert version is not None
    return _open_version(session, version)


def _split_fields(form: dict[str, Any]) -> dict[str, Any]:
    if form.pop("mode", "random") == "column":
        values = [v.strip() for v in form.pop("eval_values", "").split(",") if v.strip()]
        form.pop("eval_ratio", None)
        return {**form, "eval_values": values}
    form.pop("by_column", None)
    form.pop("eval_values", None)
    return form


@router.post("/{dataset_id}/split")
def split_apply(
    request: Request, dataset_id: ObjectId, session: SessionDep, user: PageUser, form: FormValues
) -> Response:
    dataset = get_owned(session, Dataset, dataset_id, user)
    try:
        body = from_form(SplitIn, _split_fields(dict(form)))
        train, _ = run_split(session, dataset, body)
    except OperationError as exc:
        return _refused_page(request, session, user, dataset, exc)
    return _open_version(session, train)


@router.post("/{dataset_id}/filter")
def filter_apply(
    request: Request, dataset_id: ObjectId, session: SessionDep, user: PageUser, form: FormValues
) -> Response:
    dataset = get_owned(session, Dataset, dataset_id, user)
    try:
        version = run_filter(session, dataset, from_form(FilterIn, dict(form)))
    except OperationError as exc:
        return _refused_page(request, session, user, dataset, exc)
    return _open_version(session, version)


@router.post("/{dataset_id}/contamination/check")
def contamination_check(
    request: Request, dataset_id: ObjectId, session: SessionDep, user: PageUser, form: FormValues
) -> Response:
    dataset = get_owned(session, Dataset, dataset_id, user)
    context: dict[str, Any] = {"dataset": dataset}
    try:
        body = from_form(ContaminationIn, dict(form) | {"apply": "false"})
        report, against, _ = run_contamination(session, dataset, body, user)
        context |= {"report": report.as_json(), "against": against, "n": body.n}
    except OperationError as exc:
        context["error"] = str(exc)
    return render(request, "_dataset_contamination.html", context)


@router.post("/{dataset_id}/contamination")
def contamination_apply(
    request: Request, dataset_id: ObjectId, session: SessionDep, user: PageUser, form: FormValues
) -> Response:
    dataset = get_owned(session, Dataset, dataset_id, user)
    try:
        body = from_form(ContaminationIn, dict(form) | {"apply": "true"})
        _, _, version = run_contamination(session, dataset, body, user)
    except OperationError as exc:
        return _refused_page(request, session, user, dataset, exc)
    assert version is not None
    return _open_version(session, version)
