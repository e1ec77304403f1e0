"""Gradient checkpointing, auto by default: the worker turns it on from the estimate's rule only
when the run would not fit its device otherwise, hands it to TRL (or to FSDP under FSDP), and
recomputing activations leaves the losses and the trained weights as they were."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from app.chat import library
from app.chat.encoding import ChatFormat
from app.chat.rows import RowEncoder
from app.chat.tokenizer import load_model_tokenizer
from app.db import session_scope
from app.estimate import GIB
from app.jobs import find_base_model
from app.launch import fsdp_arguments
from app.spec import TrainingSpec
from worker.checkpoints import load_weights
from worker.training.mapping import method_config
from worker.training.methods import build_dataset, trainer_class
from worker.training.run import resolve_checkpointing

ROWS = [
    {
        "messages": [
            {"role": "user", "content": f"Count to {n}."},
            {"role": "assistant", "content": " ".join(str(i) for i in range(1, n + 1))},
        ]
    }
    for n in range(2, 10)
]


def _tiny() -> tuple[Path, str]:
    with session_scope() as session:
        model = find_base_model(session, "tiny-llama")
        return Path(model.path), library.default_for(session, model).source


def test_auto_turns_on_only_where_the_run_would_not_fit(tiny_model: str) -> None:
    path, _ = _tiny()
    spec = TrainingSpec(adapter="full", max_length=512, per_device_train_batch_size=8)
    on, why = resolve_checkpointing(spec, path, 1024**2, None)  # a 1 MiB device
    assert on is True and why.startswith("on: without it the run would need about")
    off, why = resolve_checkpointing(spec, path, 80 * GIB, None)
    assert off is False and why.startswith("off: fits in")
    asked = TrainingSpec(gradient_checkpointing="off")
    assert resolve_checkpointing(asked, path, 1024**2, None) == (False, "off (as asked)")


def test_the_resolved_choice_reaches_the_trainer_and_fsdp(tmp_path: Path) -> None:
    spec = TrainingSpec()
    assert method_config(spec, tmp_path, use_cpu=True).activation_checkpointing is False
    on = method_config(spec, tmp_path, use_cpu=True, checkpointing=True)
    assert on.activation_checkpointing is True
    forced = TrainingSpec(gradient_checkpointing="on")  # no device resolved it: as asked
    assert method_config(forced, tmp_path, use_cpu=True).activation_checkpointing is True
    fsdp = method_config(
        spec, tmp_path, use_cpu=True, strategy=fsdp_arguments(), checkpointing=True
    )
    assert fsdp.activation_checkpointing is False  # FSDP's own instead of the Trainer's
    assert fsdp.fsdp_config["activation_checkpointing"] is True


def _train(tmp_path: Path, checkpointing: bool) -> tuple[list[float], dict[str, torch.Tensor]]:
    spec = TrainingSpec(
        adapter="full", max_length=96, per_device_train_batch_size=4, max_steps=4, logging_steps=1
    )
    spec = spec.model_copy(update={"learning_rate": 1e-3, "warmup_steps": 0.0})
    path, template = _tiny()
    tokens = load_model_tokenizer(path)
    encoder = RowEncoder.for_spec(spec, ChatFormat(template, tokens.special_tokens), tokens)
    dataset = build_dataset(ROWS, spec, encoder, list(range(len(ROWS))))
    torch.manual_seed(0)
    model = load_weights(path, dtype=torch.float32, attn_implementation="sdpa")
    trainer = trainer_class(spec)(
        model=model,
        args=method_config(spec, tmp_path, use_cpu=True, checkpointing=checkpointing),
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(path),
    )
    trainer.train()
    assert trainer.model.is_activation_checkpointing is checkpointing
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    weights = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    return losses, weights


def test_recomputing_activations_changes_neither_losses_nor_weights(
    tiny_model: str, tmp_path: Path
) -> None:
    plain_losses, plain = _train(tmp_path / "plain", checkpointing=False)
    losses, weights = _train(tmp_path / "checkpointed", checkpointing=True)
    assert len(losses) == 4 and losses[-1] < losses[0]  # it trains
    assert losses == pytest.approx(plain_losses, rel=1e-5)
    for name, value in plain.items():
        torch.testing.assert_close(weights[name], value, rtol=1e-4, atol=1e-6, msg=name)
