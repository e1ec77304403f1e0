"""Planted training problems for the health-alarm tests (tests/worker/test_health.py and the
browser test in tests/e2e): their datasets, a NaN-poisoned tiny model, and their job bodies.

- NaN: a tiny model whose input embedding of one word (" zebra") is NaN, and a dataset where
  only row 5 says it: the batch holding row 5 gives a NaN loss.
- Loss spike: a full fine-tune learning to answer "ok" on most rows, with five rows of
  unlearnable gibberish; once the loss has fallen, the gibberish batches spike.
- Overfitting: train rows answer "red", eval rows "blue" to the same questions; the eval loss
  falls, then rises while the train loss keeps falling.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.support.datasets import alpaca

POISON_WORD = " zebra"
POISONED_ROW = 5
SPIKE_ROWS = (5, 17, 29, 41, 53)
NAN_LOGGING_STEPS = 5
OVERFIT_MAX_STEPS = 40
OVERFIT_PATIENCE = 3
COMMON = {"per_device_train_batch_size": 2, "max_length": 64, "save_steps": 100_000}


def _gibberish(rng: random.Random, words: int) -> str:
    letters = "bcdfghjklmnpqrstvwxz"
    return " ".join(
        "".join(rng.choice(letters) for _ in range(rng.randint(3, 8))) for _ in range(words)
    )


def nan_rows() -> bytes:
    rows = [(f"Count to {i}.", " ".join(map(str, range(1, i + 2)))) for i in range(8)]
    rows[POISONED_ROW] = (f"Name a{POISON_WORD}.", "Here it is.")
    return alpaca(rows)


def spike_rows() -> bytes:
    rng = random.Random(0)
    rows = [("Say ok.", "ok ok ok ok ok ok") for _ in range(60)]
    for index in SPIKE_ROWS:
        rows[index] = ("Say ok.", _gibberish(rng, 12))
    return alpaca(rows)


def colour_rows(colour: str, n: int) -> bytes:
    return alpaca([(f"Name the colour ({i}).", f"The colour is {colour}.") for i in range(n)])


def poisoned_model(tiny_dir: Path, out: Path) -> Path:
    """The tiny model with untied embeddings whose input embedding of POISON_WORD is NaN."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    (token_id,) = tokenizer.encode(POISON_WORD, add_special_tokens=False)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    model.config.tie_word_embeddings = False
    untied = AutoModelForCausalLM.from_config(model.config)
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    state["lm_head.weight"] = model.get_input_embeddings().weight.detach().clone()
    untied.load_state_dict(state)
    with torch.no_grad():
        untied.get_input_embeddings().weight[token_id] = float("nan")
    untied.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def nan_job(model: str, dataset_id: int) -> dict:
    hyperparameters = {
        **COMMON,
        "max_steps": 8,
        "logging_steps": NAN_LOGGING_STEPS,
        "learning_rate": 1e-3,
    }
    return {"base_model": model, "dataset_id": dataset_id, "hyperparameters": hyperparameters}


def spike_job(model: str, dataset_id: int) -> dict:
    return {
        "base_model": model,
        "adapter": "full",
        "dataset_id": dataset_id,
        "hyperparameters": {
            **COMMON,
            "max_steps": 30,
            "logging_steps": 1,
            "learning_rate": 1e-2,
            "lr_scheduler_type": "constant",
            "warmup_steps": 0,
        },
    }


def overfit_job(model: str, dataset_id: int, eval_dataset_id: int) -> dict:
    return {
        "base_model": model,
        "adapter": "full",
        "dataset_id": dataset_id,
        "eval_dataset_id": eval_dataset_id,
        "hyperparameters": {
            **COMMON,
            "per_device_train_batch_size": 4,
            "max_steps": OVERFIT_MAX_STEPS,
            "logging_steps": 2,
            "save_steps": 2,
            "learning_rate": 1e-2,
            "lr_scheduler_type": "constant",
            "warmup_steps": 0,
            "early_stopping_patience": OVERFIT_PATIENCE,
            # One row a sequence: packed, 16 short rows make a couple of sequences and the
            # train/eval curves this run is planted to show never part.
            "packing": False,
        },
    }
