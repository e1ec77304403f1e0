"""MinHash signatures over word shingles and LSH banding (numpy + hashlib, no extra library).

A signature holds, for each of ``num_perm`` random hash functions h(x) = (a*x + b) mod p, the
minimum over the text's shingle hashes. Two signatures agree at one position with probability
equal to the texts' Jaccard similarity. Banding splits a signature into ``bands`` groups of
``rows`` values; texts that agree on a whole band become candidates, which the caller verifies.
"""

from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass

import numpy as np

MERSENNE_61 = np.uint64((1 << 61) - 1)
MAX_HASH = np.uint64(0xFFFFFFFF)
_COMBINE = np.uint64(0x01000193)
DEFAULT_NUM_PERM = 128
DEFAULT_SHINGLE = 3


def shingles(words: list[str], size: int = DEFAULT_SHINGLE) -> set[str]:
    """Word ``size``-grams; a text shorter than that is one shingle of all its words."""
    if len(words) <= size:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + size]) for i in range(len(words) - size + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def shingle_hashes(words: list[str], size: int = DEFAULT_SHINGLE) -> np.ndarray:
    """32-bit hashes of the distinct word ``size``-grams (the words of a shorter text: one),
    built from per-word CRC32s with numpy instead of joining strings."""
    if not words:
        return np.empty(0, dtype=np.uint64)
    per_word = np.fromiter(
        (zlib.crc32(w.encode()) for w in words), dtype=np.uint64, count=len(words)
    )
    span = min(size, len(words))
    count = len(words) - span + 1
    combined = np.zeros(count, dtype=np.uint64)
    for k in range(span):  # (h * M + w) mod 2**32 stays below 2**64: no wrap-around
        combined = (combined * _COMBINE + per_word[k : k + count]) & MAX_HASH
    # A final mix (murmur3's 32-bit finaliser) spreads nearby values.
    combined ^= combined >> np.uint64(16)
    combined = (combined * np.uint64(0x85EBCA6B)) & MAX_HASH
    combined ^= combined >> np.uint64(13)
    return np.unique(combined)


@dataclass(frozen=True)
class LshParams:
    num_perm: int
    bands: int
    rows: int


def _probability(s: np.ndarray, bands: int, rows: int) -> np.ndarray:
    return 1.0 - (1.0 - s**rows) ** bands


# Candidates are verified with the exact Jaccard similarity, so a false positive only costs a
# comparison while a false negative is a duplicate missed: weigh misses far more.
FALSE_POSITIVE_WEIGHT = 0.05
FALSE_NEGATIVE_WEIGHT = 0.95


def lsh_params(threshold: float, num_perm: int = DEFAULT_NUM_PERM) -> LshParams:
    """Bands x rows (<= num_perm) minimising weighted false positives below the threshold and
    false negatives above it (recall at the threshold is then about 0.9 or better)."""
    grid_low = np.linspace(0.0, threshold, 200)
    grid_high = np.linspace(threshold, 1.0, 200)
    best: tuple[float, int, int] | None = None
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = float(np.mean(_probability(grid_low, bands, rows))) * threshold
            fn = float(np.mean(1 - _probability(grid_high, bands, rows))) * (1 - threshold)
            error = FALSE_POSITIVE_WEIGHT * fp + FALSE_NEGATIVE_WEIGHT * fn
            if best is None or error < best[0]:
                best = (error, bands, rows)
    assert best is not None
    return LshParams(num_perm, best[1], best[2])


class MinHasher:
    """Signatures with ``num_perm`` seeded permutations; the same seed gives the same hashes."""

    def __init__(self, num_perm: int = DEFAULT_NUM_PERM, seed: int = 1) -> None:
        rng = np.random.default_rng(seed)
        # a, b < 2**32 and x < 2**32: a*x + b stays below 2**64, so uint64 never wraps.
        self.a = rng.integers(1, 1 << 32, size=num_perm, dtype=np.uint64)
        self.b = rng.integers(0, 1 << 32, size=num_perm, dtype=np.uint64)
        self.num_perm = num_perm

    def signature(self, hashes: np.ndarray) -> np.ndarray:
        """The signature of a set given as 32-bit hashes (see ``shingle_hashes``)."""
        if not hashes.size:
            return np.full(self.num_perm, MAX_HASH, dtype=np.uint64)
        permuted = (np.outer(hashes, self.a) + self.b) % MERSENNE_61 & MAX_HASH
        return permuted.min(axis=0)


class BandKeys:
    """One 64-bit key per band per signature; equal keys mean an equal band."""

    def __init__(self, params: LshParams, seed: int = 2) -> None:
        self.params = params
        rng = np.random.default_rng(seed)
        self._mix = rng.integers(1, 1 << 63, size=params.rows, dtype=np.uint64) | np.uint64(1)

    def keys(self, signatures: np.ndarray) -> np.ndarray:
        """(n, num_perm) signatures -> (n, bands) keys."""
        p = self.params
        used = signatures[:, : p.bands * p.rows].reshape(len(signatures), p.bands, p.rows)
        with np.errstate(over="ignore"):
            return (used * self._mix).sum(axis=2, dtype=np.uint64)


def candidate_pairs(keys: np.ndarray, ids: np.ndarray, max_group: int = 50) -> set[tuple[int, int]]:
    """Pairs (i < j) of ``ids`` sharing any band key; large buckets are paired as star + chain."""
    pairs: set[tuple[int, int]] = set()
    for band in range(keys.shape[1]):
        column = keys[:, band]
        order = np.argsort(column, kind="stable")
        sorted_keys = column[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        ends = np.r_[starts[1:], len(sorted_keys)]
        for start, end in zip(starts, ends, strict=True):
            if end - start < 2:
                continue
            members = sorted(int(x) for x in ids[order[start:end]])
            if len(members) <= max_group:
                pairs.update(
                    (members[i], members[j])
                    for i in range(len(members))
                    for j in range(i + 1, len(members))
                )
            else:
                pairs.update((members[0], m) for m in members[1:])
                pairs.update(itertools.pairwise(members))
    return pairs
