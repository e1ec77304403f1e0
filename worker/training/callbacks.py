"""The trainer callback that reports to the studio: metrics, progress, checkpoints, cancel."""

from __future__ import annotations

import math
import time
from pathlib import Path

from sqlalchemy import select, update
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from app.db import session_scope
from app.jobs import cancel_requested
from app.models import Checkpoint, Job, Metric

NAMED_METRICS = ("loss", "learning_rate", "grad_norm", "epoch", "num_tokens")
CANCEL_POLL_SECONDS = 0.5


def _finite_or_none(value: object) -> float | None:
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


class StudioCallback(TrainerCallback):
    def __init__(self, job_id: int, jobs_root: Path) -> None:
        self.job_id = job_id
        self.jobs_root = jobs_root
        self._last_cancel_check = 0.0

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: object
    ) -> None:
        with session_scope() as session:
            session.execute(
                update(Job).where(Job.id == self.job_id).values(max_steps=state.max_steps)
            )

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict | None = None,
        **_: object,
    ) -> None:
        logs = logs or {}
        if "loss" not in logs and not any(key.startswith("eval_") for key in logs):
            return  # the end-of-training summary repeats what is already stored
        named = {key: _finite_or_none(logs.get(key)) for key in NAMED_METRICS}
        numbers = {k: v for k, v in logs.items() if isinstance(v, int | float)}
        extra = {k: _finite_or_none(v) for k, v in numbers.items() if k not in NAMED_METRICS}
        # NaN/inf cannot travel as JSON: store null and name the metrics that were not finite.
        nonfinite = sorted(k for k, v in numbers.items() if _finite_or_none(v) is None)
        if nonfinite:
            extra["nonfinite"] = nonfinite
        with session_scope() as session:
            session.add(Metric(job_id=self.job_id, step=state.global_step, values=extra, **named))
            session.execute(update(Job).where(Job.id == self.job_id).values(step=state.global_step))

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: object
    ) -> None:
        path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        with session_scope() as session:
            session.add(
                Checkpoint(job_id=self.job_id, step=state.global_step, path=self._rel(path))
            )
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
        now = time.monotonic()
        if now - self._last_cancel_check < CANCEL_POLL_SECONDS:
            return
        self._last_cancel_check = now
        with session_scope() as session:
            if cancel_requested(session, self.job_id):
                control.should_training_stop = True
                control.should_save = False

    def _rel(self, path: Path) -> str:
        return str(path.resolve().relative_to(self.jobs_root.resolve()))
