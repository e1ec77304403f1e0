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

# The training process's exit code after it checkpointed and stopped for the worker's shutdown
# (EX_TEMPFAIL: try again later).
EXIT_PREEMPTED = 75

FULL_DISK_BYTES = 1024 * 1024  # less free space than this: a failure is reported as a full disk


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
    should_preempt: Callable[[], bool] = lambda: False,
) -> ChildResult:
    """Run ``python [launcher...] -m module args... error_path`` in a new session and watch it.
    ``launcher`` starts several processes (``-m torch.distributed.run ...``). Once
    ``should_preempt`` says so (the worker is shutting down), the child gets one SIGTERM, which
    the training process answers by checkpointing and exiting."""
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
        preempted = False
        while child.poll() is None:
            now = time.monotonic()
            if not preempted and should_preempt():
                preempted = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGTERM)
            if now - last_beat >= heartbeat_seconds:
                heartbeat()
                last_beat = now
            if cancel_seen_at is None and should_cancel():
                cancel_seen_at = now
            if cancel_seen_at is not None and now - cancel_seen_at > cancel_grace_seconds:
                _terminate_group(child)  # the training loop did not stop by itself in time
            time.sleep(0.5)
    cancelled = cancel_seen_at is not None or should_cancel()
    error = _read_error(error_path, log_path, child.returncode)
    return ChildResult(child.returncode, cancelled, error)


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


def _read_error(error_path: Path, log_path: Path, returncode: int) -> str | None:
    if returncode == 0:
        return None
    written = [p for p in (error_path, *error_path.parent.glob(f"{error_path.name}.rank*"))]
    # A file holding only NULs is the reservation of a process that died before it could write
    # (``worker.child.ErrorFile``).
    messages = {p: p.read_text(errors="replace").strip("\0") for p in written if p.exists()}
    messages = {p: text for p, text in messages.items() if text}
    full = _full_disk(error_path.parent)  # where: an OSError for a full disk names no path
    if messages:
        # The first rank to fail says why; the others then fail on the broken process group.
        first = min(messages, key=lambda p: (p.stat().st_mtime_ns, p != error_path))
        return messages[first][:4000] + (f" ({full})" if full else "")
    ended = f"the process {how_it_ended(returncode)}"
    if full:
        ended += f"; no space left on device: {full}"  # why it could not write its error file
    tail = log_tail(log_path) if log_path.exists() else ""
    return f"{ended}; its last output:\n{tail}" if tail else ended


def _full_disk(folder: Path) -> str | None:
    """Says so when the disk holding ``folder`` is (nearly) full."""
    try:
        stats = os.statvfs(folder)
    except OSError:
        return None
    free = stats.f_bavail * stats.f_frsize
    if free >= FULL_DISK_BYTES:
        return None
    return f"the disk holding {folder} is full ({free} bytes free)"


def how_it_ended(returncode: int) -> str:
    """``exited with code 3``, or for a negative code the signal that killed it, named."""
    if returncode >= 0:
        return f"exited with code {returncode} without saying why"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        return f"was killed by signal {-returncode}"
    hint = SIGNAL_HINTS.get(name)
    return f"was killed by {name}" + (f" ({hint})" if hint else "")


SIGNAL_HINTS = {
    "SIGSEGV": "a segmentation fault: a crash in native code",
    "SIGABRT": "aborted by native code",
    "SIGBUS": "a bus error: often a memory-mapped file that shrank or a full /dev/shm",
    "SIGKILL": "killed outright: the kernel's out-of-memory killer does this, as does kill -9",
}


def log_tail(log_path: Path, max_bytes: int = 12_000, max_lines: int = 150) -> str:
    """The log's last non-blank whole lines (at most ``max_lines`` within ``max_bytes``): room
    for a crash's whole report (faulthandler's stack of up to 100 frames and its module list)."""
    size = log_path.stat().st_size
    with log_path.open("rb") as log:
        log.seek(max(0, size - max_bytes))
        data = log.read()
    lines = data.decode(errors="replace").replace("\r", "\n").split("\n")
    if size > max_bytes:
        lines = lines[1:]  # the first one is cut
    return "\n".join([line for line in lines if line.strip()][-max_lines:])
