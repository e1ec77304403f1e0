"""Stopping for the worker's shutdown: the supervising task SIGTERMs the training process when
its worker is asked to stop (``docker stop``, a deploy, a spot reclaim); the process saves a
checkpoint at the end of the step it is in, stops, and exits with ``EXIT_PREEMPTED``, and the
task requeues the job to resume from that checkpoint on the next worker.
"""

from __future__ import annotations

import signal
import threading

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from worker.child import ReportedFailure
from worker.supervise import EXIT_PREEMPTED
from worker.training.distributed import agree


class Preempted(ReportedFailure):
    """Stopped for the worker's shutdown after saving a checkpoint."""

    exit_code = EXIT_PREEMPTED


class PreemptionCallback(TrainerCallback):
    """First among the callbacks (a cancel or a NaN loss after it still forbids the save)."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.stopped_at: int | None = None

    def listen(self) -> None:
        """Take over SIGTERM (before: it ends the process, which the task also requeues)."""
        signal.signal(signal.SIGTERM, lambda *_: self.requested.set())

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: object
    ) -> None:
        # every rank of a multi-process run stops at the same step: saving is collective
        if agree(self.requested.is_set()) and state.global_step < state.max_steps:
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step

    def raise_if_stopped(self) -> None:
        if self.stopped_at is not None:
            raise Preempted(
                f"stopped at step {self.stopped_at} for the worker's shutdown, after saving "
                f"checkpoint-{self.stopped_at}; the job is requeued to resume from it"
            )
