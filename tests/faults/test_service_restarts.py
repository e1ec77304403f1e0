"""Redis (the broker) and Postgres (the database) restart while a job trains.

The studio here is a private one on private servers (free ports, temporary folders): the
machine's shared Postgres and Redis, which other tests use, are never touched. Each server is
stopped for a few seconds mid-run (well within the reaper's 12 missed heartbeats) while the
API is asked for the job, its metrics and the job list, then started again."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.conftest import job_body, metric_steps, read_job, submit, wait_for_steps
from tests.support.jobs import ENDED, checkpoints, wait_for_job
from tests.support.runs import upload_counting
from tests.support.services import (
    PrivatePostgres,
    PrivateRedis,
    postgres_unavailable,
    private_postgres,
    private_redis,
    redis_unavailable,
)
from tests.support.studio import Studio, private_studio

pytestmark = pytest.mark.faults

OUTAGE_SECONDS = 4.0
MAX_STEPS = 60


Servers = tuple[PrivatePostgres, PrivateRedis]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    if reason := postgres_unavailable() or redis_unavailable():
        pytest.skip(reason)
    with private_postgres() as postgres, private_redis(tmp_path_factory.mktemp("redis")) as redis:
        yield postgres, redis


@pytest.fixture(scope="module")
def studio(
    servers: Servers,
    tmp_path_factory: pytest.TempPathFactory,
    tiny_model_dir: Path,
) -> Iterator[Studio]:
    postgres, redis = servers
    root = tmp_path_factory.mktemp("services-studio")
    urls = {"database_url": postgres.url, "broker_url": redis.url}
    with private_studio(root, tiny_model_dir, **urls) as running:
        yield running


@pytest.fixture(scope="module")
def dataset_id(studio: Studio) -> int:
    return upload_counting(studio.client, studio.account)


def _probe_during(studio: Studio, job_id: int, seconds: float) -> list[tuple[str, int]]:
    """(path, status) of the API's answers, asked again and again for ``seconds``."""
    paths = [f"/api/jobs/{job_id}", f"/api/jobs/{job_id}/metrics", "/api/jobs", "/api/workers"]
    answers = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for path in paths:
            response = studio.client.get(path, headers=studio.account.headers, timeout=10)
            answers.append((path, response.status_code))
        time.sleep(0.2)
    return answers


def _outage(
    studio: Studio, job_id: int, stop: Callable[[], None], start: Callable[[], None]
) -> list[tuple[str, int]]:
    stop()
    try:
        return _probe_during(studio, job_id, OUTAGE_SECONDS)
    finally:
        start()


def _no_job_left_running(studio: Studio) -> None:
    jobs = studio.client.get("/api/jobs", headers=studio.account.headers).json()
    assert all(job["status"] in ENDED for job in jobs), [(j["id"], j["status"]) for j in jobs]


def _trains_to_the_end(studio: Studio, job_id: int) -> dict:
    done = wait_for_job(studio.client, studio.account, job_id, timeout=240)
    assert done["status"] == "succeeded", done["error"]
    assert done["attempt"] == 1  # ridden out, not lost and requeued
    steps = metric_steps(studio.client, studio.account, job_id)
    assert steps == list(range(1, MAX_STEPS + 1))
    return done


def test_a_redis_restart_mid_run(studio: Studio, servers: Servers, dataset_id: int) -> None:
    _, redis = servers
    body = job_body("tiny-llama", dataset_id, None, max_steps=MAX_STEPS, save_steps=20)
    job_id = submit(studio.client, studio.account, body)
    wait_for_steps(studio.client, studio.account, job_id, 3)
    # queued behind it: its message is in Redis, which restarts empty (no persistence)
    waiting = submit(
        studio.client, studio.account, job_body("tiny-llama", dataset_id, None, max_steps=2)
    )

    answers = _outage(studio, job_id, redis.stop, redis.start)
    assert {status for _, status in answers} == {200}, answers  # the API reads no broker

    _trains_to_the_end(studio, job_id)
    # the worker found Redis's mark gone and sent what was queued again
    assert wait_for_job(studio.client, studio.account, waiting)["status"] == "succeeded"
    # the worker reconnected: a job queued after the restart runs
    after = submit(
        studio.client, studio.account, job_body("tiny-llama", dataset_id, None, max_steps=2)
    )
    assert wait_for_job(studio.client, studio.account, after)["status"] == "succeeded"
    _no_job_left_running(studio)


def test_a_postgres_restart_mid_run(studio: Studio, servers: Servers, dataset_id: int) -> None:
    postgres, _ = servers
    # a save every 4 steps: one at least falls in the outage and waits for the database
    body = job_body("tiny-llama", dataset_id, None, max_steps=MAX_STEPS, save_steps=4,
                    save_total_limit=100)  # fmt: skip
    job_id = submit(studio.client, studio.account, body)
    wait_for_steps(studio.client, studio.account, job_id, 3)
    before = read_job(studio.client, studio.account, job_id)["progress"]["step"]

    answers = _outage(studio, job_id, postgres.stop, postgres.start)
    statuses = {status for _, status in answers}
    assert statuses <= {200, 503}, answers  # refused with Retry-After, never a server error
    assert 503 in statuses  # the outage was seen

    _trains_to_the_end(studio, job_id)
    saved = [c["step"] for c in checkpoints(studio.client, studio.account, job_id)]
    assert saved == [*range(4, MAX_STEPS + 1, 4), MAX_STEPS]  # every save recorded, and final
    assert before < MAX_STEPS - 8  # the outage was mid-run, with saves after it
    _no_job_left_running(studio)


def test_a_job_submitted_while_redis_is_down_is_refused_and_nothing_runs(
    studio: Studio, servers: Servers, dataset_id: int
) -> None:
    _, redis = servers
    body = job_body("tiny-llama", dataset_id, None, max_steps=2)
    redis.stop()
    try:
        response = studio.client.post("/api/jobs", headers=studio.account.headers, json=body)
    except httpx.HTTPError as exc:  # pragma: no cover - a hang is a failure too
        pytest.fail(f"no answer: {exc}")
    finally:
        redis.start()
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) > 0
    assert "nothing was queued" in response.json()["detail"]
    # the job it had committed ended failed, saying why: a retry cannot run it twice
    jobs = studio.client.get("/api/jobs", headers=studio.account.headers).json()
    unsent = [job for job in jobs if job["status"] == "failed" and "not queued" in job["error"]]
    assert len(unsent) == 1, jobs
    # the worker reconnected: submitted again, it runs
    again = submit(studio.client, studio.account, body)
    assert wait_for_job(studio.client, studio.account, again, timeout=120)["status"] == "succeeded"
    _no_job_left_running(studio)
