"""Dedup (exact and MinHash near-duplicates), train/eval splits and filters.

Each operation reads the source in batches and, when applied, writes a new immutable version
(app.data.versions) that records its parent, the operation, its parameters and the counts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from app.data.minhash import (
    BandKeys,
    LshParams,
    MinHasher,
    candidate_pairs,
    jaccard,
    lsh_params,
    shingle_hashes,
    shingles,
)
from app.data.rowtext import normalise, row_text, words
from app.data.tokens import TokenCounter
from app.data.versions import (
    BATCH_ROWS,
    VersionWriter,
    count_rows,
    iter_rows,
    rows_at,
    version_name,
)
from app.models import Dataset

MAX_LISTED = 200
EXCERPT_CHARS = 400


class GovernanceError(ValueError):
    """The operation cannot run as asked (bad parameters, or it would leave nothing)."""


def excerpt(row: dict[str, Any], limit: int = EXCERPT_CHARS) -> str:
    text = row_text(row, with_roles=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def exact_key(row: dict[str, Any]) -> bytes:
    """Rows with the same normalised text (roles and sections included) share this key."""
    text = normalise(row_text(row, with_roles=True))
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


# -- dedup -----------------------------------------------------------------------------------


@dataclass
class DedupOptions:
    near: bool = False
    threshold: float = 0.8
    num_perm: int = 128
    shingle: int = 3


@dataclass
class NearPair:
    kept: int
    duplicate: int
    similarity: float
    kept_text: str = ""
    duplicate_text: str = ""


@dataclass
class DedupReport:
    rows: int
    exact: dict[int, int] = field(default_factory=dict)  # duplicate index -> first index
    near: list[NearPair] = field(default_factory=list)
    lsh: LshParams | None = None

    @property
    def removed(self) -> set[int]:
        return set(self.exact) | {p.duplicate for p in self.near}

    def summary(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows,
            "exact_duplicates": len(self.exact),
            "near_duplicates": len(self.near),
            "rows_out": self.rows - len(self.removed),
        }

    def as_json(self) -> dict[str, Any]:
        exact = sorted(self.exact.items())[:MAX_LISTED]
        return {
            **self.summary(),
            "exact": [{"duplicate": d, "of": o} for d, o in exact],
            "near_pairs": [asdict(p) for p in self.near[:MAX_LISTED]],
            "lsh": asdict(self.lsh) if self.lsh else None,
        }


@lru_cache(maxsize=16)
def _lsh(threshold: float, num_perm: int) -> LshParams:
    return lsh_params(threshold, num_perm)


def _check_dedup(options: DedupOptions) -> None:
    if not 0.0 < options.threshold <= 1.0:
        raise GovernanceError("threshold must be in (0, 1]")
    if not 16 <= options.num_perm <= 512:
        raise GovernanceError("num_perm must be between 16 and 512")
    if not 1 <= options.shingle <= 10:
        raise GovernanceError("shingle must be between 1 and 10 words")


def find_duplicates(session: Session, dataset: Dataset, options: DedupOptions) -> DedupReport:
    """Exact duplicates always; near duplicates (Jaccard >= threshold, verified) when asked."""
    _check_dedup(options)
    report = DedupReport(rows=0)
    first_seen: dict[bytes, int] = {}
    hasher = MinHasher(options.num_perm) if options.near else None
    params = _lsh(options.threshold, options.num_perm) if options.near else None
    bander = BandKeys(params) if params else None
    keys: list[np.ndarray] = []
    ids: list[int] = []
    batch: list[np.ndarray] = []
    for index, row in iter_rows(session, dataset.id):
        report.rows += 1
        key = exact_key(row)
        if key in first_seen:
            report.exact[index] = first_seen[key]
            continue
        first_seen[key] = index
        if hasher is not None:
            hashes = shingle_hashes(words(row_text(row)), options.shingle)
            batch.append(hasher.signature(hashes))
            ids.append(index)
            if len(batch) >= BATCH_ROWS:
                keys.append(bander.keys(np.stack(batch)))  # type: ignore[union-attr]
                batch = []
    del first_seen
    if bander is not None:
        if batch:
            keys.append(bander.keys(np.stack(batch)))
        report.lsh = params
        if keys:
            pairs = candidate_pairs(np.concatenate(keys), np.asarray(ids, dtype=np.int64))
            report.near = _verify(session, dataset, pairs, options)
    return report


def _verify(
    session: Session, dataset: Dataset, pairs: set[tuple[int, int]], options: DedupOptions
) -> list[NearPair]:
    """Keep-first greedy: a row is a near duplicate of the earliest kept row it truly matches."""
    rows = rows_at(session, dataset.id, {i for pair in pairs for i in pair})
    sets = {i: shingles(words(row_text(r)), options.shingle) for i, r in rows.items()}
    partners: dict[int, list[tuple[int, float]]] = {}
    for i, j in sorted(pairs):
        similarity = jaccard(sets[i], sets[j])
        if similarity >= options.threshold:
            partners.setdefault(j, []).append((i, similarity))
    dropped: set[int] = set()
    found: list[NearPair] = []
    for j in sorted(partners):
        for i, similarity in partners[j]:
            if i not in dropped:
                dropped.add(j)
                pair = NearPair(i, j, round(similarity, 4), excerpt(rows[i]), excerpt(rows[j]))
                found.append(pair)
                break
    return found


def apply_dedup(
    session: Session, dataset: Dataset, options: DedupOptions, report: DedupReport
) -> Dataset:
    removed = report.removed
    if len(removed) >= report.rows:
        raise GovernanceError("dedup would remove every row")
    op = {"op": "dedup", "params": asdict(options)}
    with VersionWriter(session, dataset, version_name(dataset, "dedup"), op) as writer:
        for index, row in iter_rows(session, dataset.id):
            if index not in removed:
                writer.add(row)
        return writer.finish(**report.summary())


# -- split -----------------------------------------------------------------------------------


def _value_key(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _write_split(
    session: Session, dataset: Dataset, op: dict[str, Any], to_eval: Iterator[bool]
) -> tuple[Dataset, Dataset]:
    train_op, eval_op = {**op, "part": "train"}, {**op, "part": "eval"}
    with (
        VersionWriter(session, dataset, version_name(dataset, "train"), train_op) as train,
        VersionWriter(session, dataset, version_name(dataset, "eval"), eval_op) as held,
    ):
        for (_, row), is_eval in zip(iter_rows(session, dataset.id), to_eval, strict=False):
            (held if is_eval else train).add(row)
        if not train.dataset.num_rows or not held.dataset.num_rows:
            raise GovernanceError(
                f"the split leaves {train.dataset.num_rows} training and "
                f"{held.dataset.num_rows} eval rows; both need at least one"
            )
        counts = {"train_rows": train.dataset.num_rows, "eval_rows": held.dataset.num_rows}
        return train.finish(**counts), held.finish(**counts)


def eval_mask(rows: int, eval_ratio: float, seed: int) -> np.ndarray:
    """Which positions go to eval: exactly round(rows * ratio) (at least 1), seeded."""
    if not 0.0 < eval_ratio < 1.0:
        raise GovernanceError("eval_ratio must be between 0 and 1 (exclusive)")
    if rows < 2:
        raise GovernanceError("a split needs at least two rows")
    size = min(rows - 1, max(1, round(rows * eval_ratio)))
    mask = np.zeros(rows, dtype=bool)
    mask[np.random.default_rng(seed).choice(rows, size=size, replace=False)] = True
    return mask


def split_random(
    session: Session, dataset: Dataset, eval_ratio: float, seed: int
) -> tuple[Dataset, Dataset]:
    mask = eval_mask(count_rows(session, dataset.id), eval_ratio, seed)
    op = {"op": "split", "params": {"eval_ratio": eval_ratio, "seed": seed}}
    return _write_split(session, dataset, op, (bool(x) for x in mask))


def split_by_column(
    session: Session, dataset: Dataset, column: str, eval_values: list[Any]
) -> tuple[Dataset, Dataset]:
    if not column or not eval_values:
        raise GovernanceError("a split by column needs by_column and eval_values")
    wanted = {_value_key(v) for v in eval_values}
    op = {"op": "split", "params": {"by_column": column, "eval_values": eval_values}}
    flags = (
        column in row and _value_key(row[column]) in wanted
        for _, row in iter_rows(session, dataset.id)
    )
    return _write_split(session, dataset, op, flags)


# -- filters ---------------------------------------------------------------------------------


@dataclass
class FilterSpec:
    min_chars: int | None = None
    max_chars: int | None = None
    min_tokens: int | None = None
    max_tokens: int | None = None
    model: str | None = None
    label: bool | None = None
    search: str | None = None
    exclude_search: bool = False

    @property
    def needs_tokens(self) -> bool:
        return self.min_tokens is not None or self.max_tokens is not None

    def params(self) -> dict[str, Any]:
        chosen = {k: v for k, v in asdict(self).items() if v is not None and v != ""}
        if not self.exclude_search:
            chosen.pop("exclude_search")
        if not self.needs_tokens:
            chosen.pop("model", None)
        return chosen


def _check_filter(dataset: Dataset, spec: FilterSpec) -> None:
    if not spec.params():
        raise GovernanceError("choose at least one filter")
    if spec.label is not None and dataset.kind != "kto":
        raise GovernanceError("only kto datasets have a label to filter by")


def _in_range(value: int, low: int | None, high: int | None) -> bool:
    return (low is None or value >= low) and (high is None or value <= high)


def _keeps(spec: FilterSpec, row: dict[str, Any], tokens: int | None) -> bool:
    text = row_text(row)
    if not _in_range(len(text), spec.min_chars, spec.max_chars):
        return False
    if tokens is not None and not _in_range(tokens, spec.min_tokens, spec.max_tokens):
        return False
    if spec.label is not None and row.get("label") is not spec.label:
        return False
    if spec.search:
        found = normalise(spec.search) in normalise(text)
        return found != spec.exclude_search
    return True


def filter_rows(
    session: Session, dataset: Dataset, spec: FilterSpec, counter: TokenCounter | None
) -> Dataset:
    _check_filter(dataset, spec)
    if spec.needs_tokens and counter is None:
        raise GovernanceError("a token-length filter needs a base model with a tokenizer")
    params = spec.params() | ({"model": counter.model_name} if spec.needs_tokens else {})
    op = {"op": "filter", "params": params}
    with VersionWriter(session, dataset, version_name(dataset, "filtered"), op) as writer:
        seen = 0
        pending: list[dict[str, Any]] = []

        def flush() -> None:
            lengths = counter.lengths(pending) if spec.needs_tokens else [None] * len(pending)
            for row, tokens in zip(pending, lengths, strict=True):
                if _keeps(spec, row, tokens):
                    writer.add(row)
            pending.clear()

        for _, row in iter_rows(session, dataset.id):
            seen += 1
            pending.append(row)
            if len(pending) >= BATCH_ROWS:
                flush()
        flush()
        if not writer.dataset.num_rows:
            raise GovernanceError(f"the filter keeps none of the {seen} rows")
        return writer.finish(rows_in=seen, rows_out=writer.dataset.num_rows)
