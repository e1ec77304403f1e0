"""Training health checks: pure functions over the numbers a run produces (no torch, no I/O).

``HealthMonitor`` keeps the history the checks need and turns each optimizer step, logged grad
norm and evaluation into alarms: a NaN/inf loss (fatal: the run stops and fails), a loss spike
against the running median, an exploding grad norm, and overfitting (the eval loss rising while
the train loss falls). ``worker.training.callbacks.HealthCallback`` feeds it and records the
alarms as job events.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

NAN_LOSS = "nan_loss"
LOSS_SPIKE = "loss_spike"
GRAD_NORM = "grad_norm_explosion"
OVERFITTING = "overfitting"
EARLY_STOPPING = "early_stopping"

ADVICE = {
    NAN_LOSS: "Lower the learning rate (try ten times lower), keep gradient clipping on "
    "(max_grad_norm 1.0) and add warmup (warmup_steps); look at the batch's rows for empty, "
    "very long or broken examples.",
    LOSS_SPIKE: "Lower the learning rate, add warmup (warmup_steps) or clip gradients harder "
    "(max_grad_norm 1.0 or less); look at the batch's rows for outliers or mislabelled examples.",
    GRAD_NORM: "Clip gradients (max_grad_norm 1.0 or less), lower the learning rate or add "
    "warmup (warmup_steps); a run whose grad norm keeps growing usually diverges next.",
    OVERFITTING: "The model is memorising the training rows: stop earlier "
    "(early_stopping_patience), train fewer steps or epochs, lower the learning rate, raise "
    "lora_dropout or weight_decay, or add more varied data.",
    EARLY_STOPPING: "The run ended before max_steps because the eval loss stopped improving; the "
    "checkpoint with the best eval loss is the final model.",
}

# (loss, dataset rows) of each micro-batch of one optimizer step.
MicroBatch = tuple[float, Sequence[int]]


@dataclass(frozen=True)
class HealthLimits:
    """When a number counts as unhealthy. Defaults are deliberately loose: an alarm should mean
    something a person would want to look at."""

    median_window: int = 10  # recent step losses / grad norms the running median is taken over
    min_history: int = 8  # values needed before spikes and explosions are judged
    spike_factor: float = 3.0  # a step loss this many times the running median is a spike
    spike_min_increase: float = 0.5  # ... and at least this much above it (tiny losses jitter)
    grad_norm_factor: float = 10.0  # a grad norm this many times its running median explodes
    overfit_evaluations: int = 3  # eval loss rising (train loss falling) this many evals in a row
    cooldown_steps: int = 5  # the same alarm is not raised again within this many steps
    max_alarms_per_kind: int = 20


@dataclass(frozen=True)
class Alarm:
    kind: str
    severity: str  # info | warning | error
    step: int
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def fatal(self) -> bool:
        return self.kind == NAN_LOSS

    @property
    def advice(self) -> str:
        return ADVICE[self.kind]


def is_finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def describe_rows(rows: Sequence[int], limit: int = 16) -> str:
    """'dataset rows 3, 17' for a message (the first ``limit``, then how many more)."""
    if not rows:
        return "dataset rows unknown"
    shown = ", ".join(str(r) for r in rows[:limit])
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return f"dataset row{'s' if len(rows) > 1 else ''} {shown}{more}"


def _number(value: float) -> str:
    return f"{value:.4g}"


def step_rows(micro_batches: Sequence[MicroBatch]) -> list[int]:
    return [row for _, rows in micro_batches for row in rows]


def step_loss(micro_batches: Sequence[MicroBatch]) -> float:
    """The optimizer step's loss: the trainer scales each micro-batch's loss for gradient
    accumulation, so they add up to the step's mean (what the trainer logs)."""
    return sum(loss for loss, _ in micro_batches)


def nan_loss_alarm(step: int, micro_batches: Sequence[MicroBatch]) -> Alarm | None:
    """The first micro-batch whose loss is NaN or infinite, naming its rows."""
    for loss, rows in micro_batches:
        if not is_finite(loss):
            return Alarm(
                NAN_LOSS,
                "error",
                step,
                f"The loss became {loss} at step {step} on {describe_rows(rows)}: "
                "training stopped.",
                {"loss": str(loss), "rows": list(rows), "step_rows": step_rows(micro_batches)},
            )
    return None


def spike_alarm(
    step: int, loss: float, history: Sequence[float], rows: Sequence[int], limits: HealthLimits
) -> Alarm | None:
    """A step loss far above the running median of the steps before it."""
    if len(history) < limits.min_history:
        return None
    median = statistics.median(history[-limits.median_window :])
    if loss <= median * limits.spike_factor or loss - median < limits.spike_min_increase:
        return None
    return Alarm(
        LOSS_SPIKE,
        "warning",
        step,
        f"Loss spike at step {step}: {_number(loss)}, {_number(loss / median)} times the running "
        f"median {_number(median)}, on {describe_rows(rows)}.",
        {"loss": loss, "median": median, "ratio": loss / median, "rows": list(rows)},
    )


