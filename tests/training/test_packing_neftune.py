"""Packing puts several rows in one sequence without losing a trained token, position ids restart
per row; NEFTune trains. Built the way the worker builds its trainer, on the tiny model."""

from __future__ import annotations

import math
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from app.chat import library
from app.chat.encoding import ChatFormat
from app.chat.rows import RowEncoder
from app.chat.tokenizer import load_model_tokenizer
from app.db import session_scope
from app.jobs import find_base_model
from app.spec import TrainingSpec
from worker.training.mapping import method_config
from worker.training.methods import build_dataset, trainer_class

ROWS = [
    {
        "messages": [
            {"role": "user", "content": f"Count to {n}."},
            {"role": "assistant", "content": " ".join(str(i) for i in range(1, n + 1))},
        ]
    }
    for n in range(1, 13)
]


def _trainer(spec: TrainingSpec, tmp_path: Path):
    with session_scope() as session:
        model = find_base_model(session, "tiny-llama")
        path, template = Path(model.path), library.default_for(session, model).source
    tokens = load_model_tokenizer(path)
    encoder = RowEncoder.for_spec(spec, ChatFormat(template, tokens.special_tokens), tokens)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return trainer_class(spec)(
        model=AutoModelForCausalLM.from_pretrained(path),
        args=method_config(spec, tmp_path, use_cpu=True),
        train_dataset=build_dataset(ROWS, spec, encoder),
        processing_class=tokenizer,
    )


def _trained_tokens(dataset) -> int:
    return sum(sum(label != -100 for label in row["labels"]) for row in dataset)


def test_packing_keeps_every_trained_token_in_fewer_sequences(tiny_model: str, tmp_path) -> None:
    plain = _trainer(TrainingSpec(adapter="full", max_length=128), tmp_path / "plain")
    packed = _trainer(
        TrainingSpec(adapter="full", max_length=128, packing=True), tmp_path / "packed"
    )
    assert len(packed.train_dataset) < len(plain.train_dataset) == len(ROWS)
    assert _trained_tokens(packed.train_dataset) == _trained_tokens(plain.train_dataset)
    batch = packed.data_collator([packed.train_dataset[0]])
    positions = batch["position_ids"][0].tolist()
    assert positions.count(0) > 1  # each packed row starts again at position 0


def test_neftune_trains(tiny_model: str, tmp_path) -> None:
    spec = TrainingSpec(
        adapter="full", neftune_noise_alpha=5.0, max_steps=3, logging_steps=1, max_length=64
    )
    trainer = _trainer(spec, tmp_path)
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)
