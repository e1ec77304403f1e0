"""Contamination: which training rows share a word n-gram with an eval set.

The eval set is indexed once: the word n-grams of each of its texts (every message, text and
reference), n = 13 by default; a text shorter than n words counts as one n-gram of its own
length, down to ``min_n`` words (shorter ones are not checked). Training rows are then streamed
and every shared n-gram flags a (training row, eval row) pair, quoted by the longest
overlapping stretch of the training text.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from app.data.governance import MAX_LISTED, GovernanceError, excerpt
from app.data.rowtext import row_segments, row_text, word_spans, words
from app.data.versions import VersionWriter, iter_rows, rows_at, version_name
from app.models import Dataset

MAX_OVERLAP_CHARS = 600


@dataclass
class ContaminationOptions:
    n: int = 13
    min_n: int = 5

    def check(self) -> None:
        if not 1 <= self.min_n <= self.n <= 64:
            raise GovernanceError("n-gram sizes must satisfy 1 <= min_n <= n <= 64")


@dataclass
class FlaggedPair:
    train_index: int
    eval_index: int
    shared_ngrams: int
    overlap: str
    eval_text: str = ""


@dataclass
class ContaminationReport:
    train_rows: int = 0
    eval_rows: int = 0
    eval_rows_too_short: int = 0
    pair_count: int = 0
    pairs: list[FlaggedPair] = field(default_factory=list)
    flagged_train: set[int] = field(default_factory=set)
    flagged_eval: set[int] = field(default_factory=set)

    def summary(self) -> dict[str, Any]:
        return {
            "train_rows": self.train_rows,
            "eval_rows": self.eval_rows,
            "eval_rows_too_short": self.eval_rows_too_short,
            "flagged_pairs": self.pair_count,
            "flagged_train_rows": len(self.flagged_train),
            "flagged_eval_rows": len(self.flagged_eval),
        }

    def as_json(self) -> dict[str, Any]:
        return {**self.summary(), "pairs": [asdict(p) for p in self.pairs]}


def _grams(tokens: list[str], size: int) -> list[str]:
    return [" ".join(tokens[i : i + size]) for i in range(len(tokens) - size + 1)]


def _eval_index(
    session: Session, eval_set: Dataset, options: ContaminationOptions, report: ContaminationReport
) -> dict[int, dict[str, list[int]]]:
    """n-gram size -> n-gram -> eval row indexes."""
    index: dict[int, dict[str, list[int]]] = defaultdict(dict)
    for position, row in iter_rows(session, eval_set.id):
        report.eval_rows += 1
        grams: set[tuple[int, str]] = set()
        for segment in row_segments(row):
            tokens = words(segment)
            size = min(options.n, len(tokens))
            if size >= options.min_n:
                grams.update((size, gram) for gram in _grams(tokens, size))
        if not grams:
            report.eval_rows_too_short += 1
        for size, gram in grams:
            index[size].setdefault(gram, []).append(position)
    return index


def _longest_stretch(hits: list[tuple[int, int]]) -> tuple[int, int, int]:
    """Merge word intervals [start, start + size); the longest as (start, end, shared)."""
    best = (0, 0)
    current: list[int] | None = None
    for start, size in sorted(hits):
        end = start + size
        if current is not None and start <= current[1]:
            current[1] = max(current[1], end)
        else:
            current = [start, end]
        if current[1] - current[0] > best[1] - best[0]:
            best = (current[0], current[1])
    return best[0], best[1], len(hits)


def _quote(text: str, spans: list[tuple[str, int, int]], start: int, end: int) -> str:
    quoted = text[spans[start][1] : spans[end - 1][2]]
    return quoted if len(quoted) <= MAX_OVERLAP_CHARS else quoted[: MAX_OVERLAP_CHARS - 1] + "…"


def check_contamination(
    session: Session, train: Dataset, eval_set: Dataset, options: ContaminationOptions
) -> ContaminationReport:
    options.check()
    if train.id == eval_set.id:
        raise GovernanceError("check a training set against a different (eval) dataset")
    report = ContaminationReport()
    index = _eval_index(session, eval_set, options, report)
    for train_index, row in iter_rows(session, train.id):
        report.train_rows += 1
        text = row_text(row)
        spans = word_spans(text)
        tokens = [w for w, _, _ in spans]
        hits: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for size, grams in index.items():
            for start, gram in enumerate(_grams(tokens, size)):
                for eval_index in grams.get(gram, ()):
                    hits[eval_index].append((start, size))
        for eval_index, found in sorted(hits.items()):
            report.pair_count += 1
            report.flagged_train.add(train_index)
            report.flagged_eval.add(eval_index)
            if len(report.pairs) < MAX_LISTED:
                start, end, shared = _longest_stretch(found)
                quote = _quote(text, spans, start, end)
                report.pairs.append(FlaggedPair(train_index, eval_index, shared, quote))
    shown = rows_at(session, eval_set.id, {p.eval_index for p in report.pairs})
    for pair in report.pairs:
        pair.eval_text = excerpt(shown.get(pair.eval_index, {}))
    return report


def decontaminate(
    session: Session,
    train: Dataset,
    eval_set: Dataset,
    options: ContaminationOptions,
    report: ContaminationReport,
) -> Dataset:
    """A version of ``train`` without the flagged rows."""
    if len(report.flagged_train) >= report.train_rows:
        raise GovernanceError("every training row is flagged; nothing would remain")
    op = {"op": "decontaminate", "params": {"against": eval_set.id, **asdict(options)}}
    with VersionWriter(session, train, version_name(train, "decontaminated"), op) as writer:
        for train_index, row in iter_rows(session, train.id):
            if train_index not in report.flagged_train:
                writer.add(row)
        return writer.finish(
            **report.summary(), rows_in=report.train_rows, rows_out=writer.dataset.num_rows
        )
