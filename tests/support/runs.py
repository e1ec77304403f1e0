"""Helpers shared by the runs tests and the runs browser test (tests/e2e): a dataset, job
submission, and two short trainings that differ only in learning rate, trained once per test
session however many folders ask for them (each costs ~10 s of imports)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from tests.support.accounts import Account
from tests.support.datasets import upload_bytes
from tests.support.jobs import submit_job, wait_for_job

ROWS = "\n".join(
    json.dumps({"instruction": f"Count to {i}.", "output": " ".join(map(str, range(1, i + 2)))})
    for i in range(40)
).encode()
MAX_STEPS = 6
LEARNING_RATES = (1e-3, 5e-4)


@dataclass
class TwoRuns:
    dataset_id: int
    ids: list[int]
    model: str


_TRAINED: list[TwoRuns] = []


def upload_counting(client, account: Account, name: str = "count.jsonl") -> int:
    """The counting rows (ROWS) as a dataset; returns its id."""
    return upload_bytes(client, account, name, ROWS)


def submit_run(client, account: Account, model: str, dataset_id: int, **hyperparameters) -> dict:
    """A short SFT run on the counting rows; ``hyperparameters`` override the defaults."""
    return submit_job(
        client,
        account,
        base_model=model,
        dataset_id=dataset_id,
        hyperparameters={
            "max_steps": MAX_STEPS,
            "logging_steps": 1,
            "save_steps": 100_000,
            "per_device_train_batch_size": 2,
            "max_length": 64,
            **hyperparameters,
        },
    )


def two_trained_runs(client, alice: Account, model: str) -> TwoRuns:
    """Needs the session's worker running. Trains on the first call, then returns the same."""
    if _TRAINED:
        return _TRAINED[0]
    dataset_id = upload_counting(client, alice)
    jobs = [submit_run(client, alice, model, dataset_id, learning_rate=lr) for lr in LEARNING_RATES]
    for job in jobs:
        final = wait_for_job(client, alice, job["id"], timeout=300)
        assert final["status"] == "succeeded", final["error"]
    _TRAINED.append(TwoRuns(dataset_id, [j["id"] for j in jobs], model))
    return _TRAINED[0]
