"""Server-sent events for a job: new metric rows and status changes, read from the database
by one poller per job (``app.web.job_feed``) however many streams watch it.

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
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.db import get_sessionmaker
from app.models import Job
from app.runs import log_chunk
from app.web.job_feed import ENDED, KEEPALIVE_SECONDS, POLL_SECONDS, follow, sse


def job_event_stream(
    request: Request, job_id: int, after: int, events_after: int
) -> StreamingResponse:
    """The job's SSE stream after metric row ``after`` (a reconnecting EventSource's
    Last-Event-ID, or the ``?after=`` of a fresh page: the last point it already rendered from
    the stored history) and job event ``events_after``; the route bounds both."""
    return StreamingResponse(
        follow(request, job_id, after, events_after),
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
            yield sse("log", {"text": text, "offset": offset}, offset)
            continue  # more may be waiting: read on before sleeping
        if status in ENDED:
            yield sse("end", {"status": status})
            return
        if (idle := idle + POLL_SECONDS) >= KEEPALIVE_SECONDS:
            idle = 0.0
            yield ": keepalive\n\n"
        if await request.is_disconnected():
            return
        await asyncio.sleep(POLL_SECONDS)


def job_log_stream(request: Request, job_id: int, path: Path, offset: int) -> StreamingResponse:
    """The training log as SSE from byte ``offset`` (Last-Event-ID, or ?offset=; the route
    bounds it)."""
    return StreamingResponse(
        _log_stream(request, job_id, path, offset),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
