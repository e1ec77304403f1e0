"""worker.training.batch_rows: every micro-batch reports its loss and the dataset rows it held,
through each kind of TRL trainer's own dataset preparation and collator (tiny model, CPU)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from datasets import Dataset
from transformers import AutoTokenizer

from app.chat.encoding import ChatFormat
from app.chat.rows import RowEncoder
from app.chat.tokenizer import load_model_tokenizer
from app.spec import TrainingSpec
from tests.training.test_tiny_model import _bundled_dir
from worker.tiny_model import build_tiny_llama
from worker.training.batch_rows import ROW_INDEX_COLUMN, watch_batches, with_row_indices
from worker.training.mapping import method_config, peft_config
from worker.training.methods import build_dataset, trainer_class
from worker.training.run import load_model

ROWS = 8
FIRST_INDEX = 100  # DatasetRow.index values need not start at 0


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def _rows(method: str) -> list[dict]:
    """Conversational rows in the layout TRL's trainer for ``method`` prepares itself."""
    if method == "sft":
        return [{"messages": _user(f"Count to {i}.") + _assistant(f"{i} {i}")} for i in range(ROWS)]
    if method == "kto":
        return [
            {"prompt": _user(f"Say {i}."), "completion": _assistant(str(i)), "label": i % 2 == 0}
            for i in range(ROWS)
        ]
    return [
        {"prompt": _user(f"Say {i}."), "chosen": _assistant(str(i)), "rejected": _assistant("no")}
        for i in range(ROWS)
    ]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(_bundled_dir(), tmp_path_factory.mktemp("tiny") / "model")


def test_with_row_indices_needs_one_index_per_row() -> None:
    dataset = Dataset.from_list([{"text": "a"}, {"text": "b"}])
    assert with_row_indices(dataset, [7, 9])[ROW_INDEX_COLUMN] == [7, 9]
    assert ROW_INDEX_COLUMN not in with_row_indices(dataset, [7]).column_names


@pytest.mark.parametrize("method", ["sft", "dpo", "kto", "reward"])
def test_each_micro_batch_reports_its_rows_and_loss(
    method: str, tiny_dir: Path, tmp_path: Path
) -> None:
    unpacked = {"packing": False} if method == "sft" else {}  # packed: the test below
    spec = TrainingSpec(
        method=method,
        max_steps=2,
        logging_steps=1,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        max_length=64,
        **unpacked,
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    indices = list(range(FIRST_INDEX, FIRST_INDEX + ROWS))
    trainer = trainer_class(spec)(
        model=load_model(spec, tiny_dir, tokenizer, use_cpu=True),
        args=method_config(spec, tmp_path, use_cpu=True),
        train_dataset=with_row_indices(Dataset.from_list(_rows(method)), indices),
        processing_class=tokenizer,
        peft_config=peft_config(spec, tiny_dir),
    )
    seen: list[tuple[float, list[int]]] = []
    watch_batches(trainer, lambda loss, rows: seen.append((loss, rows)))
    trainer.train()
    # Two steps of two micro-batches of two rows: one epoch, each row exactly once.
    assert [len(rows) for _, rows in seen] == [2, 2, 2, 2]
    assert sorted(row for _, rows in seen for row in rows) == indices
    assert all(math.isfinite(loss) for loss, _ in seen)


def test_a_packed_sequence_reports_every_row_it_holds(tiny_dir: Path, tmp_path: Path) -> None:
    spec = TrainingSpec(
        method="sft", logging_steps=1, per_device_train_batch_size=2, max_length=256
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    tokens = load_model_tokenizer(tiny_dir)
    fmt = ChatFormat(tokenizer.chat_template, tokens.special_tokens)
    indices = list(range(FIRST_INDEX, FIRST_INDEX + ROWS))
    dataset = build_dataset(_rows("sft"), spec, RowEncoder.for_spec(spec, fmt, tokens), indices)
    assert len(dataset) < ROWS  # packed: several rows a sequence
    trainer = trainer_class(spec)(
        model=load_model(spec, tiny_dir, tokenizer, use_cpu=True),
        args=method_config(spec, tmp_path, use_cpu=True),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config(spec, tiny_dir),
    )
    seen: list[tuple[float, list[int]]] = []
    watch_batches(trainer, lambda loss, rows: seen.append((loss, rows)))
    trainer.train()
    assert sorted(row for _, rows in seen for row in rows) == indices  # each row once, named
    assert max(len(rows) for _, rows in seen) > spec.per_device_train_batch_size
