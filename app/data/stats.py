"""Dataset statistics, computed in one streaming pass and cached in Dataset.stats.

Token lengths are what a chosen base model sees: each row rendered with its chat template and
counted with its tokenizer. Stats computed with the defaults (the first base model with a
tokenizer, the spec's default max_length) are cached on the dataset, which never changes.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from app.data.governance import exact_key
from app.data.rowtext import row_text, turns
from app.data.scripts import dominant_script, letter_scripts
from app.data.tokens import TokenCounter, TokenizerUnavailable, find_model, load_counter
from app.data.versions import BATCH_ROWS, iter_rows
from app.models import BaseModel, Dataset
from app.spec import TrainingSpec

STATS_VERSION = 1
DEFAULT_MAX_LENGTH: int = TrainingSpec.model_fields["max_length"].default
HISTOGRAM_BINS = 20
MAX_TURN_BUCKET = 10


class StatsRequestError(ValueError):
    pass


def nice_width(span: float, bins: int) -> int:
    """A bin width of 1, 2 or 5 times a power of ten covering ``span`` in ``bins`` bins."""
    raw = max(span / bins, 1.0)
    power = 10 ** math.floor(math.log10(raw))
    for step in (1, 2, 5, 10):
        if step * power >= raw:
            return int(step * power)
    return int(10 * power)


def histogram(values: np.ndarray, bins: int = HISTOGRAM_BINS) -> dict[str, list[int]]:
    """Equal-width bins from 0: ``edges`` has one more entry than ``counts``."""
    if values.size == 0:
        return {"edges": [0, 1], "counts": [0]}
    width = nice_width(float(values.max()) + 1, bins)
    count = int(values.max()) // width + 1
    edges = [i * width for i in range(count + 1)]
    counts = np.bincount(values // width, minlength=count)
    return {"edges": edges, "counts": [int(c) for c in counts]}


def summary(values: np.ndarray) -> dict[str, Any]:
    if values.size == 0:
        return {"min": 0, "mean": 0.0, "p50": 0, "p90": 0, "p99": 0, "max": 0}
    p50, p90, p99 = np.percentile(values, [50, 90, 99], method="higher")
    return {
        "min": int(values.min()),
        "mean": round(float(values.mean()), 2),
        "p50": int(p50),
        "p90": int(p90),
        "p99": int(p99),
        "max": int(values.max()),
        "histogram": histogram(values),
    }


class _Accumulator:
    def __init__(self, counter: TokenCounter | None) -> None:
        self.counter = counter
        self.rows = 0
        self.turns: Counter[int] = Counter()
        self.chars = array("q")
        self.tokens = array("q")
        self.labels: Counter[str] = Counter()
        self.letters: Counter[str] = Counter()
        self.row_scripts: Counter[str] = Counter()
        self.seen: set[bytes] = set()
        self.duplicates = 0
        self.pending: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any]) -> None:
        self.rows += 1
        self.turns[turns(row)] += 1
        text = row_text(row)
        self.chars.append(len(text))
        scripts = letter_scripts(text)
        self.letters.update(scripts)
        self.row_scripts[dominant_script(scripts)] += 1
        if "label" in row:
            self.labels[str(row["label"] is True).lower()] += 1
        key = exact_key(row)
        if key in self.seen:
            self.duplicates += 1
        self.seen.add(key)
        if self.counter is not None:
            self.pending.append(row)
            if len(self.pending) >= BATCH_ROWS:
                self.flush()

    def flush(self) -> None:
        if self.counter is not None and self.pending:
            self.tokens.extend(self.counter.lengths(self.pending))
        self.pending = []


def _turns_json(counts: Counter[int], rows: int) -> dict[str, Any]:
    buckets: Counter[str] = Counter()
    for n, c in counts.items():
        buckets[str(n) if n < MAX_TURN_BUCKET else f"{MAX_TURN_BUCKET}+"] += c
    total = sum(n * c for n, c in counts.items())
    ordered = sorted(buckets.items(), key=lambda kv: int(kv[0].rstrip("+")))
    return {
        "min": min(counts, default=0),
        "mean": round(total / rows, 2) if rows else 0.0,
        "max": max(counts, default=0),
        "counts": dict(ordered),
    }


def _scripts_json(letters: Counter[str], rows: Counter[str]) -> dict[str, Any]:
    total = sum(letters.values())
    return {
        "letters": {k: round(v / total, 4) for k, v in letters.most_common()} if total else {},
        "rows": dict(rows.most_common()),
    }


def _tokens_json(acc: _Accumulator, max_length: int) -> dict[str, Any]:
    assert acc.counter is not None
    values = np.frombuffer(acc.tokens, dtype=np.int64)
    truncated = int((values > max_length).sum())
    return {
        **summary(values),
        "model": acc.counter.model_name,
        "max_length": max_length,
        "truncated": truncated,
        "truncated_share": round(truncated / acc.rows, 4) if acc.rows else 0.0,
        "template_errors": acc.counter.template_errors,
        "template_error": acc.counter.first_template_error,
    }


def compute_stats(
    session: Session, dataset: Dataset, model: BaseModel | None, max_length: int
) -> dict[str, Any]:
    counter: TokenCounter | None = None
    unavailable = "no base model with a tokenizer.json is registered"
    if model is not None:
        try:
            counter = load_counter(model)
        except TokenizerUnavailable as exc:
            unavailable = str(exc)
    acc = _Accumulator(counter)
    for _, row in iter_rows(session, dataset.id):
        acc.add(row)
    acc.flush()
    return {
        "version": STATS_VERSION,
        "params": {
            "model": model.name if model else None,
            "model_id": model.id if model else None,
            "max_length": max_length,
        },
        "rows": acc.rows,
        "turns": _turns_json(acc.turns, acc.rows),
        "chars": summary(np.frombuffer(acc.chars, dtype=np.int64)),
        "tokens": _tokens_json(acc, max_length) if counter else None,
        "tokens_unavailable": None if counter else unavailable,
        "kto": dict(sorted(acc.labels.items())) if dataset.kind == "kto" else None,
        "scripts": _scripts_json(acc.letters, acc.row_scripts),
        "duplicates": {
            "exact": acc.duplicates,
            "rate": round(acc.duplicates / acc.rows, 4) if acc.rows else 0.0,
        },
    }


def dataset_stats(
    session: Session,
    dataset: Dataset,
    model_ref: int | str | None = None,
    max_length: int | None = None,
) -> dict[str, Any]:
    """Stats for ``model_ref`` (id or name; default: first with a tokenizer) and max_length."""
    if max_length is not None and not 1 <= max_length <= 1_048_576:
        raise StatsRequestError("max_length must be between 1 and 1048576")
    model = find_model(session, model_ref)
    if model is None and model_ref not in (None, ""):
        raise StatsRequestError(f"no base model '{model_ref}'")
    default_model = find_model(session, None)
    length = max_length or DEFAULT_MAX_LENGTH
    params = {
        "model": model.name if model else None,
        "model_id": model.id if model else None,
        "max_length": length,
    }
    cached = dataset.stats or {}
    if cached.get("version") == STATS_VERSION and cached.get("params") == params:
        return cached
    stats = compute_stats(session, dataset, model, length)
    same_model = (model.id if model else None) == (default_model.id if default_model else None)
    is_default = same_model and length == DEFAULT_MAX_LENGTH
    if is_default:
        dataset.stats = stats
        session.flush()
    return stats
