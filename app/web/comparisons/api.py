"""REST API for side-by-side comparisons, the blind arena and the playground, with server-sent
events streaming the answers as the worker writes them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel as Body
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from app import broker
from app import comparisons as cmp
from app.access import get_owned
from app.db import get_sessionmaker
from app.models import Comparison, Generation
from app.serialize import dataset_json
from app.web.comparisons.views import comparison_json, generation_json
from app.web.deps import CurrentUser, SessionDep
from app.web.errors import unprocessable
from app.web.params import IdField, ObjectId, RefText, SeedField
from app.web.rendering import json_response

router = APIRouter(prefix="/api", tags=["comparisons"])
POLL_SECONDS = 0.3
ENDED = ("succeeded", "failed", "cancelled")


class DecodingBody(Body):
    max_new_tokens: int = Field(default=128, ge=1, le=2048)
    temperature: float = Field(default=0.0, ge=0, le=5)
    top_p: float = Field(default=1.0, gt=0, le=1)
    seed: SeedField = 0

    def decoding(self) -> cmp.DecodingIn:
        return cmp.DecodingIn(self.max_new_tokens, self.temperature, self.top_p, self.seed)


class ComparisonIn(DecodingBody):
    name: str = Field(default="", max_length=200)
    checkpoint_ids: list[IdField] = Field(default_factory=list, max_length=cmp.MAX_MODELS)
    include_base: bool = True
    prompts: list[str | list[dict[str, Any]]] | None = None
    dataset_id: IdField | None = None
    limit: int = Field(default=10, ge=1, le=cmp.MAX_PROMPTS)


class VoteIn(Body):
    pair_id: IdField
    choice: str = Field(description="a | b | tie | both_bad")


class PlaygroundIn(DecodingBody):
    model: RefText = Field(description='"checkpoint:<id>" or "base:<id>"')
    messages: list[dict[str, Any]] = Field(min_length=1)


def _refused(exc: Exception) -> JSONResponse:
    return unprocessable(str(exc))


@router.post("/comparisons", status_code=201)
def post_comparison(body: ComparisonIn, session: SessionDep, user: CurrentUser) -> Any:
    try:
        comparison = cmp.create_comparison(
            session,
            user,
            checkpoint_ids=body.checkpoint_ids,
            include_base=body.include_base,
            prompts=body.prompts,
            dataset_id=body.dataset_id,
            limit=body.limit,
            decoding=body.decoding(),
            name=body.name,
        )
    except cmp.ComparisonRequestError as exc:
        session.rollback()
        return _refused(exc)
    session.commit()
    broker.enqueue_comparison(comparison.id, fail_unsent=True)
    return comparison_json(session, comparison)


@router.get("/comparisons")
def get_comparisons(session: SessionDep, user: CurrentUser) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "name": c.name, "status": c.status.value, "models": c.models}
        for c in cmp.list_comparisons(session, user)
    ]


@router.get("/comparisons/{comparison_id}", response_model=dict[str, Any])
def get_comparison(comparison_id: ObjectId, session: SessionDep, user: CurrentUser) -> Response:
    comparison = get_owned(session, Comparison, comparison_id, user)
    return json_response(comparison_json(session, comparison))  # every answer: off the loop


@router.post("/comparisons/{comparison_id}/votes")
def post_vote(comparison_id: ObjectId, body: VoteIn, session: SessionDep, user: CurrentUser) -> Any:
    comparison = get_owned(session, Comparison, comparison_id, user)
    try:
        pair = cmp.vote(session, comparison, body.pair_id, body.choice)
    except cmp.ComparisonRequestError as exc:
        return _refused(exc)
    session.commit()
    return {"pair_id": pair.id, "choice": pair.choice}


@router.post("/comparisons/{comparison_id}/dataset", status_code=201)
def post_votes_dataset(comparison_id: ObjectId, session: SessionDep, user: CurrentUser) -> Any:
    comparison = get_owned(session, Comparison, comparison_id, user)
    try:
        dataset = cmp.votes_to_dataset(session, user, comparison)
    except cmp.ComparisonRequestError as exc:
        return _refused(exc)
    session.commit()
    return dataset_json(dataset)


@router.post("/playground", status_code=201)
def post_playground(body: PlaygroundIn, session: SessionDep, user: CurrentUser) -> Any:
    try:
        generation = cmp.create_playground_turn(
            session, user, model_key=body.model, messages=body.messages, decoding=body.decoding()
        )
    except cmp.ComparisonRequestError as exc:
        session.rollback()
        return _refused(exc)
    session.commit()
    broker.enqueue_generation(generation.id, fail_unsent=True)
    return generation_json(generation)


@router.get("/generations/{generation_id}")
def get_generation(generation_id: ObjectId, session: SessionDep, user: CurrentUser) -> dict:
    return generation_json(cmp.owned_generation(session, user, generation_id))


# -- streaming ----------------------------------------------------------------------------------


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def _read(query: Callable[[Any], Any]) -> Any:
    with get_sessionmaker()() as session:
        return query(session)


async def _stream_generations(
    request: Request, snapshot: Callable[[Any], tuple[str, list[dict[str, Any]]]]
) -> AsyncIterator[str]:
    """An ``output`` event whenever a generation's text or status changes; ``end`` when done."""
    seen: dict[int, tuple[str, str]] = {}
    yield "retry: 2000\n\n"
    while True:
        status, outputs = await run_in_threadpool(_read, snapshot)
        for output in outputs:
            state = (output["text"], output["status"])
            if seen.get(output["id"]) != state:
                seen[output["id"]] = state
                yield _sse("output", output)
        if status in ENDED and all(o["status"] in ENDED for o in outputs):
            yield _sse("end", {"status": status})
            return
        if await request.is_disconnected():
            return
        await asyncio.sleep(POLL_SECONDS)


def _streaming(events: AsyncIterator[str]) -> StreamingResponse:
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events, media_type="text/event-stream", headers=headers)


@router.get("/comparisons/{comparison_id}/events")
def comparison_events(
    comparison_id: ObjectId, request: Request, session: SessionDep, user: CurrentUser
) -> StreamingResponse:
    comparison = get_owned(session, Comparison, comparison_id, user)
    labels = {m["key"]: m["label"] for m in comparison.models}
    session.commit()  # the stream outlives this request's session: it reads with its own
    session.close()

    def snapshot(db: Any) -> tuple[str, list[dict[str, Any]]]:
        current = db.get(Comparison, comparison_id)
        outputs = [generation_json(g, labels) for g in cmp.generations(db, comparison_id)]
        return current.status.value, outputs

    return _streaming(_stream_generations(request, snapshot))


@router.get("/generations/{generation_id}/events")
def generation_events(
    generation_id: ObjectId, request: Request, session: SessionDep, user: CurrentUser
) -> StreamingResponse:
    cmp.owned_generation(session, user, generation_id)
    session.commit()
    session.close()

    def snapshot(db: Any) -> tuple[str, list[dict[str, Any]]]:
        output = generation_json(db.get(Generation, generation_id))
        return output["status"], [output]

    return _streaming(_stream_generations(request, snapshot))
