"""Online RL on the tiny model with a real worker: GRPO raises the mean of an easily learnable
rule reward; PPO from an SFT checkpoint raises the score of a reward model from a reward run."""

from __future__ import annotations

import json
from pathlib import Path
from statistics import mean

import pytest

from tests.conftest import Account, wait_for_job
from tests.support.datasets import upload_rows
from tests.support.jobs import checkpoints, metric_values, metrics

pytestmark = pytest.mark.worker


PROMPTS = [
    {"instruction": f"Say something about {w}.", "output": w} for w in ("sun", "sea", "sky", "ice")
]
PPO_STEPS = 8


def test_grpo_raises_a_learnable_rule_reward(
    client, alice: Account, worker: Path, tiny_model: str
) -> None:
    dataset_id = upload_rows(client, alice, "prompt", PROMPTS * 4)
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
    rewards = metric_values(metrics(client, alice, job["id"]), "reward")
    assert len(rewards) == 30
    assert mean(rewards[-10:]) > mean(rewards[:5]) + 0.2, rewards


GOOD, BAD = "Nice and warm.", "No."


def _finished(client, account: Account, **body) -> dict:
    created = client.post("/api/jobs", headers=account.headers, json=body)
    assert created.status_code == 201, created.text
    job = wait_for_job(client, account, created.json()["id"], timeout=900)
    assert job["status"] == "succeeded", job["error"]
    return job


def _final_checkpoint(client, account: Account, job: dict) -> int:
    final = checkpoints(client, account, job["id"])[-1]
    assert final["is_final"]
    return final["id"]


def test_ppo_raises_the_reward_models_score(
    client, alice: Account, worker: Path, tiny_model: str
) -> None:
    """An SFT policy answers GOOD or BAD about equally often; a reward run learns GOOD > BAD;
    PPO from the SFT checkpoint shifts the policy to GOOD, so the score of its answers rises."""
    fixed = {"lr_scheduler_type": "constant", "warmup_steps": 0, "seed": 3, "logging_steps": 1}
    both = [{"instruction": p["instruction"], "output": a} for p in PROMPTS for a in (GOOD, BAD)]
    sft = _finished(
        client,
        alice,
        base_model=tiny_model,
        dataset_id=upload_rows(client, alice, "sft", both * 2),
        adapter="full",
        hyperparameters={
            **fixed,
            "max_steps": 30,
            "per_device_train_batch_size": 8,
            "learning_rate": 1e-2,
            "max_length": 64,
        },
    )
    pairs = [{"instruction": p["instruction"], "chosen": GOOD, "rejected": BAD} for p in PROMPTS]
    reward = _finished(
        client,
        alice,
        base_model=tiny_model,
        dataset_id=upload_rows(client, alice, "preference", pairs * 2),
        method="reward",
        adapter="full",
        hyperparameters={
            **fixed,
            "max_steps": 10,
            "per_device_train_batch_size": 4,
            "learning_rate": 1e-3,
            "max_length": 64,
        },
    )
    margins = metric_values(metrics(client, alice, reward["id"]), "margin")
    assert margins[-1] > 1, margins

    ppo = _finished(
        client,
        alice,
        base_model=tiny_model,
        parent_checkpoint_id=_final_checkpoint(client, alice, sft),
        dataset_id=upload_rows(client, alice, "prompt", PROMPTS * 2),
        method="ppo",
        adapter="full",
        hyperparameters={
            **fixed,
            "reward_checkpoint_id": _final_checkpoint(client, alice, reward),
            "max_steps": PPO_STEPS,
            "per_device_train_batch_size": 8,
            "max_completion_length": 8,
            "num_ppo_epochs": 2,
            "temperature": 0.7,
            "learning_rate": 2e-3,
            "kl_coef": 0.01,
        },
    )
    logged = metrics(client, alice, ppo["id"])
    scores = metric_values(logged, "objective/scores")
    assert len(scores) == PPO_STEPS and metric_values(logged, "objective/kl")
    # A policy fully moved to GOOD would gain half the reward margin (it starts about half way);
    # measured here: the mean score of the last three steps beats the first three by ~a quarter.
    assert mean(scores[-3:]) > mean(scores[:3]) + margins[-1] / 5, scores
    _final_checkpoint(client, alice, ppo)


def test_a_reward_checkpoint_must_come_from_a_reward_run(
    client, alice: Account, worker: Path, tiny_model: str
) -> None:
    sft_id = upload_rows(client, alice, "sft", PROMPTS)
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
    checkpoint = checkpoints(client, alice, sft["id"])[-1]
    prompts_id = upload_rows(client, alice, "prompt", PROMPTS)
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
