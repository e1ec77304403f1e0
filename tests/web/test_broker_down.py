"""A task queue that does not answer (issue 14): a submission is a 503 with Retry-After and
its item ends failed, saying nothing ran, so a retry cannot run it twice; and queued items whose
messages the broker lost are sent again (``worker.redispatch``).

The unreachable broker is a real Celery client pointed at a closed port on 127.0.0.1; the
redispatched messages are read back from a queue of this test's own, which no worker reads."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from celery import Celery

from app import broker
from app.db import session_scope
from app.jobs import create_job
from app.models import BaseModel, Comparison, Generation, Job, JobStatus, User
from app.settings import Settings, get_settings
from tests.conftest import Account
from tests.support.datasets import upload_rows
from tests.support.processes import free_port
from worker import redispatch


def _celery(url: str, settings: Settings) -> Celery:
    return broker.make_celery(settings.model_copy(update={"broker_url": url}))


@pytest.fixture
def broker_down(monkeypatch: pytest.MonkeyPatch) -> None:
    down = _celery(f"redis://127.0.0.1:{free_port()}/0", get_settings())
    monkeypatch.setattr(broker, "get_celery", lambda: down)


@pytest.fixture
def private_queue(monkeypatch: pytest.MonkeyPatch) -> Iterator[Celery]:
    """The studio's own broker, under a queue name of this test's that no worker reads."""
    settings = get_settings().model_copy(update={"queue": f"redispatch-{uuid.uuid4().hex[:8]}"})
    celery = broker.make_celery(settings)
    monkeypatch.setattr(broker, "get_settings", lambda: settings)
    monkeypatch.setattr(broker, "get_celery", lambda: celery)
    yield celery


def _sent_ids(celery: Celery, queue: str, task: str) -> list[int]:
    """The ids of the ``task`` messages waiting in ``queue`` (taken off it)."""
    ids = []
    with celery.connection_for_read() as conn, conn.SimpleQueue(queue) as waiting:
        while True:
            try:
                message = waiting.get(timeout=0.5)
            except waiting.Empty:
                return ids
            if message.headers.get("task") == task:
                ids.append(message.payload[0][0])
            message.ack()


@pytest.fixture(scope="module")
def dataset_id(client, alice: Account) -> int:
    rows = [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(3)]
    return upload_rows(client, alice, "sft", rows, "broker-down.jsonl")


def test_a_job_submitted_while_the_queue_is_down_is_a_503_and_ends_failed(
    client, alice: Account, dataset_id: int, tiny_model: str, broker_down: None
) -> None:
    body = {"base_model": tiny_model, "dataset_id": dataset_id, "name": "queue-down"}
    response = client.post("/api/jobs", json=body, headers=alice.headers)
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == str(broker.RETRY_AFTER_SECONDS)
    assert "nothing was queued" in response.json()["detail"]
    listed = client.get("/api/jobs", headers=alice.headers).json()
    mine = [job for job in listed if job["name"] == "queue-down"]
    assert [(job["status"], job["error"]) for job in mine] == [("failed", broker.UNSENT_ERROR)]


def test_a_playground_turn_while_the_queue_is_down_is_a_503_and_ends_failed(
    client, alice: Account, tiny_model: str, broker_down: None
) -> None:
    with session_scope() as session:
        base_id = session.query(BaseModel).filter_by(name=tiny_model).one().id
    body = {"model": f"base:{base_id}", "messages": [{"role": "user", "content": "hi"}]}
    response = client.post("/api/playground", json=body, headers=alice.headers)
    assert response.status_code == 503, response.text
    with session_scope() as session:
        turn = session.query(Generation).order_by(Generation.id.desc()).first()
        assert (turn.status, turn.error) == (JobStatus.failed, broker.UNSENT_ERROR)


def test_a_failed_send_of_a_comparison_fails_its_answers_too(
    alice: Account, tiny_model: str, broker_down: None
) -> None:
    with session_scope() as session:
        comparison = Comparison(owner_id=alice.user_id, models=[], prompts=[[]])
        session.add(comparison)
        session.flush()
        session.add(
            Generation(
                owner_id=alice.user_id, comparison_id=comparison.id, model_key="base:1", messages=[]
            )
        )
        comparison_id = comparison.id
    with pytest.raises(broker.BrokerUnavailable):
        broker.enqueue_comparison(comparison_id, fail_unsent=True)
    with session_scope() as session:
        assert session.get(Comparison, comparison_id).status == JobStatus.failed
        answers = session.query(Generation).filter_by(comparison_id=comparison_id).all()
        assert [answer.status for answer in answers] == [JobStatus.failed]


def test_a_worker_send_that_fails_leaves_the_item_queued(
    alice: Account, dataset_id: int, tiny_model: str, broker_down: None
) -> None:
    with session_scope() as session:
        owner = session.get(User, alice.user_id)
        job = create_job(session, owner, base_model=tiny_model, dataset_id=dataset_id)
        with pytest.raises(broker.BrokerUnavailable):
            broker.enqueue_job(job)  # the reaper's and the pass-on's send
        job_id = job.id
    with session_scope() as session:
        assert session.get(Job, job_id).status == JobStatus.queued
        session.get(Job, job_id).status = JobStatus.cancelled  # no worker should take it later
    assert redispatch.redispatch_queued() == 0  # still down: noted for the next reap


def test_every_queued_item_is_sent_again(
    alice: Account, dataset_id: int, tiny_model: str, private_queue: Celery
) -> None:
    with session_scope() as session:
        owner = session.get(User, alice.user_id)
        queued = create_job(session, owner, base_model=tiny_model, dataset_id=dataset_id)
        ended = create_job(session, owner, base_model=tiny_model, dataset_id=dataset_id)
        ended.status = JobStatus.succeeded
        ids = queued.id, ended.id
    try:
        assert redispatch.redispatch_queued() >= 1
        queue = broker.get_settings().queue
        with session_scope() as session:
            job_queue = broker.job_queue(queue, session.get(Job, ids[0]))
        sent = _sent_ids(private_queue, job_queue, broker.RUN_JOB_TASK)
        assert ids[0] in sent and ids[1] not in sent, sent
    finally:
        with session_scope() as session:
            session.get(Job, ids[0]).status = JobStatus.cancelled


def test_the_mark_says_when_redis_lost_its_messages() -> None:
    settings = get_settings()
    if settings.is_embedded_broker:  # files on disk: never lost by a restart
        assert broker.broker_lost_messages() is False
        return
    client = redis.Redis.from_url(settings.broker_url)
    try:
        broker.broker_lost_messages()
        assert broker.broker_lost_messages() is False  # the mark is there
        client.delete(broker.BROKER_MARK_KEY)  # as a restart without persistence would
        assert broker.broker_lost_messages() is True
        assert broker.broker_lost_messages() is False
    finally:
        client.close()
