"""Pages for the chat template library: the list, the editor with a live preview of what the
model sees (HTMX), and the "what the model sees" views of a dataset row and of the job form."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from app.access import NotFound, get_owned
from app.chat import library
from app.chat.builtins import BUILTINS
from app.chat.sandbox import TemplateError
from app.chat.seen import (
    LOSS_CHOICES,
    PACKING_PREVIEW_ROWS,
    SeenRequestError,
    Viewpoint,
    dataset_row,
    first_rows,
    packed_with,
    row_sequences,
    viewpoint,
)
from app.chat.validation import REFERENCE_CONVERSATION, REFERENCE_TOOLS, validate_template
from app.data.tokens import models_with_tokenizer
from app.models import ChatTemplate, Dataset, User
from app.queries import list_datasets
from app.web.deps import FormValues, PageUser, SessionDep
from app.web.params import MAX_ID, MAX_TOKEN_LENGTH, IdQuery, ObjectId, VersionQuery, out_of_range
from app.web.rendering import render

router = APIRouter(include_in_schema=False)
REFERENCE_ROW = {"messages": REFERENCE_CONVERSATION, "tools": REFERENCE_TOOLS}
# The pages draw at most this many tokens of a sequence (each is a span); every count shown is
# of all of them. A huge row drawn whole was tens of MB of HTML, seconds of rendering whose
# garbage collection paused the whole web process, and a page no browser could show.
SHOWN_TOKENS = 20_000


def _drawn(sequences: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The sequences as the pages draw them: the first SHOWN_TOKENS tokens of each, and how
    many more there are (``hidden_tokens``)."""
    return [
        {
            **seq,
            "tokens": seq["tokens"][:SHOWN_TOKENS],
            "hidden_tokens": max(0, len(seq["tokens"]) - SHOWN_TOKENS),
        }
        for seq in sequences
    ]


def _int(values: dict[str, str], name: str, high: int = MAX_ID) -> int | None:
    """A number of the preview's form: None unless digits; too large a number is the
    preview's error (SeenRequestError), never a query."""
    text = str(values.get(name) or "").strip()
    if not text.isdigit():
        return None
    if problem := out_of_range(text, 0, high):
        raise SeenRequestError(f"{name} {problem}")
    return int(text)


def _model_ref(values: dict[str, str], name: str = "model") -> str | None:
    """A base model's id or name from the form; an id too large is the preview's error."""
    text = str(values.get(name) or "").strip()
    if text.isdigit() and (problem := out_of_range(text, 0, MAX_ID)):
        raise SeenRequestError(f"{name} {problem}")
    return text or None


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _preview_choices(session: Session, user: User) -> dict[str, Any]:
    return {
        "models": models_with_tokenizer(session),
        "datasets": list_datasets(session, user),
        "loss_choices": LOSS_CHOICES,
    }


def preview(session: Session, user: User, values: dict[str, str], source: str) -> dict[str, Any]:
    """Warnings and sequences for ``source`` on the chosen row (or the reference conversation)."""
    context: dict[str, Any] = {"sequences": [], "warnings": [], "error": None}
    try:
        view = viewpoint(
            session,
            user,
            model_ref=_model_ref(values),
            template=source,
            max_length=_int(values, "max_length", MAX_TOKEN_LENGTH),
            loss_on=values.get("loss") or "assistant",
        )
        context["warnings"] = validate_template(source, view.tokenizer)
        context["sequences"] = _drawn(row_sequences(view, _chosen_row(session, user, values)))
    except (SeenRequestError, TemplateError) as exc:
        context["error"] = str(exc)
    return context


def _chosen_row(session: Session, user: User, values: dict[str, str]) -> dict[str, Any]:
    dataset_id = _int(values, "dataset_id")
    if dataset_id is None:
        return REFERENCE_ROW
    get_owned(session, Dataset, dataset_id, user)
    row = dataset_row(session, dataset_id, _int(values, "row") or 0)
    if row is None:
        raise SeenRequestError(f"dataset {dataset_id} has no row {values.get('row')}")
    return row


@router.get("/chat-templates")
def templates_page(request: Request, session: SessionDep, user: PageUser) -> Response:
    context = {"user": user, "templates": library.visible(session, user)}
    return render(request, "chat_templates.html", context)


