"""Which rows share a packed sequence, as the trainer packs them (``worker.training.packing``
calls TRL's best-fit-decreasing ``pack_dataset``): the same algorithm, without the training stack,
so "what the model sees" can show where each packed row begins. The preview bins the dataset's
first rows only, so for a larger dataset it shows how rows pack, not the exact training bins
(TRL bins 1,000 rows at a time).
``tests/chat/test_packing_bins.py`` checks it against TRL's own packing."""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field


@dataclass
class Bin:
    rows: list[int] = field(default_factory=list)  # row positions, in the order they sit
    length: int = 0


def best_fit_decreasing(lengths: list[int], capacity: int) -> list[Bin]:
    """Rows longest first (ties in row order), each into the open sequence whose free space
    fits it most tightly (the oldest of equals), else a new one; rows are cut at ``capacity``
    and empty rows left out, as TRL does."""
    bins: list[Bin] = []
    by_space: dict[int, deque[Bin]] = defaultdict(deque)
    capped = [min(length, capacity) for length in lengths]
    for row in sorted(range(len(capped)), key=lambda i: -capped[i]):
        length = capped[row]
        if length == 0:
            continue
        space = min((s for s, open_ in by_space.items() if open_ and s >= length), default=capacity)
        if space < capacity:
            packed = by_space[space].popleft()
        else:
            packed = Bin()
            bins.append(packed)
        packed.rows.append(row)
        packed.length += length
        by_space[space - length].append(packed)
    return bins
