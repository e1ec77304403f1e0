"""Training health checks (worker.training.health): pure numbers in, alarms out."""

from __future__ import annotations

import math

import pytest

from worker.training.health import (
    EARLY_STOPPING,
    GRAD_NORM,
    LOSS_SPIKE,
    NAN_LOSS,
    OVERFITTING,
    Evaluation,
    HealthLimits,
    HealthMonitor,
    describe_rows,
    early_stopping_alarm,
    overfitting_streak,
    step_loss,
)


def _steps(monitor: HealthMonitor, losses: list[float], first_step: int = 1) -> list:
    alarms = []
    for offset, loss in enumerate(losses):
        step = first_step + offset
        alarms += monitor.train_step(step, [(loss, [2 * step, 2 * step + 1])])
    return alarms


def test_nan_loss_is_fatal_and_names_the_micro_batch_rows() -> None:
    monitor = HealthMonitor()
    assert _steps(monitor, [2.0, 1.9]) == []
    alarms = monitor.train_step(3, [(0.5, [4, 9]), (math.nan, [7, 12]), (math.nan, [1, 3])])
    assert len(alarms) == 1
    alarm = alarms[0]
    assert (alarm.kind, alarm.severity, alarm.step, alarm.fatal) == (NAN_LOSS, "error", 3, True)
    assert alarm.details["rows"] == [7, 12]
    assert alarm.details["step_rows"] == [4, 9, 7, 12, 1, 3]
    assert "step 3" in alarm.message and "dataset rows 7, 12" in alarm.message
    assert "learning rate" in alarm.advice


def test_infinite_loss_is_fatal_too() -> None:
    alarms = HealthMonitor().train_step(1, [(math.inf, [0])])
    assert alarms[0].kind == NAN_LOSS and "dataset row 0" in alarms[0].message


def test_a_spike_against_the_running_median_is_raised_with_its_rows() -> None:
    monitor = HealthMonitor()
    steady = [3.0, 2.6, 2.4, 2.2, 2.1, 2.0, 2.05, 1.95, 2.0, 1.9]
    assert _steps(monitor, steady) == []
    alarms = _steps(monitor, [9.0], first_step=11)
    assert [a.kind for a in alarms] == [LOSS_SPIKE]
    spike = alarms[0]
    assert spike.step == 11 and spike.details["rows"] == [22, 23]
    assert spike.details["median"] == pytest.approx(2.075) and spike.details["ratio"] > 4
    assert "warmup" in spike.advice and "max_grad_norm" in spike.advice


def test_no_spike_while_the_loss_falls_or_before_enough_history() -> None:
    monitor = HealthMonitor()
    assert _steps(monitor, [10.0, 30.0, 8.0]) == []  # too little history to judge
    falling = [10.0 * 0.8**i for i in range(30)]
    assert _steps(HealthMonitor(), falling) == []


def test_tiny_losses_jitter_without_alarms() -> None:
    monitor = HealthMonitor()
    assert _steps(monitor, [0.01] * 10 + [0.08]) == []  # 8x the median, but only +0.07


def test_repeated_spikes_are_held_back_for_the_cooldown() -> None:
    limits = HealthLimits(cooldown_steps=5)
    monitor = HealthMonitor(limits)
    _steps(monitor, [1.0] * 10)
    raised = [a.step for a in _steps(monitor, [9.0, 9.0, 1.0, 1.0, 1.0, 1.0, 9.0], 11)]
    assert raised == [11, 17]


def test_step_loss_adds_the_scaled_micro_batches() -> None:
    assert step_loss([(0.25, [0]), (0.5, [1])]) == 0.75


def test_exploding_and_non_finite_grad_norms() -> None:
    monitor = HealthMonitor()
    assert [monitor.logged_grad_norm(s, 1.0 + 0.1 * s) for s in range(1, 10)] == [[]] * 9
    exploded = monitor.logged_grad_norm(10, 50.0)
    assert [a.kind for a in exploded] == [GRAD_NORM]
    assert exploded[0].severity == "warning" and exploded[0].details["ratio"] > 10
    assert "max_grad_norm" in exploded[0].advice
    infinite = monitor.logged_grad_norm(30, math.inf)
    assert infinite[0].severity == "error" and "inf" in infinite[0].message
    assert monitor.logged_grad_norm(31, None) == []


def _evaluate(monitor: HealthMonitor, step: int, eval_loss: float, train: list[float]) -> list:
    for offset, loss in enumerate(train):
        monitor.train_step(step - len(train) + offset + 1, [(loss, [])])
    return monitor.evaluated(step, eval_loss)


def test_overfitting_after_n_rising_evaluations_while_train_loss_falls() -> None:
    monitor = HealthMonitor(HealthLimits(overfit_evaluations=3))
    assert _evaluate(monitor, 2, 5.0, [6.0, 5.5]) == []
    assert _evaluate(monitor, 4, 4.0, [5.0, 4.5]) == []  # eval still falling
    assert _evaluate(monitor, 6, 4.2, [4.0, 3.5]) == []
    assert _evaluate(monitor, 8, 4.4, [3.0, 2.5]) == []
    alarms = _evaluate(monitor, 10, 4.9, [2.0, 1.5])
    assert [a.kind for a in alarms] == [OVERFITTING]
    alarm = alarms[0]
    assert alarm.step == 10 and alarm.details["steps"] == [4, 6, 8, 10]
    assert alarm.details["eval_loss"] == [4.0, 4.2, 4.4, 4.9]
    assert alarm.details["train_loss"] == [4.75, 3.75, 2.75, 1.75]
    assert "early_stopping_patience" in alarm.advice
    assert _evaluate(monitor, 12, 5.5, [1.0, 0.9]) == []  # once per streak


def test_eval_and_train_loss_rising_together_is_not_overfitting() -> None:
    evaluations = [
        Evaluation(2, 3.0, 3.0),
        Evaluation(4, 3.1, 3.2),
        Evaluation(6, 3.2, 3.4),
        Evaluation(8, 3.3, 3.6),
    ]
    assert overfitting_streak(evaluations) == 0
    falling_train = [Evaluation(e.step, e.eval_loss, 4.0 - e.step / 10) for e in evaluations]
    assert overfitting_streak(falling_train) == 3


def test_early_stopping_event() -> None:
    alarm = early_stopping_alarm(16, 3, 0.0, "eval_loss", 3.546)
    assert (alarm.kind, alarm.severity, alarm.step, alarm.fatal) == (
        EARLY_STOPPING,
        "info",
        16,
        False,
    )
    assert "3 evaluations" in alarm.message and "3.546" in alarm.message


def test_describe_rows() -> None:
    assert describe_rows([]) == "dataset rows unknown"
    assert describe_rows([4]) == "dataset row 4"
    assert describe_rows(list(range(20)), limit=3) == "dataset rows 0, 1, 2 and 17 more"
