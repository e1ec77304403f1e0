"""REST API for the chat template library and "what the model sees"."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel as Body
from pydantic import Field, model_validator

from app.access import get_owned
from app.chat import library
from app.chat.sandbox import MAX_TEMPLATE_CHARS, TemplateError
from app.chat.seen import (
    SeenRequestError,
    dataset_row,
    render_messages,
    row_sequences,
    viewpoint,
)
from app.chat.tokenizer import ModelTokenizer, TokenizerUnavailable, load_model_tokenizer
from app.data.tokens import find_model
from app.models import ChatTemplate, ChatTemplateVersion, Dataset
from app.web.deps import CurrentUser, SessionDep
from app.web.errors import unprocessable
from app.web.params import (
    IdField,
    IdQuery,
    ObjectId,
    OptionalRefQuery,
    RefField,
    RowIndex,
    TokenLength,
    TokenLengthField,
    VersionNumber,
)
from app.web.rendering import json_response

router = APIRouter(prefix="/api", tags=["chat templates"])
LossChoice = Literal["assistant", "last", "all"]


class TemplateIn(Body):
    name: str = Field(min_length=1, max_length=200)
    template: str = Field(min_length=1, max_length=MAX_TEMPLATE_CHARS)
    model: RefField | None = Field(
        default=None, description="check end-of-turn tokens against this base model's vocabulary"
    )


class VersionIn(Body):
    template: str = Field(min_length=1, max_length=MAX_TEMPLATE_CHARS)
    model: RefField | None = None


class RenderIn(Body):
    template_id: IdField | None = None
    template: str | None = Field(default=None, max_length=MAX_TEMPLATE_CHARS)
    messages: list[dict[str, Any]] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None
    model: RefField | None = None
    add_generation_prompt: bool = False
    max_length: TokenLengthField | None = None
    loss: LossChoice = "assistant"

    @model_validator(mode="after")
    def _one_template(self) -> RenderIn:
        if self.template_id is not None and self.template is not None:
            raise ValueError("give template_id or template, not both")
        return self


def version_json(version: ChatTemplateVersion, *, with_source: bool = True) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": version.id,
        "version": version.version,
        "warnings": version.warnings,
        "created_at": version.created_at.isoformat(),
    }
    return data | {"template": version.source} if with_source else data


def template_json(template: ChatTemplate, *, versions: bool = False) -> dict[str, Any]:
    latest = library.latest(template)
    data = {
        "id": template.id,
        "name": template.name,
        "kind": template.kind,
        "base_model_id": template.base_model_id,
        "editable": template.kind == library.USER,
        "latest": version_json(latest),
    }
    if versions:
        data["versions"] = [version_json(v, with_source=False) for v in template.versions]
    return data


def _unprocessable(message: str) -> JSONResponse:
    return unprocessable(message)


def _tokenizer(session: SessionDep, ref: int | str | None) -> ModelTokenizer | None:
    model = find_model(session, ref) if ref is not None else None
    if model is None:
        return None
    try:
        return load_model_tokenizer(model.path)
    except TokenizerUnavailable:
        return None


@router.get("/chat-templates")
def get_chat_templates(session: SessionDep, user: CurrentUser) -> list[dict[str, Any]]:
    return [template_json(t) for t in library.visible(session, user)]


@router.post("/chat-templates", status_code=201)
def post_chat_template(body: TemplateIn, session: SessionDep, user: CurrentUser) -> Any:
    try:
        template = library.create(
            session, user, body.name, body.template, _tokenizer(session, body.model)
        )
    except TemplateError as exc:
        session.rollback()
        return _unprocessable(str(exc))
    session.commit()
    return template_json(template, versions=True)


@router.get("/chat-templates/{template_id}")
def get_chat_template(template_id: ObjectId, session: SessionDep, user: CurrentUser) -> dict:
    return template_json(library.get_visible(session, user, template_id), versions=True)


@router.get("/chat-templates/{template_id}/versions/{version}")
def get_chat_template_version(
    template_id: ObjectId, version: VersionNumber, session: SessionDep, user: CurrentUser
) -> Any:
    template = library.get_visible(session, user, template_id)
    for candidate in template.versions:
        if candidate.version == version:
            return version_json(candidate)
    return JSONResponse({"detail": "version not found"}, status_code=404)


@router.post("/chat-templates/{template_id}/versions", status_code=201)
def post_chat_template_version(
    template_id: ObjectId, body: VersionIn, session: SessionDep, user: CurrentUser
) -> Any:
    template = library.get_visible(session, user, template_id)
    try:
        version = library.save_version(
            session, user, template, body.template, _tokenizer(session, body.model)
        )
    except library.TemplateEditRefused as exc:
        return JSONResponse({"detail": str(exc)}, status_code=409)
    except TemplateError as exc:
        session.rollback()
        return _unprocessable(str(exc))
    session.commit()
    return version_json(version)


@router.post("/chat-templates/render")
def post_render(body: RenderIn, session: SessionDep, user: CurrentUser) -> Any:
    """``{"text", "tokens", "loss_mask", ...}`` for ``messages`` as ``model`` sees them."""
    try:
        view = viewpoint(
            session,
            user,
            model_ref=body.model,
            template_id=body.template_id,
            template=body.template,
            max_length=body.max_length,
            loss_on=body.loss,
        )
        seen = render_messages(
            view,
            body.messages,
            tools=body.tools,
            add_generation_prompt=body.add_generation_prompt,
        )
    except SeenRequestError as exc:
        return _unprocessable(str(exc))
    return json_response(seen)  # a long conversation's tokens: encoded off the event loop


@router.get("/datasets/{dataset_id}/rows/{index}/seen")
def get_row_seen(
    dataset_id: ObjectId,
    index: RowIndex,
    session: SessionDep,
    user: CurrentUser,
    model: OptionalRefQuery = None,
    template_id: IdQuery = None,
    max_length: TokenLength = None,
    loss: LossChoice = "assistant",
) -> Any:
    """Every sequence dataset row ``index`` becomes in training, as the model sees it."""
    get_owned(session, Dataset, dataset_id, user)
    row = dataset_row(session, dataset_id, index)
    if row is None:
        return JSONResponse({"detail": "row not found"}, status_code=404)
    try:
        view = viewpoint(
            session,
            user,
            model_ref=model,
            template_id=template_id,
            max_length=max_length,
            loss_on=loss,
        )
        sequences = row_sequences(view, row)
    except SeenRequestError as exc:
        return _unprocessable(str(exc))
    return json_response({"index": index, "sequences": sequences})
