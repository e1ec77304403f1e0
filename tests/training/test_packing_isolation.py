"""Packing (on by default) keeps packed rows apart: through the trainer's own collator and loss
(padding-free batches, position ids restarting per row, no attention mask), every row's logits
and per-token losses are what the row gets alone, and perturbing one row of a packed sequence
leaves the other rows' logits unchanged; on each attention kernel the studio selects on a CPU
(SDPA, eager; flash-attention's varlen path is the GPU check's)."""

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
from app.jobs import find_base_model
from app.spec import TrainingSpec
from worker.checkpoints import load_weights
from worker.training.batch_rows import ROW_INDEX_COLUMN
from worker.training.mapping import method_config
from worker.training.methods import build_dataset, trainer_class

IGNORED = -100
ROWS = [
    {
        "messages": [
            {"role": "user", "content": f"Name {n} colours."},
            {"role": "assistant", "content": ", ".join(["red", "green", "blue", "teal"] * n)},
        ]
    }
    for n in range(1, 9)
]


def _trainer(attention: str, tmp_path: Path):
    spec = TrainingSpec(adapter="full", max_length=192, per_device_train_batch_size=2)
    assert spec.packing  # the default
    with session_scope() as session:
        model = find_base_model(session, "tiny-llama")
        path, template = Path(model.path), library.default_for(session, model).source
    tokens = load_model_tokenizer(path)
    encoder = RowEncoder.for_spec(spec, ChatFormat(template, tokens.special_tokens), tokens)
    dataset = build_dataset(ROWS, spec, encoder, list(range(len(ROWS))))
    model = load_weights(path, dtype=torch.float32, attn_implementation=attention)
    return trainer_class(spec)(
        model=model,
        args=method_config(spec, tmp_path, use_cpu=True),
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(path),
    )


def _packed_batch(trainer) -> tuple[dict[str, torch.Tensor], list[tuple[int, int]]]:
    """The first two packed sequences as the trainer's collator flattens them, and the
    (start, end) span of every row in that flat sequence."""
    examples = [trainer.train_dataset[i] for i in range(2)]
    assert all(len(e["seq_lengths"]) > 1 for e in examples)  # several rows each
    batch = trainer.data_collator(
        [{k: v for k, v in e.items() if k != ROW_INDEX_COLUMN} for e in examples]
    )
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1  # padding-free
    spans, start = [], 0
    for length in (n for e in examples for n in e["seq_lengths"]):
        spans.append((start, start + length))
        start += length
    assert batch["position_ids"][0, [s for s, _ in spans]].tolist() == [0] * len(spans)
    return batch, spans


def _logits(trainer, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits of the model's forward pass as SFTTrainer.compute_loss calls it (no cache)."""
    with torch.no_grad():
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return trainer.model(**inputs, use_cache=False).logits[0]


def _loss(trainer, batch: dict[str, torch.Tensor]) -> float:
    """The training loss SFTTrainer computes for the batch (its own chunked loss)."""
    with torch.no_grad():
        return float(trainer.compute_loss(trainer.model, {k: v.clone() for k, v in batch.items()}))


def _token_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each position's next-token loss (0 where the next label is ignored)."""
    losses = torch.nn.functional.cross_entropy(
        logits[:-1], labels[1:], ignore_index=IGNORED, reduction="none"
    )
    return losses


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_a_packed_rows_losses_are_its_losses_alone(
    tiny_model: str, tmp_path: Path, attention: str
) -> None:
    trainer = _trainer(attention, tmp_path)
    trainer.model.eval()
    batch, spans = _packed_batch(trainer)
    packed = _logits(trainer, batch)
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    weighted, trained = 0.0, 0
    for start, end in spans:
        alone = {
            "input_ids": ids[start:end][None],
            "labels": labels[start:end][None],
            "attention_mask": torch.ones(1, end - start, dtype=torch.long),
        }
        logits = _logits(trainer, alone)
        row_labels = labels[start:end]
        assert torch.allclose(packed[start:end], logits, atol=1e-5)
        together = _token_losses(packed[start:end], row_labels)
        assert (row_labels != IGNORED).sum() > 0
        assert torch.allclose(together, _token_losses(logits, row_labels), atol=2.6e-5)
        count = int((row_labels[1:] != IGNORED).sum())
        weighted, trained = weighted + _loss(trainer, alone) * count, trained + count
    # The packed batch's training loss is the token-weighted mean of the rows' losses alone.
    assert _loss(trainer, batch) == pytest.approx(weighted / trained, abs=2.6e-5)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_perturbing_one_packed_row_leaves_the_others_unchanged(
    tiny_model: str, tmp_path: Path, attention: str
) -> None:
    trainer = _trainer(attention, tmp_path)
    trainer.model.eval()
    batch, spans = _packed_batch(trainer)
    before = _logits(trainer, batch)
    start, end = spans[1]  # a row in the middle of the first packed sequence
    perturbed = {k: v.clone() for k, v in batch.items()}
    perturbed["input_ids"][0, start + 1 : end] = (
        perturbed["input_ids"][0, start + 1 : end] + 7
    ) % (trainer.model.config.vocab_size)
    after = _logits(trainer, perturbed)
    assert not torch.allclose(before[start + 1 : end], after[start + 1 : end])
    for other_start, other_end in spans:
        if (other_start, other_end) != (start, end):
            assert torch.equal(before[other_start:other_end], after[other_start:other_end])
