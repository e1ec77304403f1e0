"""Side by side, the blind arena and the playground through the API, with a real worker: a base
model and a checkpoint trained to answer "Blue." answer the same prompts (greedy decoding: the
checkpoint starts with "Blue.", the random base does not), votes give win rates and a preference
dataset a DPO run accepts."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from app.db import session_scope
from app.models import ArenaPair, Generation
from tests.conftest import Account, wait_for_job
from tests.support.jobs import wait_until_ended

pytestmark = pytest.mark.worker

PROMPTS = ["Name a colour.", "Name a fruit.", "Name an animal."]
ANSWER = "Blue."


@pytest.fixture(scope="module")
def checkpoint_id(client, alice: Account, worker: Path, tiny_model: str) -> int:
    rows = [{"instruction": p, "output": ANSWER} for p in PROMPTS * 4]
    upload = client.post(
        "/api/datasets",
        headers=alice.headers,
        files={"file": ("cmp.json", json.dumps(rows).encode())},
    )
    body = {
        "base_model": tiny_model,
        "dataset_id": upload.json()["id"],
        # Enough LoRA steps at a high rate that every prompt is answered ANSWER (repeated: the
        # end of the turn is not learned that fast).
        "hyperparameters": {
            "max_steps": 30,
            "logging_steps": 5,
            "max_length": 64,
            "learning_rate": 1e-2,
            "lr_scheduler_type": "constant",
            "warmup_steps": 0,
            "per_device_train_batch_size": 4,
            "lora_r": 16,
            "lora_alpha": 32,
            "lora_dropout": 0.0,
            "seed": 3,
        },
    }
    job = client.post("/api/jobs", headers=alice.headers, json=body).json()
    assert wait_for_job(client, alice, job["id"])["status"] == "succeeded"
    checkpoints = client.get(f"/api/jobs/{job['id']}/checkpoints", headers=alice.headers).json()
    return checkpoints[-1]["id"]


@pytest.fixture(scope="module")
def comparison(client, alice: Account, checkpoint_id: int) -> dict:
    created = client.post(
        "/api/comparisons",
        headers=alice.headers,
        json={
            "checkpoint_ids": [checkpoint_id],
            "include_base": True,
            "prompts": PROMPTS,
            "max_new_tokens": 12,
        },
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert [o["status"] for o in body["outputs"]] == ["queued"] * 6
    return wait_until_ended(client, alice, f"/api/comparisons/{body['id']}")


def test_every_model_answers_every_prompt(comparison: dict, checkpoint_id: int) -> None:
    assert comparison["status"] == "succeeded", comparison["error"]
    keys = [m["key"] for m in comparison["models"]]
    assert keys[1] == f"checkpoint:{checkpoint_id}" and keys[0].startswith("base:")
    cells = {(o["prompt_index"], o["model"]) for o in comparison["outputs"]}
    assert cells == {(i, k) for i in range(3) for k in keys}
    assert all(
        o["status"] == "succeeded" and isinstance(o["stopped"], bool) for o in comparison["outputs"]
    )
    # The trained checkpoint learned its one answer (greedy decoding); the base model did not.
    answers = {(o["model"], o["prompt_index"]): o for o in comparison["outputs"]}
    for index in range(len(PROMPTS)):
        trained, base = answers[keys[1], index], answers[keys[0], index]
        assert trained["text"].strip().startswith(ANSWER), trained
        assert not base["text"].strip().startswith(ANSWER), base


def test_the_stream_replays_the_answers_and_ends(
    live_server: str, alice: Account, comparison: dict
) -> None:
    url = f"{live_server}/api/comparisons/{comparison['id']}/events"
    events: list[tuple[str, dict]] = []
    with httpx.stream("GET", url, headers=alice.headers, timeout=30) as response:
        event = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                events.append((event, json.loads(line[6:])))
                if event == "end":
                    break
    outputs = {d["id"]: d["text"] for e, d in events if e == "output"}
    assert outputs == {o["id"]: o["text"] for o in comparison["outputs"]}
    assert events[-1] == ("end", {"status": "succeeded"})


def test_arena_pairs_are_blind_votes_give_win_rates_and_a_dataset(
    client, alice: Account, bob: Account, comparison: dict, checkpoint_id: int
) -> None:
    pairs = comparison["pairs"]
    assert len(pairs) == 3 and all(p["ready"] for p in pairs)
    assert not {"model", "a_model", "b_model"} & set(pairs[0])  # identities are hidden
    url = f"/api/comparisons/{comparison['id']}/votes"
    choices = ["a", "b", "tie"]
    for pair, choice in zip(pairs, choices, strict=True):
        voted = client.post(
            url, headers=alice.headers, json={"pair_id": pair["id"], "choice": choice}
        )
        assert voted.status_code == 200
    bad = client.post(url, headers=alice.headers, json={"pair_id": pairs[0]["id"], "choice": "c"})
    assert bad.status_code == 422
    assert (
        client.post(
            url, headers=bob.headers, json={"pair_id": pairs[0]["id"], "choice": "a"}
        ).status_code
        == 404
    )

    # An independent tally from the hidden assignment in the database.
    with session_scope() as session:
        model_of = {
            g.id: g.model_key
            for g in session.query(Generation).filter_by(comparison_id=comparison["id"])
        }
        stored = {
            p.id: p for p in session.query(ArenaPair).filter_by(comparison_id=comparison["id"])
        }
        expected: dict[str, list[int]] = {k: [0, 0, 0] for k in set(model_of.values())}
        winners = []
        for pair, choice in zip(pairs, choices, strict=True):
            a, b = (
                model_of[stored[pair["id"]].a_generation_id],
                model_of[stored[pair["id"]].b_generation_id],
            )
            if choice == "tie":
                expected[a][2] += 1
                expected[b][2] += 1
            else:
                winner, loser = (a, b) if choice == "a" else (b, a)
                expected[winner][0] += 1
                expected[loser][1] += 1
                winners.append(pair["a"] if choice == "a" else pair["b"])
    rates = client.get(f"/api/comparisons/{comparison['id']}", headers=alice.headers).json()[
        "win_rates"
    ]
    for rate in rates:
        wins, losses, ties = expected[rate["model"]]
        assert (rate["wins"], rate["losses"], rate["ties"]) == (wins, losses, ties)
        assert rate["win_rate"] == pytest.approx((wins + 0.5 * ties) / 3)

    made = client.post(f"/api/comparisons/{comparison['id']}/dataset", headers=alice.headers)
    assert made.status_code == 201, made.text
    dataset = made.json()
    assert dataset["kind"] == "preference" and dataset["num_rows"] == 2
    rows = client.get(f"/api/datasets/{dataset['id']}/rows", headers=alice.headers).json()["rows"]
    chosen = [row["chosen"][0]["content"] for row in rows]
    assert chosen == winners
    estimate = client.post(
        "/api/jobs/estimate",
        headers=alice.headers,
        json={"method": "dpo", "parent_checkpoint_id": checkpoint_id, "dataset_id": dataset["id"]},
    )
    assert estimate.status_code == 200, estimate.text


def test_a_comparison_needs_prompts_and_owned_checkpoints(
    client, alice: Account, bob: Account, checkpoint_id: int
) -> None:
    no_prompts = client.post(
        "/api/comparisons", headers=alice.headers, json={"checkpoint_ids": [checkpoint_id]}
    )
    assert no_prompts.status_code == 422 and "prompts" in no_prompts.json()["detail"]
    stolen = client.post(
        "/api/comparisons",
        headers=bob.headers,
        json={"checkpoint_ids": [checkpoint_id], "prompts": ["hi"]},
    )
    assert stolen.status_code == 422 and "no checkpoint" in stolen.json()["detail"]


def _playground(client, alice: Account, model: str) -> dict:
    created = client.post(
        "/api/playground",
        headers=alice.headers,
        json={
            "model": model,
            "messages": [
                {"role": "user", "content": "Name a colour."},
                {"role": "assistant", "content": ANSWER},
                {"role": "user", "content": "Name a fruit."},
            ],
            "max_new_tokens": 6,
        },
    )
    assert created.status_code == 201, created.text
    answer = wait_until_ended(client, alice, f"/api/generations/{created.json()['id']}")
    assert answer["status"] == "succeeded", answer
    return answer


def test_playground_answers_a_conversation(
    client, alice: Account, checkpoint_id: int, comparison: dict
) -> None:
    trained = _playground(client, alice, f"checkpoint:{checkpoint_id}")
    base = _playground(client, alice, comparison["models"][0]["key"])
    assert trained["text"].strip().startswith(ANSWER), trained
    assert base["text"] != trained["text"] and not base["text"].strip().startswith(ANSWER), base
    refused = client.post(
        "/api/playground",
        headers=alice.headers,
        json={
            "model": f"checkpoint:{checkpoint_id}",
            "messages": [{"role": "assistant", "content": "x"}],
        },
    )
    assert refused.status_code == 422
