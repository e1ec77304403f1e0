"""Run one piece of GPU work in a child process and watch it: heartbeat, cancel, exit code.

A separate process isolates the worker from OOMs and crashes, and gives GPU memory back
for certain when it exits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.settings import get_settings
from worker.registration import child_device_env


@dataclass
class ChildResult:
    returncode: int
    cancelled: bool
    error: str | None

    @property
    def failure(self) -> str | None:
        """Why the child failed (its error file, else its exit code); None when it succeeded."""
        if self.returncode == 0:
            return None
        return self.error or f"exit code {self.returncode}"


def run_unattended(module: str, args: list[str], work_dir: Path, log_name: str) -> ChildResult:
    """``run_child`` for work no one cancels and no heartbeat watches (exports, evaluations,
    generations): the log and ``error.txt`` go in ``work_dir``."""
    settings = get_settings()
    return run_child(
        module,
        args,
        log_path=work_dir / log_name,
        error_path=work_dir / "error.txt",
        heartbeat=lambda: None,
        should_cancel=lambda: False,
        heartbeat_seconds=settings.heartbeat_seconds,
        cancel_grace_seconds=settings.cancel_grace_seconds,
    )


def run_child(
    module: str,
    args: list[str],
    *,
    log_path: Path,
    error_path: Path,
    heartbeat: Callable[[], None],
    should_cancel: Callable[[], bool],
    heartbeat_seconds: float,
    cancel_grace_seconds: float,
    launcher: Sequence[str] = (),
    extra_env: dict[str, str] | None = None,
) -> ChildResult:
    """Run ``python [launcher...] -m module args... error_path`` in a new session and watch it.
    ``launcher`` starts several processes (``-m torch.distributed.run ...``)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (error_path, *error_path.parent.glob(f"{error_path.name}.rank*")):
        stale.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.update(child_device_env())  # the child sees only the devices this worker owns
    env.update(extra_env or {})
    with log_path.open("ab") as log:
        child = subprocess.Popen(
            [sys.executable, *launcher, "-m", module, *args, str(error_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        cancel_seen_at: float | None = None
        last_beat = 0.0
        while child.poll() is None:
            now = time.monotonic()
            if now - last_beat >= heartbeat_seconds:
                heartbeat()
                last_beat = now
            if cancel_seen_at is None and should_cancel():
                cancel_seen_at = now
            if cancel_seen_at is not None and now - cancel_seen_at > cancel_grace_seconds:
                _terminate_group(child)  # the training loop did not stop by itself in time
            time.sleep(0.5)
    cancelled = cancel_seen_at is not None or should_cancel()
    return ChildResult(child.returncode, cancelled, _read_error(error_path, log_path))


def _terminate_group(child: subprocess.Popen) -> None:
    """SIGTERM the whole group (a launcher and its ranks), SIGKILL what is left after 10 s."""
    try:
        os.killpg(child.pid, signal.SIGTERM)
        child.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()


def _read_error(error_path: Path, log_path: Path) -> str | None:
    written = [p for p in (error_path, *error_path.parent.glob(f"{error_path.name}.rank*"))]
    written = [p for p in written if p.exists()]
    if written:
        # The first rank to fail says why; the others then fail on the broken process group.
        first = min(written, key=lambda p: (p.stat().st_mtime_ns, p != error_path))
        return first.read_text()[:4000]
    if log_path.exists():
        tail = log_path.read_bytes()[-2000:].decode(errors="replace")
        return f"the training process exited unexpectedly; last output:\n{tail}"
    return None
