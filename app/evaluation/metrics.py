"""The metrics an evaluation can ask for, which dataset kinds and models each needs, and how
checkpoints rank by one of them."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

LOSS_METRICS = ("eval_loss", "perplexity")
GENERATION_METRICS = ("exact_match", "rouge_l", "bleu")
PREFERENCE_METRICS = ("preference_accuracy",)
STOP_METRICS = ("stop_rate",)
METRICS = (*LOSS_METRICS, *GENERATION_METRICS, *PREFERENCE_METRICS, *STOP_METRICS)
LOWER_IS_BETTER = frozenset(LOSS_METRICS)

HELP = {
    "eval_loss": "mean negative log-likelihood per trained token (the studio's loss mask)",
    "perplexity": "exp(eval_loss)",
    "exact_match": "share of answers equal to the reference (case and spacing ignored)",
    "rouge_l": "ROUGE-L F1 against the reference, averaged over answers",
    "bleu": "corpus BLEU (sacrebleu's defaults), 0 to 100",
    "preference_accuracy": "share of pairs where the chosen answer scores above the rejected",
    "stop_rate": "share of answers that end with the end-of-turn token",
}

# Dataset kind -> the metrics its rows can measure.
KIND_METRICS: dict[str, tuple[str, ...]] = {
    "sft": (*LOSS_METRICS, *GENERATION_METRICS, *STOP_METRICS),
    "text": LOSS_METRICS,
    "prompt": (*GENERATION_METRICS, *STOP_METRICS),
    "preference": (*PREFERENCE_METRICS, *STOP_METRICS),
    "kto": STOP_METRICS,
}
# A reward model has a score head, no language-model head: it can only rank answers.
REWARD_MODEL_METRICS = PREFERENCE_METRICS


class MetricsError(ValueError):
    pass


def applicable(kind: str, *, reward_model: bool = False) -> tuple[str, ...]:
    metrics = KIND_METRICS.get(kind, ())
    if reward_model:
        metrics = tuple(m for m in metrics if m in REWARD_MODEL_METRICS)
    return metrics


def choose_metrics(
    asked: Sequence[str] | None, kind: str, *, reward_model: bool = False, has_references: bool
) -> list[str]:
    """The metrics to measure: those asked for (each checked against the dataset kind and the
    model), or every one that applies. Generation metrics need reference answers."""
    fits = applicable(kind, reward_model=reward_model)
    if not has_references:
        fits = tuple(m for m in fits if m not in GENERATION_METRICS)
    if not asked:
        if not fits:
            raise MetricsError(_nothing_to_measure(kind, reward_model))
        return list(fits)
    unknown = [m for m in asked if m not in METRICS]
    if unknown:
        raise MetricsError(f"unknown metric '{unknown[0]}' (known: {', '.join(METRICS)})")
    for metric in asked:
        if metric not in fits:
            raise MetricsError(_why_not(metric, kind, reward_model, has_references))
    return list(dict.fromkeys(asked))


def _nothing_to_measure(kind: str, reward_model: bool) -> str:
    if reward_model:
        return "a reward model can only be evaluated on preference pairs (preference_accuracy)"
    return f"nothing to measure on a {kind} dataset"


def _why_not(metric: str, kind: str, reward_model: bool, has_references: bool) -> str:
    if reward_model and metric not in REWARD_MODEL_METRICS:
        return (
            f"'{metric}' needs a language model; a reward model has a score head and is "
            "evaluated with preference_accuracy on preference pairs"
        )
    if metric in GENERATION_METRICS and kind in ("sft", "prompt") and not has_references:
        return f"'{metric}' compares answers with references, and these prompt rows have none"
    kinds = [k for k, metrics in KIND_METRICS.items() if metric in metrics]
    return f"'{metric}' needs a dataset of kind {' or '.join(kinds)}, not {kind}"


@dataclass(frozen=True)
class Ranked:
    value: float
    key: object  # what the caller ranks (an evaluation)


def rank(entries: Iterable[tuple[float | None, object]], metric: str) -> list[Ranked]:
    """Entries with a value, best first (lowest for loss and perplexity, else highest); ties
    keep their order."""
    valued = [
        Ranked(float(v), key)
        for v, key in entries
        if isinstance(v, int | float) and math.isfinite(v)
    ]
    sign = 1 if metric in LOWER_IS_BETTER else -1
    return sorted(valued, key=lambda r: sign * r.value)
