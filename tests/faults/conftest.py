"""Shared by the fault tests: the rows they train on, a job submitted to one worker's device
class, and reading a job back."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RUN_DIR, Account
from tests.support.jobs import metrics, wait_for
from tests.support.runs import upload_counting

# Workers of these tests beat twice a second: a lost worker's job is requeued within ~6 s
# (12 missed beats) of its loss instead of 12 s.
FAST_BEATS = {"FTSTUDIO_HEARTBEAT_SECONDS": "0.5"}

BASE_HYPERPARAMETERS = {
    "logging_steps": 1,
    "per_device_train_batch_size": 2,
    "max_length": 64,
    "learning_rate": 1e-3,
    "stop_check_prompts": 0,
}


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model: str) -> Path:
    """The tiny model's folder, for the private studios to register too."""
    from app.db import session_scope
    from app.jobs import find_base_model

    with session_scope() as session:
        model = find_base_model(session, tiny_model)
        assert model is not None
        return Path(model.path)


@pytest.fixture(scope="session")
def counting_dataset(client, alice: Account) -> int:
    return upload_counting(client, alice, "faults-count.jsonl")


def new_device_class(fault: str) -> tuple[str, Path]:
    """A device class no other test's worker has (its jobs reach only this test's workers), and
    the log file its workers share."""
    device_class = f"faults-{fault}-{uuid.uuid4().hex[:6]}"
    return device_class, RUN_DIR / f"worker-{device_class}.log"


def submit(client, account: Account, body: dict[str, Any]) -> int:
    response = client.post("/api/jobs", headers=account.headers, json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def job_body(model: str, dataset_id: int, device_class: str | None, **hyper: Any) -> dict:
    return {
        "base_model": model,
        "dataset_id": dataset_id,
        "device_class": device_class,
        "hyperparameters": {**BASE_HYPERPARAMETERS, **hyper},
    }


def read_job(client, account: Account, job_id: int) -> dict:
    return client.get(f"/api/jobs/{job_id}", headers=account.headers).json()


def metric_steps(client, account: Account, job_id: int) -> list[int]:
    return [row["step"] for row in metrics(client, account, job_id)]


def wait_for_steps(client, account: Account, job_id: int, steps: int, timeout: float = 180) -> None:
    """Until the job has stored ``steps`` metric rows; fails at once if it ends first."""

    def trained() -> bool:
        job = read_job(client, account, job_id)
        assert job["status"] in ("queued", "running"), job["error"]
        return len(metric_steps(client, account, job_id)) >= steps

    wait_for(trained, timeout, f"{steps} steps of job {job_id}", interval=0.5)
