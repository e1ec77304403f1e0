"""The entry point every child process shares (training, export, evaluation, generation):
``python -m MODULE ARGS... ERROR_FILE``, as ``worker.supervise.run_child`` starts it.

The process reports failure through the error file and a non-zero exit code; the supervising
Celery task stores the file's text as the reason a person reads.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import torch

# The error file's room, taken when the process starts: a disk that fills up meanwhile (the
# usual reason a checkpoint or an export fails) must still let the process say why.
ERROR_RESERVE_BYTES = 16 * 1024

# torch's CPU allocator reports a failed allocation as a RuntimeError, not OutOfMemoryError.
CPU_ALLOCATOR_FAILURES = ("DefaultCPUAllocator: can't allocate memory", "not enough memory")


class ReportedFailure(RuntimeError):
    """A failure whose message is already written for a person: stored as it is, and the
    process exits with ``exit_code``."""

    exit_code = 1


def is_out_of_memory(exc: BaseException) -> bool:
    """GPU (``torch.OutOfMemoryError``, which ``torch.cuda.OutOfMemoryError`` is) or host memory
    (``MemoryError``, or torch's CPU allocator refusing an allocation)."""
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in CPU_ALLOCATOR_FAILURES)


class ErrorFile:
    """The file the supervisor reads the failure from, with its room reserved up front: writing
    into blocks the file already owns needs no free space. Until a message is written it holds
    only NUL bytes, which the supervisor reads as no message (a process killed outright)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.posix_fallocate(fd, 0, ERROR_RESERVE_BYTES)
            finally:
                os.close(fd)
        except OSError:
            self.discard()  # no room even now: write() tries again when there is something to say

    def write(self, message: str) -> None:
        data = message.encode(errors="replace")[:ERROR_RESERVE_BYTES]
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)

    def discard(self) -> None:
        """No failure to report: the supervisor must not read an empty reservation as one."""
        self.path.unlink(missing_ok=True)


def run_child_main(
    work: Callable[..., object],
    *,
    oom_advice: str | None = None,
    argv: list[str] | None = None,
    rank: int = 0,
) -> None:
    """Run ``work(*args)`` with the command line's arguments (the last one is the error file).

    With ``oom_advice``, running out of GPU or host memory is reported as "out of memory:
    <advice>" and re-raised (the traceback is the log's); otherwise it is reported like any other
    error. In a multi-process run, the processes besides rank 0 write ``ERROR_FILE.rank<N>``.
    A crash (a segfault, an abort) prints the crashing thread's Python stack to the log, whose
    tail the supervisor stores when no error file was written."""
    faulthandler.enable(all_threads=False)  # one thread's stack: the stored tail stays short
    *args, error_arg = sys.argv[1:] if argv is None else argv
    error_file = ErrorFile(Path(error_arg if rank == 0 else f"{error_arg}.rank{rank}"))
    try:
        work(*args)
    except ReportedFailure as exc:
        error_file.write(str(exc))
        sys.exit(exc.exit_code)
    except Exception as exc:
        if oom_advice is None or not is_out_of_memory(exc):
            _fail(error_file, f"{type(exc).__name__}: {exc}")
        error_file.write(f"out of memory: {oom_advice} ({exc})")
        raise
    error_file.discard()


def _fail(error_file: ErrorFile, message: str) -> NoReturn:
    error_file.write(message)
    traceback.print_exc()
    sys.exit(1)