def grad_norm_alarm(
    step: int, grad_norm: float, history: Sequence[float], limits: HealthLimits
) -> Alarm | None:
    """A grad norm that is not finite, or far above its running median."""
    if not is_finite(grad_norm):
        return Alarm(
            GRAD_NORM,
            "error",
            step,
            f"The gradient norm is {grad_norm} at step {step}.",
            {"grad_norm": str(grad_norm)},
        )
    if len(history) < limits.min_history:
        return None
    median = statistics.median(history[-limits.median_window :])
    if median <= 0 or grad_norm <= median * limits.grad_norm_factor:
        return None
    return Alarm(
        GRAD_NORM,
        "warning",
        step,
        f"Exploding gradient norm at step {step}: {_number(grad_norm)}, "
        f"{_number(grad_norm / median)} times the running median {_number(median)}.",
        {"grad_norm": grad_norm, "median": median, "ratio": grad_norm / median},
    )


@dataclass(frozen=True)
class Evaluation:
    step: int
    eval_loss: float
    train_loss: float | None  # mean step loss since the previous evaluation


def overfitting_streak(evaluations: Sequence[Evaluation]) -> int:
    """How many evaluations in a row (ending with the last) raised the eval loss while the train
    loss stayed below where it was when the eval loss last fell."""
    streak = 0
    for index in range(len(evaluations) - 1, 0, -1):
        now, before = evaluations[index], evaluations[index - 1]
        if now.eval_loss <= before.eval_loss:
            break
        streak += 1
    if streak == 0:
        return 0
    start, last = evaluations[-1 - streak], evaluations[-1]
    if start.train_loss is None or last.train_loss is None or last.train_loss >= start.train_loss:
        return 0
    return streak


def overfitting_alarm(evaluations: Sequence[Evaluation], limits: HealthLimits) -> Alarm | None:
    """Raised once per streak, when it reaches ``limits.overfit_evaluations``."""
    if overfitting_streak(evaluations) != limits.overfit_evaluations:
        return None
    window = evaluations[-1 - limits.overfit_evaluations :]
    first, last = window[0], window[-1]
    assert first.train_loss is not None and last.train_loss is not None
    return Alarm(
        OVERFITTING,
        "warning",
        last.step,
        f"Overfitting: the eval loss rose for {limits.overfit_evaluations} evaluations in a row "
        f"(step {first.step} to {last.step}: {_number(first.eval_loss)} to "
        f"{_number(last.eval_loss)}) while the train loss fell ({_number(first.train_loss)} to "
        f"{_number(last.train_loss)}).",
        {
            "steps": [e.step for e in window],
            "eval_loss": [e.eval_loss for e in window],
            "train_loss": [e.train_loss for e in window],
        },
    )


def early_stopping_alarm(
    step: int, patience: int, threshold: float, metric: str, best: float | None
) -> Alarm:
    best_text = f" (best {metric} {_number(best)})" if best is not None else ""
    return Alarm(
        EARLY_STOPPING,
        "info",
        step,
        f"Early stopping at step {step}: {metric} did not improve by more than {threshold} for "
        f"{patience} evaluations{best_text}.",
        {"patience": patience, "threshold": threshold, "metric": metric, "best": best},
    )


class HealthMonitor:
    """The checks with their history; each method returns the alarms to record (repeats of a
    kind are held back for ``cooldown_steps`` and capped at ``max_alarms_per_kind``)."""

    def __init__(self, limits: HealthLimits | None = None) -> None:
        self.limits = limits or HealthLimits()
        self.losses: list[float] = []
        self.grad_norms: list[float] = []
        self.evaluations: list[Evaluation] = []
        self._losses_since_eval: list[float] = []
        self._raised: dict[str, list[int]] = {}

    def train_step(self, step: int, micro_batches: Sequence[MicroBatch]) -> list[Alarm]:
        if not micro_batches:
            return []
        if nan := nan_loss_alarm(step, micro_batches):
            return [nan]  # fatal: never held back
        loss = step_loss(micro_batches)
        alarm = spike_alarm(step, loss, self.losses, step_rows(micro_batches), self.limits)
        self.losses.append(loss)
        self._losses_since_eval.append(loss)
        return self._admit(alarm)

    def logged_grad_norm(self, step: int, grad_norm: float | None) -> list[Alarm]:
        if grad_norm is None:
            return []
        alarm = grad_norm_alarm(step, grad_norm, self.grad_norms, self.limits)
        if is_finite(grad_norm):
            self.grad_norms.append(grad_norm)
        return self._admit(alarm)

    def evaluated(self, step: int, eval_loss: float | None) -> list[Alarm]:
        if not is_finite(eval_loss):
            return []
        assert eval_loss is not None
        recent = self._losses_since_eval
        train_loss = statistics.fmean(recent) if recent else self._last_train_loss()
        self._losses_since_eval = []
        self.evaluations.append(Evaluation(step, eval_loss, train_loss))
        return self._admit(overfitting_alarm(self.evaluations, self.limits))

    def _last_train_loss(self) -> float | None:
        return self.evaluations[-1].train_loss if self.evaluations else None

    def _admit(self, alarm: Alarm | None) -> list[Alarm]:
        if alarm is None:
            return []
        steps = self._raised.setdefault(alarm.kind, [])
        if len(steps) >= self.limits.max_alarms_per_kind:
            return []
        if steps and alarm.step - steps[-1] < self.limits.cooldown_steps:
            return []
        steps.append(alarm.step)
        return [alarm]
