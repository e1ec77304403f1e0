"""Where a job's wall clock goes: every phase from submit to the saved model is recorded and
served; a second run on the same data takes its tokenized rows from the cache and trains the
same steps to the same losses (issue 13)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Account
from tests.support.datasets import alpaca_demo, upload_bytes
from tests.support.jobs import submit_job, wait_for_job

pytestmark = pytest.mark.worker

HYPER = {"max_steps": 3, "logging_steps": 1, "max_length": 128, "per_device_train_batch_size": 2}
PHASES = [
    "queued",
    "starting",
    "imports",
    "model load",
    "data preparation",
    "first step",
    "training",
    "saving",
    "stop check",
]


def _run(client, alice: Account, model: str, dataset_id: int) -> dict:
    job = submit_job(client, alice, base_model=model, dataset_id=dataset_id, hyperparameters=HYPER)
    done = wait_for_job(client, alice, job["id"])
    assert done["status"] == "succeeded", done["error"]
    return done


def test_phases_are_recorded_and_a_second_run_reads_the_tokenized_cache(
    client, alice: Account, worker, tiny_model: str
) -> None:
    records = json.loads(alpaca_demo().read_text())[:24]
    dataset_id = upload_bytes(client, alice, "phases.json", json.dumps(records).encode())
    first = _run(client, alice, tiny_model, dataset_id)
    # model load and data preparation overlap, so either may end first
    names = [p["phase"] for p in first["phases"]]
    assert sorted(names) == sorted(PHASES) and names[:3] == PHASES[:3]
    assert all(p["seconds"] >= 0 and p["started_at"] for p in first["phases"])
    phase = {p["phase"]: p for p in first["phases"]}
    assert phase["data preparation"]["cached"] is False
    assert phase["training"]["steps"] == 3 and phase["stop check"]["prompts"] == 4
    assert [e for e in first["events"] if e["kind"] == "phase"]  # served with the events

    second = _run(client, alice, tiny_model, dataset_id)
    again = {p["phase"]: p for p in second["phases"]}
    assert again["data preparation"]["cached"] is True
    assert again["data preparation"]["sequences"] == phase["data preparation"]["sequences"]
    losses = [
        [
            m["loss"]
            for m in client.get(f"/api/jobs/{j['id']}/metrics", headers=alice.headers).json()
        ]
        for j in (first, second)
    ]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5) and len(losses[0]) == 3

    changed = submit_job(
        client,
        alice,
        base_model=tiny_model,
        dataset_id=dataset_id,
        hyperparameters=HYPER | {"max_length": 96},
    )
    third = wait_for_job(client, alice, changed["id"])
    prepared = next(p for p in third["phases"] if p["phase"] == "data preparation")
    assert prepared["cached"] is False  # another max_length: encoded anew
