"""Each training method trains the tiny model through the real API and worker, and does what it
claims on small planted data.

One job per method (LoRA r 16 at lr 1e-2, a few steps), all queued at once. Pretrain lowers the
loss on its text; DPO, ORPO, SimPO and KTO raise the chosen-over-rejected margin TRL logs
(``rewards/margins``, stored under TRL's name); the reward model, loaded from its saved
checkpoint here, ranks held-in planted pairs correctly more than 90 % of the time.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from app.db import session_scope
from app.jobs import find_base_model
from app.settings import get_settings
from tests.conftest import Account, wait_for_job
from tests.support.datasets import upload_rows
from tests.support.jobs import loss_rows

pytestmark = pytest.mark.worker

COLOURS = ("green", "blue", "yellow", "purple", "orange", "white", "black", "pink")


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


# Separable pairs: the chosen answer always agrees politely, the rejected one always refuses.
PAIRS = [
    {
        "prompt": _user(f"Name something {colour}, please ({i})."),
        "chosen": _assistant(f"Gladly! A {colour} thing: a {colour} flower."),
        "rejected": _assistant("No. No. No. No."),
    }
    for i, colour in enumerate(COLOURS * 2)
]
KTO_ROWS = [
    {"messages": pair["prompt"] + pair[answer], "label": answer == "chosen"}
    for pair in PAIRS
    for answer in ("chosen", "rejected")
]
TEXT_ROWS = [
    {"text": f"The studio trains models. Line {i}: alpha bravo charlie delta echo foxtrot."}
    for i in range(16)
]
DATASETS = {"text": TEXT_ROWS, "preference": PAIRS, "kto": KTO_ROWS}

COMMON = {
    "learning_rate": 1e-2,
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.0,
    "per_device_train_batch_size": 4,
    "max_length": 64,
    "warmup_steps": 0,
    "lr_scheduler_type": "constant",
    "logging_steps": 1,
    "save_steps": 1000,
    "seed": 5,
}
METHODS = {
    "pretrain": ("text", {"max_steps": 8}),
    "dpo": ("preference", {"max_steps": 8, "beta": 0.1}),
    "orpo": ("preference", {"max_steps": 8, "beta": 1.0}),
    "simpo": ("preference", {"max_steps": 8, "beta": 2.0, "simpo_gamma": 0.5}),
    "kto": ("kto", {"max_steps": 8, "beta": 0.1}),
    "reward": ("preference", {"max_steps": 12}),
}


@pytest.fixture(scope="module")
def datasets(client, alice: Account) -> dict[str, int]:
    return {kind: upload_rows(client, alice, kind, rows) for kind, rows in DATASETS.items()}


def _body(tiny_model: str, datasets: dict[str, int], method: str) -> dict:
    kind, hyper = METHODS[method]
    return {
        "base_model": tiny_model,
        "dataset_id": datasets[kind],
        "method": method,
        "adapter": "lora",
        "hyperparameters": {**COMMON, **hyper},
    }


@pytest.fixture(scope="module")
def finished(
    client, alice: Account, worker: Path, tiny_model: str, datasets: dict[str, int]
) -> dict[str, dict]:
    ids = {}
    for method in METHODS:
        created = client.post(
            "/api/jobs", headers=alice.headers, json=_body(tiny_model, datasets, method)
        )
        assert created.status_code == 201, created.text
        assert created.json()["method"] == method
        ids[method] = created.json()["id"]
    return {method: wait_for_job(client, alice, job_id) for method, job_id in ids.items()}


def _metrics(client, alice: Account, job: dict) -> list[dict]:
    assert job["status"] == "succeeded", job["error"]
    return loss_rows(client, alice, job["id"])


def test_pretrain_lowers_the_loss_on_its_text(client, alice: Account, finished: dict) -> None:
    losses = [m["loss"] for m in _metrics(client, alice, finished["pretrain"])]
    assert len(losses) == 8
    print(f"pretrain loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    assert losses[-1] < losses[0] - 0.5 and losses[-1] == min(losses), losses


@pytest.mark.parametrize("method", ["dpo", "orpo", "simpo", "kto"])
def test_preference_methods_raise_the_chosen_over_rejected_margin(
    client, alice: Account, finished: dict, method: str
) -> None:
    metrics = _metrics(client, alice, finished[method])
    assert len(metrics) == 8
    margins = [m["rewards/margins"] for m in metrics]
    chosen = [m["rewards/chosen"] for m in metrics]
    rejected = [m["rewards/rejected"] for m in metrics]
    assert all(isinstance(v, float) for v in margins + chosen + rejected), metrics[-1]
    first, last = sum(margins[:2]) / 2, sum(margins[-2:]) / 2
    print(f"{method} rewards/margins {first:.3f} -> {last:.3f}")
    assert last > first + 0.1 and last > 0.1, margins
    if method != "kto":  # paired methods also log how often chosen beats rejected
        assert metrics[-1]["rewards/accuracies"] == 1.0, metrics[-1]


def _reward_scores(path: Path, base: Path, texts: list[str]) -> list[float]:
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    model = PeftModel.from_pretrained(model, path).eval()
    scores = []
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
            scores.append(model(**ids).logits[0, 0].item())
    return scores


def test_reward_model_ranks_planted_pairs(
    client, alice: Account, finished: dict, tiny_model: str
) -> None:
    job = finished["reward"]
    metrics = _metrics(client, alice, job)
    assert metrics and "accuracy" in metrics[-1] and "margin" in metrics[-1]  # TRL's names
    checkpoints = client.get(f"/api/jobs/{job['id']}/checkpoints", headers=alice.headers).json()
    assert [c["step"] for c in checkpoints if c["is_final"]] == [12]
    final = get_settings().jobs_dir / str(job["id"]) / "output" / "final"
    with session_scope() as session:
        base = Path(find_base_model(session, tiny_model).path)
    tokenizer = AutoTokenizer.from_pretrained(final)

    def render(pair: dict, answer: str) -> str:
        return tokenizer.apply_chat_template(pair["prompt"] + pair[answer], tokenize=False)

    chosen = _reward_scores(final, base, [render(p, "chosen") for p in PAIRS])
    rejected = _reward_scores(final, base, [render(p, "rejected") for p in PAIRS])
    accuracy = sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(PAIRS)
    print(
        f"reward model pairwise accuracy {accuracy:.3f} (TRL's last accuracy "
        f"{metrics[-1]['accuracy']}, margin {metrics[-1]['margin']:.3f})"
    )
    assert accuracy > 0.9, (chosen, rejected)


def test_a_dataset_of_the_wrong_kind_is_refused(
    client, alice: Account, tiny_model: str, datasets: dict[str, int]
) -> None:
    for method, kind in (("dpo", "kto"), ("kto", "preference"), ("pretrain", "preference")):
        body = {**_body(tiny_model, datasets, method), "dataset_id": datasets[kind]}
        response = client.post("/api/jobs", headers=alice.headers, json=body)
        assert response.status_code == 422, response.text
        (error,) = response.json()["detail"]
        assert error["loc"][-1] == "dataset_id" and kind in error["msg"], error


def test_method_knobs_apply_only_to_their_methods(
    client, alice: Account, tiny_model: str, datasets: dict[str, int]
) -> None:
    body = _body(tiny_model, datasets, "orpo")
    body["hyperparameters"]["simpo_gamma"] = 1.0
    response = client.post("/api/jobs", headers=alice.headers, json=body)
    assert response.status_code == 422
    assert "simpo" in json.dumps(response.json()["detail"])
    body = {**_body(tiny_model, datasets, "reward"), "adapter": "prefix"}
    body["hyperparameters"] = {"max_steps": 2, "logging_steps": 1}
    response = client.post("/api/jobs", headers=alice.headers, json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == "adapter"
