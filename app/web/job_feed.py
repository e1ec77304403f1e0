"""One database poller per watched job in this web process, shared by all of its SSE streams.

A stream used to poll the database itself (job, metrics, job events every ``POLL_SECONDS``),
so the web process's work grew with the number of watchers: 500 of them saturated it
(BENCHMARKS.md). Now the first stream of a job starts a ``JobFeed``: it reads what is new after
the highest ids it has seen, renders each SSE message once and puts it on the queue of every
stream following it. A stream that joins reads its own backlog once (the rows after its
``Last-Event-ID`` up to the feed's position), then follows the feed. The feed stops when its
last follower leaves or after it has announced the job's end.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from app.db import get_sessionmaker
from app.models import Job, JobEvent, Metric
from app.queries import job_events, job_metrics
from app.runs import metric_point
from app.serialize import job_event_json, job_json

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0
CHECK_SECONDS = 1.0  # how often an idle stream checks that its client is still there
ENDED = ("succeeded", "failed", "cancelled")


def sse(event: str, data: Any, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data)}\n\n"


@dataclass(frozen=True)
class Message:
    kind: str  # metric | alarm | status | end | closed (the feed stopped: reconnect)
    key: int  # the metric's or job event's id; 0 for the others
    text: str
    data: Any = None


CLOSED = Message("closed", 0, "")


@dataclass
class Position:
    metric_id: int
    event_id: int
    status: Message


def _status_message(job: dict[str, Any]) -> Message:
    return Message("status", 0, sse("status", job), job)


def _status_key(status: Message) -> tuple[str, int]:
    return status.data["status"], status.data["progress"]["step"]


def _read_position(job_id: int) -> Position:
    with get_sessionmaker()() as session:
        job = session.get(Job, job_id)
        assert job is not None
        metric_id = session.scalar(select(func.max(Metric.id)).where(Metric.job_id == job_id))
        event_id = session.scalar(select(func.max(JobEvent.id)).where(JobEvent.job_id == job_id))
        return Position(metric_id or 0, event_id or 0, _status_message(job_json(job)))


def _read_new(job_id: int, after: Position) -> tuple[dict[str, Any], list[Message]]:
    with get_sessionmaker()() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job_json(job), _messages(session, job_id, after.metric_id, after.event_id)


def _messages(
    session: Any,
    job_id: int,
    after_metric: int,
    after_event: int,
    upto_metric: int | None = None,
    upto_event: int | None = None,
) -> list[Message]:
    metrics = [
        metric_point(m)
        for m in job_metrics(session, job_id, after_metric)
        if upto_metric is None or m.id <= upto_metric
    ]
    events = [
        job_event_json(e)
        for e in job_events(session, job_id, after_event)
        if upto_event is None or e.id <= upto_event
    ]
    return [Message("metric", m["id"], sse("metric", m, m["id"])) for m in metrics] + [
        Message("alarm", e["id"], sse("alarm", e)) for e in events
    ]


def _read_backlog(
    job_id: int, after_metric: int, after_event: int, upto: Position
) -> list[Message]:
    if after_metric >= upto.metric_id and after_event >= upto.event_id:
        return []
    with get_sessionmaker()() as session:
        return _messages(session, job_id, after_metric, after_event, upto.metric_id, upto.event_id)


@dataclass
class JobFeed:
    job_id: int
    followers: set[asyncio.Queue[Message]] = field(default_factory=set)
    position: Position | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False

    async def run(self) -> None:
        try:
            self.position = await run_in_threadpool(_read_position, self.job_id)
            self.ready.set()
            shown = _status_key(self.position.status)
            while True:
                await asyncio.sleep(POLL_SECONDS)
                if not self.followers:
                    return
                job, messages = await run_in_threadpool(_read_new, self.job_id, self.position)
                status = _status_message(job)
                if _status_key(status) != shown:  # as before: a new status or a new step
                    shown = _status_key(status)
                    messages.append(status)
                self._advance(messages, status)
                ended = job["status"] in ENDED and not any(m.kind == "metric" for m in messages)
                if ended:
                    messages.append(Message("end", 0, sse("end", {"status": job["status"]})))
                self._publish(messages)
                if ended:
                    return
        except Exception:
            log.exception("the feed of job %d stopped; its streams will reconnect", self.job_id)
        finally:
            self._close()

    def _advance(self, messages: list[Message], status: Message) -> None:
        assert self.position is not None
        for message in messages:
            if message.kind == "metric":
                self.position.metric_id = message.key
            elif message.kind == "alarm":
                self.position.event_id = max(self.position.event_id, message.key)
        self.position.status = status

    def _publish(self, messages: list[Message]) -> None:
        for queue in self.followers:
            for message in messages:
                queue.put_nowait(message)

    def _close(self) -> None:
        # In one step of the event loop with the last publish: a stream that joins afterwards
        # sees ``closed`` and starts a new feed.
        self.closed = True
        self.ready.set()
        if _FEEDS.get(self.job_id) is self:
            del _FEEDS[self.job_id]
        self._publish([CLOSED])


_FEEDS: dict[int, JobFeed] = {}
_TASKS: set[asyncio.Task] = set()  # strong references: the loop only keeps weak ones


def _feed_for(job_id: int) -> JobFeed:
    feed = _FEEDS.get(job_id)
    if feed is None or feed.closed:
        feed = _FEEDS[job_id] = JobFeed(job_id)
        task = asyncio.get_running_loop().create_task(feed.run())
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)
    return feed


async def _join(job_id: int) -> tuple[JobFeed, asyncio.Queue[Message], Position] | None:
    """Follow the job's feed: the queue gets everything after the returned position. None: the
    feed could not even read the job (deleted, or the database is down)."""
    while True:
        feed = _feed_for(job_id)
        await feed.ready.wait()
        if feed.position is None:
            return None
        if not feed.closed:
            queue: asyncio.Queue[Message] = asyncio.Queue()
            feed.followers.add(queue)
            at = feed.position
            return feed, queue, Position(at.metric_id, at.event_id, at.status)
        await asyncio.sleep(0)  # it closed between ready and now (job ended, or a read failed)


async def follow(
    request: Request, job_id: int, after_metric: int, after_event: int
) -> AsyncIterator[str]:
    """The SSE stream of one watcher: its backlog after ``after_metric`` / ``after_event``, then
    what the job's feed publishes, until the job's end (or the feed stops: the client
    reconnects with Last-Event-ID)."""
    yield "retry: 2000\n\n"
    if (joined := await _join(job_id)) is None:
        return
    feed, queue, joined_at = joined
    try:
        backlog = await run_in_threadpool(
            _read_backlog, job_id, after_metric, after_event, joined_at
        )
        for message in backlog:
            yield message.text
        yield joined_at.status.text
        after_metric = max(after_metric, joined_at.metric_id)
        idle = 0.0
        while True:
            try:
                message = await asyncio.wait_for(queue.get(), CHECK_SECONDS)
            except TimeoutError:
                if await request.is_disconnected():
                    return
                if (idle := idle + CHECK_SECONDS) >= KEEPALIVE_SECONDS:
                    idle = 0.0
                    yield ": keepalive\n\n"
                continue
            idle = 0.0
            if message.kind == "closed":
                return
            if message.kind == "metric":
                if message.key <= after_metric:
                    continue
                after_metric = message.key
            yield message.text
            if message.kind == "end":
                return
    finally:
        feed.followers.discard(queue)
