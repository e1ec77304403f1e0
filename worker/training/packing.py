"""Packing for SFT and continual pretraining: several tokenized rows in one ``max_length``
sequence, best-fit decreasing (TRL's ``pack_dataset``, the same bins TRL's own ``packing=True``
makes), padding-free: the collator flattens a batch into one sequence whose position ids restart
at each row, and transformers builds a block-diagonal causal mask from them, so no row attends to
another (SDPA and eager through its packed-sequence masks, flash-attention through its varlen
path). ``tests/training/test_packing_isolation.py`` proves it on the attention kernels the studio
selects.

The studio packs the rows itself, rather than leaving it to SFTTrainer, so that each packed
sequence keeps the dataset rows it holds (``batch_rows.ROW_INDEX_COLUMN``, a list per sequence):
health alarms go on naming a bad batch's rows. The trainer (``methods.StudioSFTTrainer``) takes
the packed sequences as they are: already tokenized, truncated, labelled and packed.
"""

from __future__ import annotations

import logging
from typing import Any

from datasets import Dataset
from trl.data_utils import pack_dataset

from worker.training.batch_rows import ROW_INDEX_COLUMN

PACKING_STRATEGY = "bfd"
_ROW_PER_TOKEN = "studio_row_per_token"
IGNORED = -100


def has_loss(example: dict[str, Any]) -> bool:
    return any(label != IGNORED for label in example["labels"])


def _row_per_token(example: dict[str, Any]) -> dict[str, list[int]]:
    return {_ROW_PER_TOKEN: [example[ROW_INDEX_COLUMN]] * len(example["input_ids"])}


def _row_starts(example: dict[str, Any]) -> dict[str, list[int]]:
    """The dataset rows of one packed sequence, in the order they sit in it."""
    rows, start = [], 0
    for length in example["seq_lengths"]:
        rows.append(example[_ROW_PER_TOKEN][start])
        start += length
    return {ROW_INDEX_COLUMN: rows}


def pack(dataset: Dataset, max_length: int) -> Dataset:
    """``dataset`` (``input_ids``, ``labels``, optionally the row index column) packed into
    sequences of at most ``max_length`` tokens with a ``seq_lengths`` column. Rows that train on
    no token are dropped first, as SFTTrainer drops them."""
    dataset = dataset.filter(has_loss)
    named = ROW_INDEX_COLUMN in dataset.column_names
    if named:
        dataset = dataset.map(_row_per_token, remove_columns=[ROW_INDEX_COLUMN])
    # input_ids first: pack_dataset bins by the first column's lengths.
    columns = ["input_ids", "labels", *([_ROW_PER_TOKEN] if named else [])]
    packed = pack_dataset(dataset.select_columns(columns), max_length, PACKING_STRATEGY)
    if named:
        packed = packed.map(_row_starts, remove_columns=[_ROW_PER_TOKEN])
    return packed


class _KnownIsolated(logging.Filter):
    """TRL warns that packed / padding-free rows may see each other unless flash-attention is
    used; with transformers 5.x's packed-sequence masks they do not on SDPA and eager either
    (tested), so the warning would only mislead someone reading a run's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not message.startswith(
            ("You are using packing, but the attention", "Padding-free training is enabled")
        )


def quiet_isolation_warnings() -> None:
    logging.getLogger("trl.trainer.sft_trainer").addFilter(_KnownIsolated())
