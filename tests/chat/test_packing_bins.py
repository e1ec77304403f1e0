"""app.chat.packing makes the bins TRL's best-fit-decreasing packing makes (the trainer's
packing, worker.training.packing), so "what the model sees" shows the real packed sequences."""

from __future__ import annotations

import random

import pytest
from datasets import Dataset
from trl.data_utils import pack_dataset

from app.chat.packing import best_fit_decreasing


@pytest.mark.parametrize("seed", range(5))
def test_the_bins_are_trls(seed: int) -> None:
    rng = random.Random(seed)
    capacity = rng.choice([64, 100, 256])
    lengths = [rng.randint(0, capacity + 40) for _ in range(rng.randint(1, 120))]
    # Each row's tokens are its own position, so the packed ids say which rows a bin holds.
    rows = [{"input_ids": [i] * n, "labels": [i] * n} for i, n in enumerate(lengths)]
    packed = pack_dataset(Dataset.from_list(rows), capacity, "bfd")
    theirs = []
    for example in packed:
        start, order = 0, []
        for length in example["seq_lengths"]:
            order.append(example["input_ids"][start])
            start += length
        theirs.append(order)
    assert [b.rows for b in best_fit_decreasing(lengths, capacity)] == theirs
    assert all(b.length <= capacity for b in best_fit_decreasing(lengths, capacity))
