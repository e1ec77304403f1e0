"""Where a job's wall clock goes, phase by phase, as ``phase`` job events (info, on the run's
timeline and in ``GET /api/jobs/{id}``'s ``phases``): queued (submit -> a worker took it),
starting (-> the training process exists), imports (-> its code is loaded), model load, data
preparation (the two overlap: data is prepared while the model loads), first step (the trainer's
set-up and first optimizer step), training, stop check, saving. Rank 0 alone records them."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from transformers import TrainerCallback

from app.db import session_scope
from app.models import JobEvent
from app.runs import PHASE_EVENT
from worker.db_retry import retry_database


def process_started_at() -> float | None:
    """When this process was created (Linux: /proc), as a Unix time; None elsewhere."""
    try:
        stat = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    return boot + int(stat[19]) / os.sysconf("SC_CLK_TCK")


def _add_event(values: dict[str, object]) -> None:
    with session_scope() as session:
        session.add(JobEvent(**values))


class PhaseClock:
    def __init__(self, job_id: int, *, record: bool = True) -> None:
        self.job_id = job_id
        self.record_events = record  # rank 0

    def record(self, name: str, started: float, ended: float, **details: object) -> None:
        """One phase from ``started`` to ``ended`` (Unix times)."""
        seconds = max(0.0, ended - started)
        print(f"phase {name}: {seconds:.2f} s", flush=True)
        if not self.record_events:
            return
        event = {
            "job_id": self.job_id,
            "kind": PHASE_EVENT,
            "severity": "info",
            "message": f"{name}: {seconds:.2f} s",
            "details": {
                "phase": name,
                "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
                "seconds": round(seconds, 3),
                **details,
            },
        }
        retry_database(lambda: _add_event(event), f"phase {name}")

    @contextmanager
    def phase(self, name: str) -> Iterator[dict[str, object]]:
        """Times the block; what it puts in the yielded dict is recorded with the phase."""
        started, details = time.time(), {}
        yield details
        self.record(name, started, time.time(), **details)


class PhaseCallback(TrainerCallback):
    """The first step (from ``trainer.train()`` being called: the trainer's set-up, the first
    batches and the first optimizer step) and the rest of training, as phases."""

    def __init__(self, clock: PhaseClock) -> None:
        self.clock = clock
        self.called = time.time()
        self.first_step_ended: float | None = None

    def start(self) -> None:
        """Call right before ``trainer.train()``."""
        self.called = time.time()

    def on_step_end(self, args, state, control, **_: object) -> None:  # type: ignore[no-untyped-def]
        if self.first_step_ended is None:
            self.first_step_ended = time.time()
            self.clock.record("first step", self.called, self.first_step_ended)

    def on_train_end(self, args, state, control, **_: object) -> None:  # type: ignore[no-untyped-def]
        if self.first_step_ended is not None:
            self.clock.record(
                "training", self.first_step_ended, time.time(), steps=state.global_step
            )
