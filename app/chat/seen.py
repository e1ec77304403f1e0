"""What the model sees, as the API and the pages show it: for messages or a dataset row, a
template and a base model, the rendered text and its tokens, which tokens carry loss, where
max_length cuts, and the end-of-turn/eos tokens. Built on ``app.chat.rows``, the trainer's code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.access import NotFound
from app.chat import library
from app.chat.encoding import ChatFormat, Encoding, LossOn
from app.chat.packing import best_fit_decreasing
from app.chat.rows import RowEncoder
from app.chat.sandbox import TemplateError
from app.chat.tokenizer import ModelTokenizer, TokenizerUnavailable, load_model_tokenizer
from app.data.tokens import find_model
from app.models import BaseModel, DatasetRow, User

LOSS_CHOICES: dict[str, str] = {
    "assistant": "assistant turns",
    "last": "final assistant turn",
    "all": "every token",
}


PACKING_PREVIEW_ROWS = 64  # the packed view bins this many of the dataset's first rows


class SeenRequestError(ValueError):
    """A preview that cannot be made: unknown model or template, or a template error."""


@dataclass(frozen=True)
class Viewpoint:
    """Everything a preview depends on besides the row."""

    model: BaseModel
    tokenizer: ModelTokenizer
    template: str
    max_length: int | None
    loss_on: LossOn

    def encoder(self) -> RowEncoder:
        fmt = ChatFormat(self.template, self.tokenizer.special_tokens)
        return RowEncoder(fmt, self.tokenizer, self.max_length, self.loss_on)


def viewpoint(
    session: Session,
    user: User,
    *,
    model_ref: int | str | None = None,
    template_id: int | None = None,
    template: str | None = None,
    max_length: int | None = None,
    loss_on: str = "assistant",
) -> Viewpoint:
    """The model (default: the first with a tokenizer), the template text (given, a library
    template's latest version, or the model's default) and the loss choice."""
    model = find_model(session, model_ref)
    if model is None:
        raise SeenRequestError(f"no base model {model_ref!r} with a tokenizer")
    try:
        tokenizer = load_model_tokenizer(model.path)
    except TokenizerUnavailable as exc:
        raise SeenRequestError(str(exc)) from exc
    if template is None:
        template = _library_source(session, user, model, template_id)
    if loss_on not in LOSS_CHOICES:
        raise SeenRequestError(f"loss must be one of {', '.join(LOSS_CHOICES)}")
    return Viewpoint(model, tokenizer, template, max_length, loss_on)  # type: ignore[arg-type]


def _library_source(session: Session, user: User, model: BaseModel, template_id: int | None) -> str:
    if template_id is None:
        return library.default_for(session, model).source
    try:
        return library.latest(library.get_visible(session, user, template_id)).source
    except NotFound as exc:
        raise SeenRequestError(f"no chat template {template_id}") from exc


def token_view(encoding: Encoding, tokenizer: ModelTokenizer) -> dict[str, Any]:
    """Parallel lists over every token: its text, id, whether it trains (loss within
    max_length), whether it is a special token; and where max_length cuts (``kept``)."""
    special_ids = tokenizer.special_ids()
    eos_id = tokenizer.token_id(tokenizer.eos_token)
    pieces: list[str] = []
    covered = 0
    for start, end in encoding.offsets:
        # A character split over several byte tokens is shown once, on its first token.
        pieces.append(encoding.text[start:end] if end > covered else "")
        covered = max(covered, end)
    kept = encoding.kept
    return {
        "text": encoding.text,
        "tokens": pieces,
        "token_ids": encoding.ids,
        "loss_mask": [int(on and i < kept) for i, on in enumerate(encoding.loss)],
        "special": [int(t in special_ids) for t in encoding.ids],
        "eos": [int(t == eos_id) for t in encoding.ids],
        "kept": kept,
        "truncated": kept < len(encoding.ids),
        "max_length": encoding.max_length,
        "trains": encoding.trains,
    }


def render_messages(
    view: Viewpoint,
    messages: list[dict[str, Any]],
    *,
    tools: list | None = None,
    add_generation_prompt: bool = False,
) -> dict[str, Any]:
    """POST /api/chat-templates/render: one conversation as the model sees it."""
    encoder = view.encoder()
    try:
        if add_generation_prompt:
            encoding = encoder.prompt({"prompt": messages, "tools": tools})
        else:
            encoding = encoder.conversation({"messages": messages, "tools": tools})
    except TemplateError as exc:
        raise SeenRequestError(str(exc)) from exc
    return {"model": view.model.name, **token_view(encoding, view.tokenizer)}


def row_sequences(view: Viewpoint, row: dict[str, Any]) -> list[dict[str, Any]]:
    """Every sequence a dataset row becomes in training, labelled."""
    try:
        sequences = view.encoder().sequences(row)
    except (TemplateError, ValueError) as exc:
        raise SeenRequestError(str(exc)) from exc
    return [{"label": label, **token_view(enc, view.tokenizer)} for label, enc in sequences]


def packed_with(view: Viewpoint, rows: list[dict[str, Any]], index: int) -> dict[str, Any] | None:
    """Where row ``index`` of ``rows`` sits when they are packed as the trainer packs them
    (best fit into ``max_length``, rows that train nothing left out): the rows of its packed
    sequence in order, each with the token it begins at. None without a max_length, or when
    the row is left out."""
    if view.max_length is None:
        return None
    encoder = view.encoder()
    lengths = []
    for row in rows:
        try:
            _, encoding = encoder.sequences(row)[0]
        except (TemplateError, ValueError, IndexError):
            encoding = None
        lengths.append(len(encoding.input_ids) if encoding and encoding.trains else 0)
    for packed in best_fit_decreasing(lengths, view.max_length):
        if index in packed.rows:
            starts = [sum(lengths[r] for r in packed.rows[:i]) for i in range(len(packed.rows))]
            return {
                "rows": [
                    {"row": r, "start": start, "tokens": lengths[r]}
                    for r, start in zip(packed.rows, starts, strict=True)
                ],
                "length": packed.length,
                "max_length": view.max_length,
                "among": len(rows),
            }
    return None


def first_rows(session: Session, dataset_id: int, limit: int) -> list[dict[str, Any]]:
    return list(
        session.scalars(
            select(DatasetRow.data)
            .where(DatasetRow.dataset_id == dataset_id)
            .order_by(DatasetRow.index)
            .limit(limit)
        )
    )


def dataset_row(session: Session, dataset_id: int, index: int) -> dict[str, Any] | None:
    return session.scalar(
        select(DatasetRow.data).where(
            DatasetRow.dataset_id == dataset_id, DatasetRow.index == index
        )
    )
