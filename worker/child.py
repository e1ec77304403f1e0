"""The entry point every child process shares (training, export, evaluation, generation):
``python -m MODULE ARGS... ERROR_FILE``, as ``worker.supervise.run_child`` starts it.

The process reports failure through the error file and a non-zero exit code; the supervising
Celery task stores the file's text as the reason a person reads.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import torch


class ReportedFailure(RuntimeError):
    """A failure whose message is already written for a person: stored as it is."""


def run_child_main(
    work: Callable[..., object],
    *,
    oom_advice: str | None = None,
    argv: list[str] | None = None,
    rank: int = 0,
) -> None:
    """Run ``work(*args)`` with the command line's arguments (the last one is the error file).

    With ``oom_advice``, running out of GPU memory is reported as "out of memory: <advice>" and
    re-raised (the traceback is the log's); otherwise it is reported like any other error.
    In a multi-process run, the processes besides rank 0 write ``ERROR_FILE.rank<N>``."""
    *args, error_arg = sys.argv[1:] if argv is None else argv
    error_file = Path(error_arg if rank == 0 else f"{error_arg}.rank{rank}")
    try:
        work(*args)
    except torch.OutOfMemoryError as exc:
        if oom_advice is None:
            _fail(error_file, f"{type(exc).__name__}: {exc}")
        error_file.write_text(f"out of memory: {oom_advice} ({exc})")
        raise
    except ReportedFailure as exc:
        error_file.write_text(str(exc))
        sys.exit(1)
    except Exception as exc:
        _fail(error_file, f"{type(exc).__name__}: {exc}")


def _fail(error_file: Path, message: str) -> NoReturn:
    error_file.write_text(message)
    traceback.print_exc()
    sys.exit(1)
