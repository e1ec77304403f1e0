"""The studio's per-step bookkeeping, off the training thread's critical path: metric rows and
the job's step are queued by the training callback and written by a background thread in one
transaction every ``FLUSH_SECONDS``, and the same thread asks the database whether the attempt
is over (cancelled, or requeued), which the callback reads as a flag. A training step never
waits on a database round trip; the run page sees a row at most ``FLUSH_SECONDS`` later.
``close`` writes whatever is still queued, so nothing logged is lost at the end of a run or
when it fails."""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from app.db import session_scope
from app.models import Job, JobStatus, Metric, utcnow
from app.states import move
from worker.db_retry import retry_database

FLUSH_SECONDS = 0.5

AttemptOver = Callable[[Session, int, int], bool]


@dataclass
class ProgressWriter:
    job_id: int
    attempt: int
    attempt_over: AttemptOver
    interval: float = FLUSH_SECONDS
    over: threading.Event = field(default_factory=threading.Event)
    _queue: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="studio-progress", daemon=True)
        self._thread.start()

    def add_metric(self, step: int, **values: Any) -> None:
        """Queue one metric row, stamped with the moment it was logged (not written)."""
        with self._lock:
            self._queue.append({"step": step, "created_at": utcnow(), **values})

    def close(self) -> None:
        """Stop the thread and write what is left (idempotent), waiting out a database that is
        briefly away."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        retry_database(self.flush, "metrics")

    def flush(self) -> None:
        """Write the queued rows and the job's step in one transaction, then check the
        attempt."""
        with self._lock:
            rows, self._queue = self._queue, []
        try:
            self._write(rows)
        except Exception:
            with self._lock:  # keep them for the next flush, in order
                self._queue[:0] = rows
            raise

    def _write(self, rows: list[dict[str, Any]]) -> None:
        with session_scope() as session:
            # The step moves only while this attempt runs the job; a process left behind after
            # a requeue writes no rows beside the next attempt's.
            if rows and move(
                session,
                Job,
                self.job_id,
                to=None,
                from_=JobStatus.running,
                attempt=self.attempt,
                step=rows[-1]["step"],
            ):
                session.add_all(Metric(job_id=self.job_id, **row) for row in rows)
            if self.attempt_over(session, self.job_id, self.attempt):
                self.over.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except Exception:  # a database hiccup: the rows wait for the next flush
                traceback.print_exc()
