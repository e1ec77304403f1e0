"""Runs shared by the chaining/resume API tests and their browser test (tests/e2e): a short
SFT run on datasets.SFT_ROWS (so it makes the chosen answers of datasets.PAIRS likely), long
rows, and a run cancelled after it saved a checkpoint."""

from __future__ import annotations

import time

from tests.support.accounts import Account
from tests.support.jobs import checkpoints, submit_job, wait_for_job

LONG_ROWS = [
    {
        "messages": [
            {"role": "user", "content": f"Count from {i} to {i + 40}."},
            {"role": "assistant", "content": " ".join(map(str, range(i, i + 41)))},
        ]
    }
    for i in range(32)
]
COMMON = {
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.0,
    "max_length": 64,
    "warmup_steps": 0,
    "logging_steps": 1,
    "seed": 3,
}
# Every step logged, a checkpoint every 3 steps, a linear decay to check the schedule resumes.
# Long enough that a cancel sent once the first checkpoint exists lands well before the end
# (a step takes tens of milliseconds at the fastest; the callback polls the cancel flag twice a
# second), short enough for the resumed run to finish quickly.
RESUMABLE = {
    **COMMON,
    "learning_rate": 1e-3,
    "lr_scheduler_type": "linear",
    "per_device_train_batch_size": 2,
    "save_steps": 3,
    "save_total_limit": 2,
}
RESUMABLE_MAX_STEPS = 90
TIMEOUT = 600  # seconds for one run, on a busy 2-core machine


def sft_run(client, account: Account, model: str, dataset_id: int) -> dict:
    """A finished SFT + LoRA run that learned the chosen answers (lr 1e-2, 12 steps)."""
    hyper = {
        **COMMON,
        "learning_rate": 1e-2,
        "lr_scheduler_type": "constant",
        "max_steps": 12,
        "per_device_train_batch_size": 8,
        "save_steps": 1000,
    }
    job = submit_job(
        client, account, base_model=model, dataset_id=dataset_id, hyperparameters=hyper
    )
    finished = wait_for_job(client, account, job["id"], timeout=TIMEOUT)
    assert finished["status"] == "succeeded", finished["error"]
    return finished


def cancelled_after_a_checkpoint(client, account: Account, model: str, dataset_id: int) -> dict:
    """An SFT run cancelled once it has saved a checkpoint, well before its last step."""
    job = submit_job(
        client,
        account,
        base_model=model,
        dataset_id=dataset_id,
        hyperparameters={**RESUMABLE, "max_steps": RESUMABLE_MAX_STEPS},
    )
    deadline = time.monotonic() + 300
    while not checkpoints(client, account, job["id"]):
        assert time.monotonic() < deadline, "no checkpoint was saved"
        time.sleep(0.1)
    response = client.post(f"/api/jobs/{job['id']}/cancel", headers=account.headers)
    assert response.status_code == 200, response.text
    stopped = wait_for_job(client, account, job["id"], timeout=300)
    assert stopped["status"] == "cancelled", stopped
    assert stopped["progress"]["step"] < RESUMABLE_MAX_STEPS, "the run ended before the cancel"
    return stopped
