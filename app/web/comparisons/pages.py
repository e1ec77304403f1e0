"""Pages for side-by-side comparisons (a grid streamed as answers come), the blind arena (HTMX
votes, win rates), turning votes into a dataset, and the playground."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import broker
from app import comparisons as cmp
from app.access import get_owned
from app.models import BaseModel, Comparison, User
from app.queries import list_datasets
from app.web.deps import PageUser, RawForm, SessionDep
from app.web.params import MAX_ID, ObjectId, out_of_range
from app.web.rendering import render

router = APIRouter(include_in_schema=False)


def _values(form: Any) -> dict[str, Any]:
    return {
        # ints, as the form's checkboxes compare them; the range is checked before any query
        "checkpoint_ids": [
            int(v) for v in form.getlist("checkpoint_ids") if str(v).isascii() and str(v).isdigit()
        ],
        **{k: v for k, v in form.items() if k not in ("csrf_token", "checkpoint_ids")},
    }


def _form_id(text: Any, name: str) -> int | None:
    """An id chosen in a form: None unless digits; one too large for the database is refused
    as the form's error, never sent to a query."""
    text = str(text or "").strip()
    if not text.isdigit():
        return None
    if problem := out_of_range(text, 1, MAX_ID):
        raise cmp.ComparisonRequestError(f"{name} {problem}")
    return int(text)


def _number(values: dict[str, Any], name: str, default: float, cast: type = float) -> Any:
    try:
        number = cast(values.get(name) or default)
    except ValueError:
        raise cmp.ComparisonRequestError(f"{name} must be a number") from None
    if cast is int and (problem := out_of_range(abs(number))):
        raise cmp.ComparisonRequestError(f"{name} {problem}")
    return number


def _models_context(session: Session, user: User) -> dict[str, Any]:
    return {
        "checkpoints": cmp.checkpoint_choices(session, user),
        "base_models": session.scalars(select(BaseModel).order_by(BaseModel.id)).all(),
    }


def _list_page(
    request: Request,
    session: Session,
    user: User,
    values: dict[str, Any],
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    context = {
        "user": user,
        "comparisons": cmp.list_comparisons(session, user),
        "datasets": list_datasets(session, user),
        "values": values,
        "error": error,
        **_models_context(session, user),
    }
    return render(request, "comparisons.html", context, status_code=status_code)


@router.get("/comparisons")
def comparisons_page(request: Request, session: SessionDep, user: PageUser) -> Response:
    return _list_page(request, session, user, {"include_base": "on", "max_new_tokens": 128})


@router.post("/comparisons")
def create_comparison_from_form(
    request: Request, session: SessionDep, user: PageUser, form: RawForm
) -> Response:
    values = _values(form)
    prompts = [p.strip() for p in str(values.get("prompts", "")).splitlines() if p.strip()]
    dataset = str(values.get("dataset_id") or "")
    try:
        checkpoint_ids = [_form_id(v, "checkpoint_ids") or 0 for v in values["checkpoint_ids"]]
        decoding = cmp.DecodingIn(
            max_new_tokens=_number(values, "max_new_tokens", 128, int),
            temperature=_number(values, "temperature", 0.0),
        )
        comparison = cmp.create_comparison(
            session,
            user,
            checkpoint_ids=checkpoint_ids,
            include_base=values.get("include_base") == "on",
            prompts=prompts or None,
            dataset_id=None if prompts else _form_id(dataset, "dataset_id"),
            limit=_number(values, "limit", 10, int),
            decoding=decoding,
            name=str(values.get("name", "")),
        )
    except cmp.ComparisonRequestError as exc:
        session.rollback()
        return _list_page(request, session, user, values, str(exc), status_code=422)
    session.commit()
    broker.enqueue_comparison(comparison.id, fail_unsent=True)
    return RedirectResponse(f"/comparisons/{comparison.id}", status_code=303)


def _arena_context(session: Session, comparison: Comparison) -> dict[str, Any]:
    pair = cmp.next_unvoted(session, comparison.id)
    outputs = {g.id: g for g in cmp.generations(session, comparison.id)}
    all_pairs = cmp.pairs(session, comparison.id)
    return {
        "comparison": comparison,
        "pair": pair,
        "pair_texts": (outputs[pair.a_generation_id].text, outputs[pair.b_generation_id].text)
        if pair
        else None,
        "voted": sum(p.choice is not None for p in all_pairs),
        "total_pairs": len(all_pairs),
        "win_rates": cmp.win_rates(session, comparison),
        "decided": sum(p.choice in ("a", "b") for p in all_pairs),
    }


@router.get("/comparisons/{comparison_id}")
def comparison_page(
    request: Request, comparison_id: ObjectId, session: SessionDep, user: PageUser
) -> Response:
    comparison = get_owned(session, Comparison, comparison_id, user)
    grid: dict[tuple[int, str], Any] = {
        (g.prompt_index, g.model_key): g for g in cmp.generations(session, comparison.id)
    }
    context = {"user": user, "grid": grid, **_arena_context(session, comparison)}
    return render(request, "comparison.html", context, block="arena")


@router.post("/comparisons/{comparison_id}/votes")
def vote_from_page(
    request: Request, comparison_id: ObjectId, session: SessionDep, user: PageUser, form: RawForm
) -> Response:
    comparison = get_owned(session, Comparison, comparison_id, user)
    error = None
    try:
        pair_id = _form_id(form.get("pair_id"), "pair_id") or 0
        cmp.vote(session, comparison, pair_id, str(form.get("choice")))
        session.commit()
    except (cmp.ComparisonRequestError, cmp.NotFound) as exc:
        error = str(exc)
    if request.headers.get("hx-request") != "true":
        return RedirectResponse(f"/comparisons/{comparison.id}#arena", status_code=303)
    context = {"user": user, "vote_error": error, **_arena_context(session, comparison)}
    return render(request, "comparison.html", context, block="arena")


@router.post("/comparisons/{comparison_id}/dataset")
def votes_dataset_from_page(
    request: Request, comparison_id: ObjectId, session: SessionDep, user: PageUser
) -> Response:
    comparison = get_owned(session, Comparison, comparison_id, user)
    try:
        dataset = cmp.votes_to_dataset(session, user, comparison)
    except cmp.ComparisonRequestError as exc:
        context = {
            "user": user,
            "vote_error": str(exc),
            "grid": {},
            **_arena_context(session, comparison),
        }
        return render(request, "comparison.html", context, block="arena", status_code=422)
    session.commit()
    return RedirectResponse(f"/datasets/{dataset.id}", status_code=303)


@router.get("/playground")
def playground_page(
    request: Request, session: SessionDep, user: PageUser, model: str | None = None
) -> Response:
    context = {"user": user, "chosen": model or "", **_models_context(session, user)}
    return render(request, "playground.html", context)
