"""Which metrics an evaluation measures, and how checkpoints rank."""

from __future__ import annotations

import math

import pytest

from app.evaluation.metrics import MetricsError, choose_metrics, rank


def test_every_metric_the_kind_allows_when_none_is_asked() -> None:
    assert choose_metrics(None, "sft", has_references=True) == [
        "eval_loss", "perplexity", "exact_match", "rouge_l", "bleu", "stop_rate"
    ]  # fmt: skip
    assert choose_metrics([], "text", has_references=False) == ["eval_loss", "perplexity"]
    assert choose_metrics(None, "preference", has_references=False) == [
        "preference_accuracy",
        "stop_rate",
    ]
    # Prompt rows without references: only the stop check.
    assert choose_metrics(None, "prompt", has_references=False) == ["stop_rate"]
    assert choose_metrics(None, "preference", reward_model=True, has_references=False) == [
        "preference_accuracy"
    ]


@pytest.mark.parametrize(
    ("asked", "kind", "reward_model", "has_references", "reason"),
    [
        (["perplexity"], "preference", False, False, "needs a dataset of kind sft or text"),
        (["preference_accuracy"], "sft", False, True, "needs a dataset of kind preference"),
        (["bleu"], "prompt", False, False, "these prompt rows have none"),
        (["accuracy"], "sft", False, True, "unknown metric 'accuracy'"),
        (["eval_loss"], "sft", True, True, "a reward model has a score head"),
        (None, "sft", True, True, "only be evaluated on preference pairs"),
    ],
)
def test_refusals_say_why(
    asked: list[str] | None, kind: str, reward_model: bool, has_references: bool, reason: str
) -> None:
    with pytest.raises(MetricsError, match=reason):
        choose_metrics(asked, kind, reward_model=reward_model, has_references=has_references)


def test_asked_metrics_are_kept_in_order_once() -> None:
    assert choose_metrics(["bleu", "perplexity", "bleu"], "sft", has_references=True) == [
        "bleu",
        "perplexity",
    ]


def test_loss_ranks_lowest_first_and_scores_highest_first() -> None:
    entries = [(3.0, "a"), (1.0, "b"), (None, "c"), (2.0, "d"), (math.nan, "e")]
    assert [r.key for r in rank(entries, "perplexity")] == ["b", "d", "a"]
    assert [r.key for r in rank(entries, "rouge_l")] == ["a", "d", "b"]
    assert [r.key for r in rank([(1.0, "x"), (1.0, "y")], "bleu")] == ["x", "y"]
