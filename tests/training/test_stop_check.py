"""The stop check answers its prompts in one left-padded batch: each answer is the one the
model gives that prompt alone, and the check holds only as many prompts as the spec asks."""

from __future__ import annotations

from pathlib import Path

import torch

from app.chat import library
from app.chat.encoding import ChatFormat
from app.chat.rows import RowEncoder
from app.chat.tokenizer import load_model_tokenizer
from app.db import session_scope
from app.jobs import find_base_model
from app.spec import TrainingSpec
from worker.checkpoints import load_weights
from worker.training.stop_check import run_stop_check

ROWS = [
    {
        "messages": [
            {"role": "user", "content": "Hi" + " there" * n},
            {"role": "assistant", "content": "Hello."},
        ]
    }
    for n in (0, 5, 11, 2, 7)
]


def test_batched_answers_are_each_prompts_own_answer(tiny_model: str) -> None:
    with session_scope() as session:
        model = find_base_model(session, "tiny-llama")
        path, template = Path(model.path), library.default_for(session, model).source
    tokens = load_model_tokenizer(path)
    encoder = RowEncoder.for_spec(
        TrainingSpec(), ChatFormat(template, tokens.special_tokens), tokens
    )
    torch.manual_seed(0)
    weights = load_weights(path, dtype=torch.float32)
    batched = run_stop_check(weights, encoder, ROWS, prompts=4)
    assert batched["prompts"] == 4 and "seconds" in batched
    alone = [run_stop_check(weights, encoder, [row], prompts=1)["samples"][0] for row in ROWS[:4]]
    assert [s["output"] for s in batched["samples"]] == [s["output"] for s in alone]
    assert [s["new_tokens"] for s in batched["samples"]] == [s["new_tokens"] for s in alone]
    assert run_stop_check(weights, encoder, ROWS, prompts=2)["prompts"] == 2
