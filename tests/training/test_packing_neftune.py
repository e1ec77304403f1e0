"""Packing puts several rows in one sequence without losing a trained token, position ids restart
per row; NEFTune adds bounded noise to training-mode embeddings only. Built the way the worker
builds its trainer, on the tiny model."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

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
    plain = _trainer(
        TrainingSpec(adapter="full", max_length=128, packing=False), tmp_path / "plain"
    )
    packed = _trainer(TrainingSpec(adapter="full", max_length=128), tmp_path / "packed")
    assert len(packed.train_dataset) < len(plain.train_dataset) == len(ROWS)
    assert _trained_tokens(packed.train_dataset) == _trained_tokens(plain.train_dataset)
    batch = packed.data_collator([packed.train_dataset[0]])
    positions = batch["position_ids"][0].tolist()
    assert positions.count(0) > 1  # each packed row starts again at position 0


class _Probe(TrainerCallback):
    """At the start of training (NEFTune's hook is on), the embeddings and logits of one fixed
    batch in training and in eval mode, each drawn after the same seed."""

    def __init__(self, ids: torch.Tensor) -> None:
        self.ids = ids
        self.seen: dict[str, torch.Tensor] = {}

    def on_train_begin(self, args, state, control, model=None, **kwargs) -> None:
        was_training = model.training
        with torch.no_grad():
            for mode in ("train", "eval"):
                model.train(mode == "train")
                torch.manual_seed(0)
                self.seen[f"{mode}_embeddings"] = model.get_input_embeddings()(self.ids).clone()
                torch.manual_seed(0)
                self.seen[f"{mode}_logits"] = model(self.ids).logits.clone()
        model.train(was_training)


def _probed(alpha: float, tmp_path: Path) -> tuple[dict[str, torch.Tensor], object]:
    spec = TrainingSpec(
        adapter="full", neftune_noise_alpha=alpha, max_steps=1, logging_steps=1, max_length=64
    )
    trainer = _trainer(spec, tmp_path)
    ids = trainer.processing_class("Count to three.", return_tensors="pt").input_ids
    probe = _Probe(ids)
    trainer.add_callback(probe)
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 1 and math.isfinite(losses[0])
    return probe.seen, trainer


def test_neftune_adds_bounded_noise_to_training_forward_passes_only(
    tiny_model: str, tmp_path
) -> None:
    alpha = 5.0
    plain, _ = _probed(0.0, tmp_path / "plain")
    noisy, trainer = _probed(alpha, tmp_path / "noisy")
    # Without NEFTune, training and eval mode compute the same thing (the tiny model has no
    # dropout), and both runs start from the same weights.
    assert torch.equal(plain["train_logits"], plain["eval_logits"])
    assert torch.equal(noisy["eval_logits"], plain["eval_logits"])
    assert torch.equal(noisy["eval_embeddings"], plain["eval_embeddings"])
    # With it, training-mode embeddings carry uniform noise of at most alpha / sqrt(L * d)
    # (NEFTune's bound), and that noise reaches the logits.
    noise = noisy["train_embeddings"] - plain["train_embeddings"]
    _, length, dim = noise.shape
    bound = alpha / math.sqrt(length * dim)
    assert 0 < noise.abs().max().item() <= bound * (1 + 1e-5)
    assert noise.abs().mean().item() > bound / 4  # uniform on [-bound, bound]: mean |x| = bound/2
    assert not torch.allclose(noisy["train_logits"], plain["train_logits"])
    # After training the hook is gone: the saved model behaves the same in both modes.
    model = trainer.model.train()
    ids = trainer.processing_class("Count to three.", return_tensors="pt").input_ids
    with torch.no_grad():
        trained = model(ids).logits
        model.eval()
        assert torch.equal(trained, model(ids).logits)
