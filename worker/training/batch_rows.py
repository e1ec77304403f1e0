"""Which dataset rows each training batch holds, and its loss, at every micro-batch.

The train dataset gets a column with each example's ``DatasetRow.index`` (a packed sequence:
the list of the rows it holds, ``worker.training.packing``). TRL's trainers keep
extra columns through their dataset preparation, and Trainer drops columns outside its
"signature" before batching (``remove_unused_columns``), so the column is added to that list.
The collator is wrapped to take the column out of the examples and carry it in the batch as a
tensor (so it stays with its batch through prefetching and gradient accumulation), and
``training_step`` is wrapped to pop it before the model sees the batch and report each
micro-batch's (loss, rows) the moment it is computed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from datasets import Dataset
from transformers import Trainer

ROW_INDEX_COLUMN = "studio_row_index"

OnMicroBatch = Callable[[float, list[int]], None]


def with_row_indices(dataset: Dataset, indices: Sequence[int]) -> Dataset:
    """The dataset with its rows' indices as a column. A dataset whose length no longer matches
    (rows dropped while building it) is returned as is: its batches' rows stay unnamed."""
    if len(dataset) != len(indices):
        return dataset
    return dataset.add_column(ROW_INDEX_COLUMN, list(indices))


def _rows_of(example: dict[str, Any]) -> list[int]:
    """The dataset rows of one example: its row, or the rows a packed sequence holds."""
    rows = example.get(ROW_INDEX_COLUMN)
    if rows is None:
        return []
    return list(rows) if isinstance(rows, list) else [rows]


class RowIndexCollator:
    """Collates as ``collator`` does, with the examples' row indices beside the batch."""

    def __init__(self, collator: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> None:
        self.collator = collator

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        rows = [row for example in examples for row in _rows_of(example)]
        batch = self.collator(
            [{k: v for k, v in example.items() if k != ROW_INDEX_COLUMN} for example in examples]
        )
        if rows:
            batch[ROW_INDEX_COLUMN] = torch.tensor(rows, dtype=torch.long)
        return batch


def watch_batches(trainer: Trainer, on_micro_batch: OnMicroBatch) -> None:
    """Make ``trainer`` report every micro-batch's loss and dataset rows to ``on_micro_batch``."""
    if trainer.args.remove_unused_columns:
        # Trainer's own hook for the kept columns; TRL's trainers fill it the same way.
        trainer._set_signature_columns_if_needed()
        trainer._signature_columns = [*trainer._signature_columns, ROW_INDEX_COLUMN]
    trainer.data_collator = RowIndexCollator(trainer.data_collator)
    training_step = trainer.training_step

    def watched_training_step(model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any):
        rows = inputs.pop(ROW_INDEX_COLUMN, None)
        loss = training_step(model, inputs, *args, **kwargs)
        on_micro_batch(float(loss), rows.tolist() if rows is not None else [])
        return loss

    trainer.training_step = watched_training_step  # type: ignore[method-assign]
