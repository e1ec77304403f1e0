"""Evaluations measured by a real worker on the tiny model: a trained checkpoint against its
base, generation metrics against the reference implementations on the stored answers, and
preference accuracy for DPO, reward-model and plain checkpoints."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from app.chat.encoding import IGNORE_INDEX, ChatFormat
from app.chat.rows import RowEncoder
from app.chat.tokenizer import load_model_tokenizer
from app.db import session_scope
from app.jobs import find_base_model
from app.models import Checkpoint
from app.settings import get_settings
from tests.conftest import Account, wait_for_job
from tests.evaluation import reference_metrics
from tests.support.datasets import PAIRS, SFT_ROWS, upload_rows

pytestmark = pytest.mark.worker

COMMON = {
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.0,
    "max_length": 64,
    "warmup_steps": 0,
    "logging_steps": 1,
    "lr_scheduler_type": "constant",
    "per_device_train_batch_size": 8,
    "save_steps": 1000,
    "seed": 3,
}
RUNS = {
    "sft": ("sft", {"learning_rate": 1e-2, "max_steps": 12}),
    "dpo": ("preference", {"learning_rate": 5e-3, "max_steps": 8, "beta": 0.1}),
    "reward": ("preference", {"learning_rate": 1e-3, "max_steps": 12}),
}


@pytest.fixture(scope="module")
def runs(client, alice: Account, worker: Path, tiny_model: str) -> dict:
    datasets = {
        "sft": upload_rows(client, alice, "sft", SFT_ROWS),
        "preference": upload_rows(client, alice, "preference", PAIRS),
    }
    submitted = {}
    for method, (kind, hyper) in RUNS.items():
        body = {
            "base_model": tiny_model,
            "dataset_id": datasets[kind],
            "method": method,
            "hyperparameters": {**COMMON, **hyper},
        }
        response = client.post("/api/jobs", headers=alice.headers, json=body)
        assert response.status_code == 201, response.text
        submitted[method] = response.json()["id"]
    finished = {m: wait_for_job(client, alice, job_id) for m, job_id in submitted.items()}
    for method, job in finished.items():
        assert job["status"] == "succeeded", (method, job["error"])
    finals = {
        method: next(
            c["id"]
            for c in client.get(f"/api/jobs/{job['id']}/checkpoints", headers=alice.headers).json()
            if c["is_final"]
        )
        for method, job in finished.items()
    }
    return {"datasets": datasets, "jobs": finished, "finals": finals}


def evaluate(client, account: Account, **body) -> dict:
    created = client.post("/api/evaluations", headers=account.headers, json=body)
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "queued"
    url = f"/api/evaluations/{created.json()['id']}"
    deadline = time.monotonic() + 300
    while (evaluation := client.get(url, headers=account.headers).json())["status"] in (
        "queued",
        "running",
    ):
        assert time.monotonic() < deadline, "the evaluation timed out"
        time.sleep(0.5)
    assert evaluation["status"] == "succeeded", evaluation["error"]
    return evaluation


@pytest.fixture(scope="module")
def on_training_data(client, alice: Account, runs: dict, tiny_model: str) -> dict:
    sft = runs["datasets"]["sft"]
    return {
        "base": evaluate(client, alice, base_model=tiny_model, dataset_id=sft),
        "trained": evaluate(client, alice, checkpoint_id=runs["finals"]["sft"], dataset_id=sft),
    }


def test_a_trained_checkpoint_has_lower_perplexity_than_its_base_on_its_training_data(
    on_training_data: dict,
) -> None:
    base, trained = on_training_data["base"]["results"], on_training_data["trained"]["results"]
    print(f"perplexity: base {base['perplexity']:.1f}, trained {trained['perplexity']:.2f}")
    # LoRA on a hidden-64 model with tied embeddings moves the distribution slowly: 12 steps
    # take about 0.9 nats off every trained token (perplexity 50k -> 20k).
    assert trained["perplexity"] < base["perplexity"] / 2
    for results in (base, trained):
        assert results["perplexity"] == pytest.approx(math.exp(results["eval_loss"]))
    # The run's max_length and loss mask for its checkpoint; the studio's defaults for a base.
    assert trained["encoding"] == {"max_length": 64, "loss_on": "assistant"}
    assert base["encoding"] == {"max_length": 1024, "loss_on": "assistant"}
    # The same tokens carry loss for both (same template, assistant turns only).
    assert base["loss"]["tokens"] == trained["loss"]["tokens"] > 0
    assert base["loss"]["rows"] == len(SFT_ROWS)


def _token_nll(model, encoder: RowEncoder, rows: list[dict]) -> float:
    """Mean NLL of the labelled tokens, by hand: log-softmax at t-1 scores the token at t."""
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            encoding = encoder.conversation(row)
            logits = model(torch.tensor([encoding.input_ids])).logits[0].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            for t, label in enumerate(encoding.labels[1:], start=1):
                if label != IGNORE_INDEX:
                    total -= logprobs[t - 1, label].item()
                    count += 1
    return total / count


def _base_path(model: str) -> Path:
    with session_scope() as session:
        return Path(find_base_model(session, model).path)


def _checkpoint_dir(checkpoint_id: int) -> Path:
    with session_scope() as session:
        return get_settings().jobs_dir / session.get(Checkpoint, checkpoint_id).path


def _encoder(model_dir: Path, template: str | None, max_length: int | None) -> RowEncoder:
    tokens = load_model_tokenizer(model_dir)
    return RowEncoder(ChatFormat(template, tokens.special_tokens), tokens, max_length)


def test_eval_loss_is_the_token_weighted_nll_of_the_trained_tokens(
    on_training_data: dict, runs: dict, tiny_model: str
) -> None:
    base_path = _base_path(tiny_model)
    with session_scope() as session:
        template = session.get(Checkpoint, runs["finals"]["sft"]).job.chat_template
    encoder = _encoder(base_path, template, 64)
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32).eval()
    trained = PeftModel.from_pretrained(base, _checkpoint_dir(runs["finals"]["sft"])).eval()
    expected = _token_nll(trained, encoder, SFT_ROWS)
    assert on_training_data["trained"]["results"]["eval_loss"] == pytest.approx(expected, rel=1e-4)
    with trained.disable_adapter():
        expected_base = _token_nll(trained, encoder, SFT_ROWS)
    assert on_training_data["base"]["results"]["eval_loss"] == pytest.approx(
        expected_base, rel=1e-4
    )


def test_generation_metrics_match_the_reference_implementations_on_the_stored_answers(
    on_training_data: dict,
) -> None:
    for name, evaluation in on_training_data.items():
        results = evaluation["results"]
        samples = results["samples"]
        assert len(samples) == results["generation"]["prompts"] == len(SFT_ROWS)
        assert [s["reference"] for s in samples] == [r["messages"][-1]["content"] for r in SFT_ROWS]
        answers = [s["output"] for s in samples]
        references = [s["reference"] for s in samples]
        pairs = list(zip(answers, references, strict=True))
        em = sum(reference_metrics.exact_match(a, r) for a, r in pairs) / len(pairs)
        rouge = sum(reference_metrics.rouge_l(a, r) for a, r in pairs) / len(pairs)
        bleu = reference_metrics.bleu(answers, references)
        print(f"{name}: exact {em:.3f} rouge-L {rouge:.3f} bleu {bleu:.2f}; {answers[:2]}")
        assert results["exact_match"] == pytest.approx(em)
        assert results["rouge_l"] == pytest.approx(rouge, abs=1e-12)
        assert results["bleu"] == pytest.approx(bleu, abs=1e-9)
        assert results["stop_rate"] == sum(s["stopped"] for s in samples) / len(samples)
        for sample in samples:
            assert sample["rouge_l"] == pytest.approx(
                reference_metrics.rouge_l(sample["output"], sample["reference"]), abs=1e-12
            )
    trained, base = on_training_data["trained"]["results"], on_training_data["base"]["results"]
    assert trained["rouge_l"] > base["rouge_l"]


def _answer_logps(model, pairs_encoded: list, which: str) -> list[float]:
    scores = []
    with torch.no_grad():
        for pair in pairs_encoded:
            encoding = getattr(pair, which)
            logits = model(torch.tensor([encoding.input_ids])).logits[0].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            scores.append(
                sum(
                    logprobs[t - 1, label].item()
                    for t, label in enumerate(encoding.labels[1:], start=1)
                    if label != IGNORE_INDEX
                )
            )
    return scores


def test_dpo_checkpoint_is_scored_by_its_implicit_reward_against_its_start(
    client, alice: Account, runs: dict, tiny_model: str
) -> None:
    pairs_id, final = runs["datasets"]["preference"], runs["finals"]["dpo"]
    evaluation = evaluate(client, alice, checkpoint_id=final, dataset_id=pairs_id)
    results = evaluation["results"]
    detail = results["preference"]
    assert (detail["mode"], detail["beta"], detail["pairs"]) == ("implicit_reward", 0.1, 8)
    assert results["preference_accuracy"] == 1.0, detail
    # Independently: beta * (log pi - log pi_ref), pi_ref = the base with the adapter disabled.
    base_path = _base_path(tiny_model)
    with session_scope() as session:
        template = session.get(Checkpoint, final).job.chat_template
    encoded = [_encoder(base_path, template, 64).preference(p) for p in PAIRS]
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32).eval()
    policy = PeftModel.from_pretrained(base, _checkpoint_dir(final)).eval()
    chosen, rejected = (
        _answer_logps(policy, encoded, "chosen"),
        _answer_logps(policy, encoded, "rejected"),
    )
    with policy.disable_adapter():
        ref_chosen = _answer_logps(policy, encoded, "chosen")
        ref_rejected = _answer_logps(policy, encoded, "rejected")
    margins = [
        0.1 * ((c - rc) - (r - rr))
        for c, rc, r, rr in zip(chosen, ref_chosen, rejected, ref_rejected, strict=True)
    ]
    assert detail["mean_margin"] == pytest.approx(sum(margins) / len(margins), rel=1e-3)


def test_reward_model_and_base_model_preference_accuracy(
    client, alice: Account, runs: dict, tiny_model: str
) -> None:
    pairs_id = runs["datasets"]["preference"]
    reward = evaluate(client, alice, checkpoint_id=runs["finals"]["reward"], dataset_id=pairs_id)
    assert reward["metrics"] == ["preference_accuracy"]
    assert reward["results"]["preference"]["mode"] == "score"
    assert reward["results"]["preference_accuracy"] > 0.9, reward["results"]["preference"]
    base = evaluate(client, alice, base_model=tiny_model, dataset_id=pairs_id)
    assert base["results"]["preference"]["mode"] == "likelihood"
    assert set(base["metrics"]) == {"preference_accuracy", "stop_rate"}
    assert 0 <= base["results"]["preference_accuracy"] <= 1


def test_the_runs_table_names_the_best_checkpoint(
    client, alice: Account, runs: dict, on_training_data: dict
) -> None:
    job_id = runs["jobs"]["sft"]["id"]
    table = client.get(f"/api/jobs/{job_id}/evaluations", headers=alice.headers).json()
    assert table["dataset_id"] == runs["datasets"]["sft"]
    assert table["metric"] == "eval_loss" and table["lower_is_better"] is True
    assert table["best"]["checkpoint_id"] == runs["finals"]["sft"]
    ids = {e["id"] for e in table["evaluations"]}
    assert {on_training_data["base"]["id"], on_training_data["trained"]["id"]} <= ids
    assert all("samples" not in (e["results"] or {}) for e in table["evaluations"])
