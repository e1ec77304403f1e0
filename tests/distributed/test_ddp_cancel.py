"""Cancelling a two-process run (issue 12): rank 0 sees the cancel, both ranks stop at the same
step (no rank left waiting on the other), the job ends cancelled and no process of it is left."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Account
from tests.support.jobs import checkpoints, wait_for, wait_for_job
from tests.support.runs import upload_counting

pytestmark = pytest.mark.worker


def test_a_cancelled_two_process_run_stops_every_rank(
    client, alice: Account, worker: Path, tiny_model: str
) -> None:
    from worker.job_processes import marked_processes, marker

    dataset_id = upload_counting(client, alice, "ddp-cancel.jsonl")
    body = {
        "base_model": tiny_model,
        "dataset_id": dataset_id,
        "hyperparameters": {
            "max_steps": 2000,
            "logging_steps": 1,
            "save_steps": 5,
            "max_length": 64,
            "per_device_train_batch_size": 2,
            "num_devices": 2,
        },
    }
    created = client.post("/api/jobs", headers=alice.headers, json=body)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    wait_for(lambda: checkpoints(client, alice, job_id), 300, "a first checkpoint")
    assert len(marked_processes(marker(job_id, 1))) >= 3  # torchrun and its two ranks

    cancel = client.post(f"/api/jobs/{job_id}/cancel", headers=alice.headers)
    assert cancel.status_code == 200
    ended = wait_for_job(client, alice, job_id, timeout=120)
    assert ended["status"] == "cancelled", ended["error"]
    assert ended["progress"]["step"] < 2000
    assert marked_processes(marker(job_id, 1)) == []
    log = client.get(f"/api/jobs/{job_id}/logs", headers=alice.headers, params={"tail": 400})
    # the ranks stopped by themselves (the supervisor's SIGTERM after the grace period would
    # show as torchrun's "Received Signals.SIGTERM")
    assert "SIGTERM" not in log.text
