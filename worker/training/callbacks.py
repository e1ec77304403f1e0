"""The trainer callbacks that report to the studio: metrics, progress, checkpoints, cancel and
the resolved trainer config (``StudioCallback``); health alarms and early stopping as job events
(``HealthCallback``)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session
from transformers import (
    EarlyStoppingCallback,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from app.db import session_scope
from app.models import Checkpoint, Job, JobEvent, JobStatus
from app.runs import TRAINER_CONFIG_FILE
from app.states import move
from worker.child import ReportedFailure
from worker.db_retry import retry_database
from worker.training.distributed import gather
from worker.training.health import Alarm, HealthMonitor, MicroBatch, early_stopping_alarm
from worker.training.progress import ProgressWriter

NAMED_METRICS = ("loss", "learning_rate", "grad_norm", "epoch", "num_tokens")


def _finite_or_none(value: object) -> float | None:
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


class StudioCallback(TrainerCallback):
    def __init__(
        self,
        job_id: int,
        attempt: int,
        jobs_root: Path,
        resolved_device: dict[str, object] | None = None,
    ) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.jobs_root = jobs_root
        self.resolved_device = resolved_device or {}
        self.progress = ProgressWriter(job_id, attempt, attempt_over)

    def _write(self, session: Session, **values: object) -> None:
        """Progress on the job row, only while this attempt runs (a requeued job's next attempt
        and an ended job keep their own)."""
        running = JobStatus.running
        move(session, Job, self.job_id, to=None, from_=running, attempt=self.attempt, **values)

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: object
    ) -> None:
        if not state.is_world_process_zero:
            return  # rank 0 alone writes to the studio
        with session_scope() as session:
            self._write(session, max_steps=state.max_steps)
        write_trainer_config(
            args, Path(args.output_dir) / TRAINER_CONFIG_FILE, self.resolved_device
        )
        self.progress.start()

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict | None = None,
        **_: object,
    ) -> None:
        logs = logs or {}
        if not state.is_world_process_zero or "train_runtime" in logs or not logs:
            return  # the end-of-training summary repeats what is already stored
        named = {key: _finite_or_none(logs.get(key)) for key in NAMED_METRICS}
        numbers = {k: v for k, v in logs.items() if isinstance(v, int | float)}
        extra = {k: _finite_or_none(v) for k, v in numbers.items() if k not in NAMED_METRICS}
        # NaN/inf cannot travel as JSON: store null and name the metrics that were not finite.
        nonfinite = sorted(k for k, v in numbers.items() if _finite_or_none(v) is None)
        if nonfinite:
            extra["nonfinite"] = nonfinite
        self.progress.add_metric(state.global_step, values=extra, **named)

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: object
    ) -> None:
        if not state.is_world_process_zero:
            return
        path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        # Training waits for a database that is briefly away: a saved checkpoint unrecorded
        # could not be resumed from.
        retry_database(lambda: self._record_checkpoint(state.global_step, path), "checkpoint")

    def _record_checkpoint(self, step: int, path: Path) -> None:
        with session_scope() as session:
            session.add(Checkpoint(job_id=self.job_id, step=step, path=self._rel(path)))
            # save_total_limit has already deleted the oldest directories: forget them too, so
            # the studio never offers a checkpoint whose files are gone.
            for old in session.scalars(
                select(Checkpoint).where(Checkpoint.job_id == self.job_id, ~Checkpoint.is_final)
            ):
                if not (self.jobs_root / old.path).exists():
                    session.delete(old)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: object
    ) -> None:
        # The progress thread asks the database; the other ranks follow rank 0
        # (distributed.SyncStopCallback).
        if state.is_world_process_zero and self.progress.over.is_set():
            control.should_training_stop = True
            control.should_save = False

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: object
    ) -> None:
        self.close()

    def close(self) -> None:
        """Write every metric still queued (the end of training, or a run that failed)."""
        self.progress.close()

    def _rel(self, path: Path) -> str:
        return str(path.resolve().relative_to(self.jobs_root.resolve()))


def attempt_over(session: Session, job_id: int, attempt: int) -> bool:
    """Cancelled, or no longer this attempt's to run: a lost worker's job was requeued, and a
    process left behind on another host must not train (or save) beside the next attempt."""
    row = session.execute(
        select(Job.cancel_requested, Job.status, Job.attempt).where(Job.id == job_id)
    ).one_or_none()
    if row is None:
        return True
    cancelled, status, current = row
    return bool(cancelled) or status != JobStatus.running or current != attempt


def write_trainer_config(
    args: TrainingArguments, path: Path, resolved_device: dict[str, object] | None = None
) -> None:
    """The TRL config as the trainer resolved it (defaults filled in), for the job page, with
    the device, precision and attention kernel the run chose (``worker.devices``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {**args.to_dict(), **(resolved_device or {})}
    path.write_text(json.dumps(config, indent=1, sort_keys=True, default=str))


def record_alarms(job_id: int, alarms: Sequence[Alarm]) -> None:
    if not alarms:
        return
    for alarm in alarms:
        print(f"[{alarm.severity}] {alarm.message}", flush=True)  # for the log tail too
    retry_database(lambda: _add_alarms(job_id, alarms), "alarms")


def _add_alarms(job_id: int, alarms: Sequence[Alarm]) -> None:
    with session_scope() as session:
        for alarm in alarms:
            session.add(
                JobEvent(
                    job_id=job_id,
                    step=alarm.step,
                    kind=alarm.kind,
                    severity=alarm.severity,
                    message=alarm.message,
                    details={**alarm.details, "advice": alarm.advice},
                )
            )


class HealthCallback(TrainerCallback):
    """Feeds every optimizer step's loss and rows (from ``batch_rows.watch_batches``), each
    logged grad norm and each evaluation to a ``HealthMonitor`` and records its alarms as job
    events. A NaN/inf loss stops training at once and is kept in ``failure`` for the run to fail
    with. Placed after ``early_stopping`` in the trainer's callbacks, it records that decision."""

    def __init__(
        self,
        job_id: int,
        monitor: HealthMonitor | None = None,
        early_stopping: EarlyStoppingCallback | None = None,
    ) -> None:
        self.job_id = job_id
        self.monitor = monitor or HealthMonitor()
        self.early_stopping = early_stopping
        self.failure: Alarm | None = None
        self._micro_batches: list[MicroBatch] = []
        self._early_stop_recorded = False

    def callbacks(self) -> list[TrainerCallback]:
        """This callback and early stopping (when on), in the order the trainer must call them."""
        return [c for c in (self.early_stopping, self) if c is not None]

    def micro_batch(self, loss: float, rows: list[int]) -> None:
        self._micro_batches.append((loss, rows))

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: object
    ) -> None:
        micro_batches, self._micro_batches = self._micro_batches, []
        # Each rank sees its own batches: every rank gets every rank's alarms, so rank 0 records
        # a NaN another rank hit and every rank fails with its message.
        alarms = gather(self.monitor.train_step(state.global_step, micro_batches))
        self._record(state, alarms)
        fatal = next((a for a in alarms if a.fatal), None)
        if fatal is not None:
            self.failure = fatal
            control.should_training_stop = True
            control.should_save = False  # never keep weights a NaN step has touched
            control.should_evaluate = False

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict | None = None,
        **_: object,
    ) -> None:
        grad_norm = (logs or {}).get("grad_norm")
        if isinstance(grad_norm, int | float):
            self._record(state, self.monitor.logged_grad_norm(state.global_step, grad_norm))

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict | None = None,
        **_: object,
    ) -> None:
        eval_loss = (metrics or {}).get("eval_loss")
        if isinstance(eval_loss, int | float):
            self._record(state, self.monitor.evaluated(state.global_step, eval_loss))
        if self._early_stopping_stops() and not self._early_stop_recorded:
            assert self.early_stopping is not None
            self._early_stop_recorded = True
            metric = args.metric_for_best_model or "eval_loss"
            alarm = early_stopping_alarm(
                state.global_step,
                self.early_stopping.early_stopping_patience,
                self.early_stopping.early_stopping_threshold or 0.0,
                metric if metric.startswith("eval_") else f"eval_{metric}",
                state.best_metric,
            )
            self._record(state, [alarm])

    def raise_on_failure(self) -> None:
        if self.failure is not None:
            raise TrainingDiverged(f"{self.failure.message} {self.failure.advice}")

    def _early_stopping_stops(self) -> bool:
        stopping = self.early_stopping
        return (
            stopping is not None
            and stopping.early_stopping_patience_counter >= stopping.early_stopping_patience
        )

    def _record(self, state: TrainerState, alarms: Sequence[Alarm]) -> None:
        if state.is_world_process_zero:
            record_alarms(self.job_id, alarms)


class TrainingDiverged(ReportedFailure):
    """The loss became NaN or infinite; the message names the step and the batch's rows."""
