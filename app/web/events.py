"""Server-sent events for a job: new metric rows and status changes, read from the database.

Each metric event carries the metric row id as its SSE id, so a reconnecting browser
(``Last-Event-ID``) resumes exactly after the last point it drew. Job events (health alarms,
early stopping, resumes) come as ``alarm`` events without an SSE id, after ``?events_after=``
(the last one the page rendered); a reconnect may send them again, and clients skip ids they
have.

The training log has its own stream (``job_log_stream``): each ``log`` event carries complete
lines and, as its SSE id, the byte offset in the log after them, so it resumes the same way.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.db import get_sessionmaker
from app.models import Job
from app.queries import job_events, job_metrics
from app.runs import log_chunk, metric_point
from app.web.serialize import job_event_json, job_json

POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0


def _sse(event: str, data: Any, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data)}\n\n"


Snapshot = tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]


def _snapshot(job_id: int, after_id: int, after_event: int) -> Snapshot:
    with get_sessionmaker()() as session:
        job = session.get(Job, job_id)
        assert job is not None
        metrics = [metric_point(m) for m in job_metrics(session, job_id, after_id)]
        events = [job_event_json(e) for e in job_events(session, job_id, after_event)]
        return job_json(job), metrics, events


async def _stream(
    request: Request, job_id: int, after_id: int, after_event: int = 0
) -> AsyncIterator[str]:
    last_status: tuple[str, int] | None = None
    idle = 0.0
    yield "retry: 2000\n\n"
    while True:
        job, metrics, events = await run_in_threadpool(_snapshot, job_id, after_id, after_event)
        for metric in metrics:
            after_id = metric["id"]
            yield _sse("metric", metric, metric["id"])
        for event in events:
            after_event = event["id"]
            yield _sse("alarm", event)
        status = (job["status"], job["progress"]["step"])
        if status != last_status:
            last_status = status
            yield _sse("status", job)
        if job["status"] in ("succeeded", "failed", "cancelled") and not metrics:
            yield _sse("end", {"status": job["status"]})
            return
        if metrics:
            idle = 0.0
        elif (idle := idle + POLL_SECONDS) >= KEEPALIVE_SECONDS:
            idle = 0.0
            yield ": keepalive\n\n"
        if await request.is_disconnected():
            return
        await asyncio.sleep(POLL_SECONDS)


def job_event_stream(request: Request, job_id: int) -> StreamingResponse:
    # A reconnecting EventSource sends Last-Event-ID; a fresh page passes ?after= for the
    # last point it already rendered from the stored history.
    last_id = request.headers.get("last-event-id") or request.query_params.get("after", "")
    after_id = int(last_id) if last_id.isdigit() else 0
    events_after = request.query_params.get("events_after", "")
    after_event = int(events_after) if events_after.isdigit() else 0
    return StreamingResponse(
        _stream(request, job_id, after_id, after_event),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _job_status(job_id: int) -> str:
    with get_sessionmaker()() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.status.value


async def _log_stream(request: Request, job_id: int, path: Path, offset: int) -> AsyncIterator[str]:
    idle = 0.0
    yield "retry: 2000\n\n"
    while True:
        # Read the status first: a job that has ended has written all of its log.
        status = await run_in_threadpool(_job_status, job_id)
        text, offset_after = await run_in_threadpool(log_chunk, path, offset)
        if text:
            offset = offset_after
            idle = 0.0
            yield _sse("log", {"text": text, "offset": offset}, offset)
            continue  # more may be waiting: read on before sleeping
        if status in ("succeeded", "failed", "cancelled"):
            yield _sse("end", {"status": status})
            return
        if (idle := idle + POLL_SECONDS) >= KEEPALIVE_SECONDS:
            idle = 0.0
            yield ": keepalive\n\n"
        if await request.is_disconnected():
            return
        await asyncio.sleep(POLL_SECONDS)


def job_log_stream(request: Request, job_id: int, path: Path) -> StreamingResponse:
    """The training log as SSE; Last-Event-ID (or ?offset=) is the byte offset to resume at."""
    last = request.headers.get("last-event-id") or request.query_params.get("offset", "")
    return StreamingResponse(
        _log_stream(request, job_id, path, int(last) if last.isdigit() else 0),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