def _editor(
    request: Request,
    session: Session,
    user: User,
    template: ChatTemplate | None,
    values: dict[str, str],
    *,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    source = values.get("template", "")
    context = {
        "user": user,
        "template": template,
        "values": values,
        "save_error": error,
        **_preview_choices(session, user),
        **preview(session, user, values, source),
    }
    return render(request, "chat_template_edit.html", context, status_code=status_code)


@router.get("/chat-templates/new")
def new_template_page(
    request: Request, session: SessionDep, user: PageUser, copy: IdQuery = None
) -> Response:
    values = {"name": "", "template": BUILTINS[0].source}
    if copy is not None:
        original = library.get_visible(session, user, copy)
        values = {"name": f"{original.name} (copy)", "template": library.latest(original).source}
    return _editor(request, session, user, None, values)


@router.post("/chat-templates")
def create_template(
    request: Request, session: SessionDep, user: PageUser, values: FormValues
) -> Response:
    try:
        template = library.create(session, user, values.get("name", ""), values.get("template", ""))
    except TemplateError as exc:
        session.rollback()
        return _editor(request, session, user, None, values, error=str(exc), status_code=422)
    session.commit()
    return _redirect(f"/chat-templates/{template.id}")


@router.get("/chat-templates/{template_id}")
def edit_template_page(
    request: Request,
    template_id: ObjectId,
    session: SessionDep,
    user: PageUser,
    version: VersionQuery = None,
) -> Response:
    template = library.get_visible(session, user, template_id)
    shown = next((v for v in template.versions if v.version == version), None)
    shown = shown or library.latest(template)
    values = {"name": template.name, "template": shown.source, "version": str(shown.version)}
    return _editor(request, session, user, template, values)


@router.post("/chat-templates/{template_id}/versions")
def save_template_version(
    request: Request, template_id: ObjectId, session: SessionDep, user: PageUser, values: FormValues
) -> Response:
    template = library.get_visible(session, user, template_id)
    try:
        library.save_version(session, user, template, values.get("template", ""))
    except (TemplateError, library.TemplateEditRefused) as exc:
        session.rollback()
        return _editor(request, session, user, template, values, error=str(exc), status_code=422)
    session.commit()
    return _redirect(f"/chat-templates/{template.id}")


@router.post("/chat-templates/preview")
def preview_fragment(
    request: Request, session: SessionDep, user: PageUser, values: FormValues
) -> Response:
    """The editor's live preview (an HTMX fragment)."""
    context = preview(session, user, values, values.get("template", ""))
    return render(request, "_seen.html", context)


def _seen_context(
    session: Session, user: User, dataset: Dataset, values: dict[str, str]
) -> dict[str, Any]:
    context: dict[str, Any] = {"sequences": [], "error": None}
    try:
        view: Viewpoint = viewpoint(
            session,
            user,
            model_ref=_model_ref(values),
            template_id=_int(values, "template_id"),
            max_length=_int(values, "max_length", MAX_TOKEN_LENGTH),
            loss_on=values.get("loss") or "assistant",
        )
        row = dataset_row(session, dataset.id, _int(values, "row") or 0)
        if row is None:
            raise SeenRequestError(f"this dataset has no row {values.get('row')}")
        context["sequences"] = _drawn(row_sequences(view, row))
        context["model_name"] = view.model.name
        if values.get("packing") == "on":  # the job form's first row, packed as trained
            rows = first_rows(session, dataset.id, PACKING_PREVIEW_ROWS)
            context["packed"] = packed_with(view, rows, 0)
    except (SeenRequestError, NotFound) as exc:
        context["error"] = str(exc)
    return context


@router.get("/datasets/{dataset_id}/seen")
def dataset_seen_page(
    request: Request, dataset_id: ObjectId, session: SessionDep, user: PageUser
) -> Response:
    """What the model sees for one row of the dataset, with a model, template, loss choice."""
    dataset = get_owned(session, Dataset, dataset_id, user)
    values = {k: v for k, v in request.query_params.items()}
    context = {
        "user": user,
        "dataset": dataset,
        "values": values,
        "templates": library.visible(session, user),
        **_preview_choices(session, user),
        **_seen_context(session, user, dataset, values),
    }
    return render(request, "dataset_seen.html", context, block="seen")


@router.post("/jobs/seen")
def job_form_seen(
    request: Request, session: SessionDep, user: PageUser, values: FormValues
) -> Response:
    """The job form's "what the model sees" panel: the dataset's first row with the chosen base
    model, template, max_length and loss switches (an HTMX fragment)."""
    try:
        dataset_id = _int(values, "dataset_id")
    except SeenRequestError as exc:
        return render(request, "_seen.html", {"sequences": [], "error": str(exc)})
    if dataset_id is None:
        return render(request, "_seen.html", {"sequences": [], "error": "choose a dataset"})
    dataset = get_owned(session, Dataset, dataset_id, user)
    # An unticked checkbox sends nothing (see app.web.forms).
    completion_only = values.get("completion_only_loss") == "on"
    assistant_only = values.get("assistant_only_loss") == "on"
    loss = "last" if completion_only else "assistant" if assistant_only else "all"
    seen_values = {
        "model": values.get("base_model", ""),
        "template_id": values.get("chat_template_id", ""),
        "max_length": values.get("max_length", ""),
        "loss": loss,
        "row": "0",
        "packing": values.get("packing", ""),
    }
    return render(request, "_seen.html", _seen_context(session, user, dataset, seen_values))
