"""One job on two processes (torchrun, DDP over gloo on the CPU worker) trains as one process
would with the same sequences per step: 2 x 2 sequences give the losses of 1 x 4."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Account
from tests.support.datasets import alpaca_demo
from tests.support.jobs import metrics, submit_job, wait_for_job

pytestmark = pytest.mark.worker

ROWS = 48
HYPER = {
    "max_steps": 6,
    "logging_steps": 1,
    "save_steps": 1000,
    "learning_rate": 1e-3,
    "max_length": 128,
    "seed": 7,
    "lora_r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.0,
    "warmup_steps": 2,
    "lr_scheduler_type": "linear",
}


def _losses(client, account: Account, job_id: int) -> list[float]:
    return [m["loss"] for m in metrics(client, account, job_id)]


def test_two_processes_train_like_one_with_the_same_batch(
    client, alice: Account, worker: Path, tiny_model: str
) -> None:
    records = json.loads(alpaca_demo().read_text())[:ROWS]
    upload = client.post(
        "/api/datasets",
        headers=alice.headers,
        files={"file": ("ddp.json", json.dumps(records).encode())},
    )
    dataset_id = upload.json()["id"]
    single = submit_job(
        client,
        alice,
        base_model=tiny_model,
        dataset_id=dataset_id,
        hyperparameters={**HYPER, "per_device_train_batch_size": 4},
    )
    double = submit_job(
        client,
        alice,
        base_model=tiny_model,
        dataset_id=dataset_id,
        hyperparameters={**HYPER, "per_device_train_batch_size": 2, "num_devices": 2},
    )
    ended = wait_for_job(client, alice, single["id"])
    assert ended["status"] == "succeeded", ended["error"]
    ended = wait_for_job(client, alice, double["id"])
    assert ended["status"] == "succeeded", ended["error"]

    # the device, precision and attention the run resolved, with the trainer config
    config = ended["trainer_config"]
    assert (config["device"], config["precision"], config["attn_implementation"]) == (
        "cpu",
        "fp32",
        "sdpa",
    )
    assert config["requested_precision"] == "auto" and config["bf16"] is False
    launch = ended["launch"]
    assert (launch["processes"], launch["strategy"]) == (2, "ddp")
    assert launch["config"]["backend"] == "gloo"
    assert "--nproc-per-node=2" in launch["config"]["launcher"]
    one, two = _losses(client, alice, single["id"]), _losses(client, alice, double["id"])
    assert len(one) == len(two) == HYPER["max_steps"]  # rank 0 alone logged each step
    # the tolerance of tests/training/test_parity.py
    assert two[:2] == pytest.approx(one[:2], abs=1e-5)
    assert two == pytest.approx(one, rel=1e-3)
    # rank 0 alone wrote the final checkpoint record
    checkpoints = client.get(f"/api/jobs/{double['id']}/checkpoints", headers=alice.headers).json()
    assert [c["is_final"] for c in checkpoints].count(True) == 1
