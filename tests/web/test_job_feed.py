"""The job feed behind the live SSE streams: one database poller per job however many streams
follow it, each stream getting its backlog and then every new row exactly once, in order."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from sqlalchemy import event

from app.db import get_engine, session_scope
from app.jobs import create_job, request_cancel
from app.models import Dataset, Job, JobEvent, Metric, User
from app.web.job_feed import POLL_SECONDS, follow

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def job_id(alice, tiny_model: str) -> int:
    with session_scope() as session:
        owner = session.get(User, alice.user_id)
        dataset = Dataset(owner_id=owner.id, name="feed", kind="sft", format="alpaca")
        session.add(dataset)
        session.flush()
        return create_job(session, owner, base_model=tiny_model, dataset_id=dataset.id).id


class ConnectedClient:
    async def is_disconnected(self) -> bool:
        return False


def _write_metric(job_id: int, step: int) -> int:
    with session_scope() as session:
        metric = Metric(job_id=job_id, step=step, loss=1.0 / step, learning_rate=1e-4, values={})
        session.add(metric)
        session.flush()
        return metric.id


def _write_alarm(job_id: int) -> int:
    with session_scope() as session:
        alarm = JobEvent(job_id=job_id, step=3, kind="loss_spike", message="spike")
        session.add(alarm)
        session.flush()
        return alarm.id


def _cancel(job_id: int) -> None:
    with session_scope() as session:
        request_cancel(session, session.get(Job, job_id))


def _parse(chunks: list[str]) -> list[tuple[str, dict, str | None]]:
    events = []
    for chunk in chunks:
        fields = dict(
            line.split(": ", 1) for line in chunk.strip().splitlines() if not line.startswith(":")
        )
        if "event" in fields:
            events.append((fields["event"], json.loads(fields["data"]), fields.get("id")))
    return events


async def _collect(job_id: int, after_metric: int = 0, after_event: int = 0) -> list:
    chunks = [c async for c in follow(ConnectedClient(), job_id, after_metric, after_event)]
    return _parse(chunks)


async def test_followers_share_one_poll_and_get_every_row_once(job_id: int) -> None:
    metric_reads = 0

    def count(conn, cursor, statement: str, *args) -> None:
        nonlocal metric_reads
        metric_reads += "FROM metrics" in statement

    event.listen(get_engine(), "before_cursor_execute", count)
    try:
        started = time.monotonic()
        early = [asyncio.create_task(_collect(job_id)) for _ in range(20)]
        ids = []
        for step in (1, 2, 3):
            await asyncio.sleep(0.2)
            ids.append(await asyncio.to_thread(_write_metric, job_id, step))
        alarm = await asyncio.to_thread(_write_alarm, job_id)
        await asyncio.sleep(3 * POLL_SECONDS)  # the feed has published the first three
        # A late stream that has drawn the first point gets the rest from its backlog.
        late = asyncio.create_task(_collect(job_id, after_metric=ids[0]))
        # One that has every point so far (a reconnect after the last) gets none of them again.
        caught_up = asyncio.create_task(_collect(job_id, after_metric=ids[2], after_event=alarm))
        await asyncio.sleep(POLL_SECONDS)
        for step in (4, 5):
            ids.append(await asyncio.to_thread(_write_metric, job_id, step))
            await asyncio.sleep(0.2)
        await asyncio.to_thread(_cancel, job_id)
        streams = await asyncio.wait_for(asyncio.gather(*early, late, caught_up), 30)
        seconds = time.monotonic() - started
    finally:
        event.remove(get_engine(), "before_cursor_execute", count)

    for events in streams:
        assert events[-1][:2] == ("end", {"status": "cancelled"})
        statuses = [data["status"] for kind, data, _ in events if kind == "status"]
        assert statuses[0] == "queued" and statuses[-1] == "cancelled"
    for events in streams[:20]:
        metrics = [(data["id"], sse_id) for kind, data, sse_id in events if kind == "metric"]
        assert metrics == [(i, str(i)) for i in ids]
        assert [data["id"] for kind, data, _ in events if kind == "alarm"] == [alarm]
    late_metrics = [data["id"] for kind, data, _ in streams[20] if kind == "metric"]
    assert late_metrics == ids[1:]
    caught_up_events = [(kind, data.get("id")) for kind, data, _ in streams[21] if kind != "status"]
    assert caught_up_events[:-1] == [("metric", i) for i in ids[3:]]

    # One poll per POLL_SECONDS for the job plus the late stream's one backlog read; 22 streams
    # polling for themselves would have read the metrics table 22 times as often.
    polls = seconds / POLL_SECONDS
    assert 0 < metric_reads <= polls + 4, (metric_reads, polls)


async def test_a_stream_of_an_ended_job_says_so_and_closes(job_id: int) -> None:
    await asyncio.to_thread(_cancel, job_id)
    events = await asyncio.wait_for(_collect(job_id, after_metric=999_999_999), 10)
    assert [kind for kind, _, _ in events] == ["status", "end"]
    assert events[-1][1] == {"status": "cancelled"}


async def test_a_stream_of_a_job_that_is_gone_ends_at_once() -> None:
    chunks = [c async for c in follow(ConnectedClient(), 2_000_000_000, 0, 0)]
    assert chunks == ["retry: 2000\n\n"]
