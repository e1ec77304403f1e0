"""Cancelling queued and running jobs, and the live event stream while a job runs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Account, wait_for_job
from tests.support.jobs import wait_for
from tests.support.runs import submit_run, upload_counting

pytestmark = pytest.mark.worker


@pytest.fixture(scope="module")
def dataset_id(client, alice: Account) -> int:
    return upload_counting(client, alice)


def _sse_events(
    url: str, token: str, headers: dict | None = None, limit: int = 3
) -> Iterator[tuple[str, dict, str]]:
    """Read (event, data, id) triples from the live server's stream."""
    request_headers = {"Authorization": f"Bearer {token}", **(headers or {})}
    with httpx.stream("GET", url, headers=request_headers, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event, data, event_id, seen = "message", "", "", 0
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line.startswith("id: "):
                event_id = line[4:]
            elif line == "" and data:
                yield event, json.loads(data), event_id
                event, data, event_id = "message", "", ""
                seen += 1
                if seen >= limit:
                    return


def test_cancel_queued_and_running_jobs_and_the_worker_is_freed(
    client,
    alice: Account,
    worker: Path,
    tiny_model: str,
    dataset_id: int,
    live_server: str,
) -> None:
    running = submit_run(client, alice, tiny_model, dataset_id, max_steps=100_000)
    queued = submit_run(client, alice, tiny_model, dataset_id, max_steps=5)

    def has_metrics() -> bool:
        return (
            len(client.get(f"/api/jobs/{running['id']}/metrics", headers=alice.headers).json()) >= 3
        )

    wait_for(has_metrics, 180, "the running job's first metrics", interval=0.3)

    # The live stream while running: metric events carry the metric id; resuming skips seen ones.
    # Job events (the run's start-up phases among them) come in the same stream.
    url = f"{live_server}/api/jobs/{running['id']}/events"
    first = [e for e in _sse_events(url, alice.token, limit=12) if e[0] == "metric"]
    assert len(first) >= 2
    assert all(e[2] == str(e[1]["id"]) and e[1]["loss"] is not None for e in first)
    resumed = next(
        e
        for e in _sse_events(url, alice.token, {"Last-Event-ID": first[-1][2]}, 16)
        if e[0] == "metric"
    )
    assert resumed[1]["id"] > first[-1][1]["id"]

    cancelled_while_queued = client.post(
        f"/api/jobs/{queued['id']}/cancel", headers=alice.headers
    ).json()
    assert cancelled_while_queued["status"] == "cancelled"
    assert cancelled_while_queued["started_at"] is None

    assert (
        client.post(f"/api/jobs/{running['id']}/cancel", headers=alice.headers).status_code == 200
    )
    final = wait_for_job(client, alice, running["id"], timeout=120)
    assert final["status"] == "cancelled" and final["error"] is None
    assert final["progress"]["step"] < 100_000
    checkpoints = client.get(f"/api/jobs/{running['id']}/checkpoints", headers=alice.headers).json()
    assert not any(c["is_final"] for c in checkpoints)

    # The stream of an ended job says so and closes.
    events = list(_sse_events(url, alice.token, {"Last-Event-ID": "999999999"}, limit=10))
    assert events[-1][0] == "end" and events[-1][1] == {"status": "cancelled"}

    assert (
        client.post(f"/api/jobs/{running['id']}/cancel", headers=alice.headers).status_code == 409
    )
    after = submit_run(client, alice, tiny_model, dataset_id, max_steps=3)
    assert wait_for_job(client, alice, after["id"])["status"] == "succeeded"
    assert wait_for_job(client, alice, queued["id"])["started_at"] is None


def test_rotated_checkpoints_are_forgotten(
    client,
    alice: Account,
    worker: Path,
    tiny_model: str,
    dataset_id: int,
) -> None:
    body = {
        "base_model": tiny_model,
        "dataset_id": dataset_id,
        "hyperparameters": {
            "max_steps": 4,
            "logging_steps": 1,
            "save_steps": 1,
            "save_total_limit": 1,
            "per_device_train_batch_size": 2,
            "max_length": 64,
        },
    }
    job = client.post("/api/jobs", headers=alice.headers, json=body).json()
    assert wait_for_job(client, alice, job["id"])["status"] == "succeeded"
    checkpoints = client.get(f"/api/jobs/{job['id']}/checkpoints", headers=alice.headers).json()
    assert [(c["step"], c["is_final"]) for c in checkpoints] == [(4, False), (4, True)]
