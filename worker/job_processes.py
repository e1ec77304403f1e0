"""Finding and stopping every process of one attempt of a job, wherever its launcher put it.

``torchrun`` starts each rank in a session of its own, so a process group does not hold a
multi-process run together; the environment does. The supervising task starts training with
``FTSTUDIO_JOB_PROCESS=<job folder>#<attempt>`` in the environment, every rank inherits it, and
``stop_job_processes`` SIGKILLs each process on this host whose environment carries it, then
waits until none is left. Cancel uses it after the launcher has had its chance to stop its
ranks; the next worker on a host uses it before requeueing a job whose worker was killed, so the
next attempt never shares a device or a checkpoint folder with the last one. Processes left on
another host stop by themselves: rank 0 sees the job requeued at its next step
(``worker.training.callbacks``) and the others follow it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path

from app.settings import get_settings

logger = logging.getLogger(__name__)

MARKER_VARIABLE = "FTSTUDIO_JOB_PROCESS"


def marker(job_id: int, attempt: int) -> str:
    """The attempt's mark: its job folder (one studio's jobs_dir: two studios on one host, or
    two test sessions, never share it) and the attempt number."""
    return f"{(get_settings().jobs_dir / str(int(job_id))).resolve()}#{attempt}"


def marked_processes(value: str) -> list[int]:
    """The live (not zombie) processes on this host whose environment has the marker."""
    needle = f"{MARKER_VARIABLE}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # gone meanwhile, or another user's
        if state != "Z":
            found.append(int(entry.name))
    return found


def stop_job_processes(job_id: int, attempt: int, timeout: float = 60.0) -> bool:
    """SIGKILL every process of this attempt of the job and wait until none is left; True when
    none is (or was) running."""
    value = marker(job_id, attempt)
    deadline = time.monotonic() + timeout
    while pids := marked_processes(value):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            logger.error("job %s: processes %s would not stop", job_id, pids)
            return False
        time.sleep(0.2)
    return True
