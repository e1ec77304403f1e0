"""Online RL on the tiny model with a real worker: GRPO raises the mean of an easily learnable
rule reward; PPO runs end to end with a reward model from a reward run and logs score and KL."""

from __future__ import annotations

import json
from pathlib import Path
from statistics import mean

import pytest

from tests.conftest import Account, wait_for_job

pytestmark = pytest.mark.worker


def _upload(client, account: Account, name: str, rows: list[dict], kind: str) -> int:
    response = client.post(
        "/api/datasets",
        headers=account.headers,
        files={"file": (name, json.dumps(rows).encode())},
        data={"kind": kind},
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _metrics(client, account: Account, job_id: int) -> list[dict]:
    return client.get(f"/api/jobs/{job_id}/metrics", headers=account.headers).json()


def _values(metrics: list[dict], key: str) -> list[float]:
    found = []
    for m in metrics:
        value = m.get(key, (m.get("values") or {}).get(key))
        if isinstance(value, int | float):
            found.append(float(value))
    return found


PROMPTS = [
    {"instruction": f"Say something about {w}.", "output": w} for w in ("sun", "sea", "sky", "ice")
]


def test_grpo_raises_a_learnable_rule_reward(
    client, alice: Account, worker: Path, tiny_model: str
) -> None:
    dataset_id = _upload(client, alice, "prompts.json", PROMPTS * 4, "prompt")
    body = {
        "base_model": tiny_model,
        "dataset_id": dataset_id,
        "method": "grpo",
        "adapter": "full",
        "hyperparameters": {
            # Short answers score higher: a random model varies in the characters per token,
            # so the group advantages carry a signal from the first step.
            "reward_functions": [{"type": "length", "target": 20}],
            "num_generations": 8,
            "per_device_train_batch_size": 8,
            "max_completion_length": 6,
            "learning_rate": 3e-2,
            "warmup_steps": 0,
            "beta": 0.001,
            "max_steps": 30,
            "logging_steps": 1,
            "save_steps": 1000,
            "seed": 3,
        },
    }
    created = client.post("/api/jobs", headers=alice.headers, json=body)
    assert created.status_code == 201, created.text
    job = wait_for_job(client, alice, created.json()["id"], timeout=900)
    assert job["status"] == "succeeded", job["error"]
    rewards = _values(_metrics(client, alice, job["id"]), "reward")
    assert len(rewards) == 30
    assert mean(rewards[-10:]) > mean(rewards[:5]) + 0.2, rewards


def test_ppo_with_a_reward_run_logs_score_and_kl(
    client, alice: Account, worker: Path, tiny_model: str
) -> None:
    pairs = [
        {"instruction": p["instruction"], "chosen": "Nice and warm.", "rejected": "No."}
        for p in PROMPTS
    ]
    preference_id = _upload(client, alice, "pairs.json", pairs * 2, "preference")
    reward_job = client.post(
        "/api/jobs",
        headers=alice.headers,
        json={
            "base_model": tiny_model,
            "dataset_id": preference_id,
            "method": "reward",
            "adapter": "lora",
            "hyperparameters": {"max_steps": 2, "logging_steps": 1, "max_length": 64},
        },
    ).json()
    assert wait_for_job(client, alice, reward_job["id"])["status"] == "succeeded"
    reward_checkpoint = client.get(
        f"/api/jobs/{reward_job['id']}/checkpoints", headers=alice.headers
    ).json()[-1]

    prompts_id = _upload(client, alice, "ppo-prompts.json", PROMPTS * 2, "prompt")
    ppo = client.post(
        "/api/jobs",
        headers=alice.headers,
        json={
            "base_model": tiny_model,
            "dataset_id": prompts_id,
            "method": "ppo",
            "adapter": "lora",
            "hyperparameters": {
                "reward_checkpoint_id": reward_checkpoint["id"],
                "max_steps": 2,
                "logging_steps": 1,
                "per_device_train_batch_size": 2,
                "max_completion_length": 8,
                "num_ppo_epochs": 1,
            },
        },
    )
    assert ppo.status_code == 201, ppo.text
    job = wait_for_job(client, alice, ppo.json()["id"], timeout=900)
    assert job["status"] == "succeeded", job["error"]
    metrics = _metrics(client, alice, job["id"])
    assert _values(metrics, "objective/scores") and _values(metrics, "objective/kl")
    checkpoints = client.get(f"/api/jobs/{job['id']}/checkpoints", headers=alice.headers).json()
    assert checkpoints[-1]["is_final"]


def test_a_reward_checkpoint_must_come_from_a_reward_run(
    client, alice: Account, worker: Path, tiny_model: str
) -> None:
    sft_id = _upload(client, alice, "sft.json", PROMPTS, "sft")
    sft = client.post(
        "/api/jobs",
        headers=alice.headers,
        json={
            "base_model": tiny_model,
            "dataset_id": sft_id,
            "hyperparameters": {"max_steps": 1, "logging_steps": 1},
        },
    ).json()
    assert wait_for_job(client, alice, sft["id"])["status"] == "succeeded"
    checkpoint = client.get(f"/api/jobs/{sft['id']}/checkpoints", headers=alice.headers).json()[-1]
    prompts_id = _upload(client, alice, "p.json", PROMPTS, "prompt")
    refused = client.post(
        "/api/jobs",
        headers=alice.headers,
        json={
            "base_model": tiny_model,
            "dataset_id": prompts_id,
            "method": "ppo",
            "hyperparameters": {"reward_checkpoint_id": checkpoint["id"]},
        },
    )
    assert refused.status_code == 422
    assert "not a reward model" in json.dumps(refused.json())
