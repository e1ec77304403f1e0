"""A small disk that fills up, for real: a tmpfs of a fixed size mounted over a folder (root
only), and a filler file that takes all its free space but what a test leaves."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _mount(path: Path, size_bytes: int) -> subprocess.CompletedProcess:
    options = f"size={size_bytes},mode=0700"
    argv = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)]
    return subprocess.run(argv, capture_output=True, text=True)


def tmpfs_unavailable() -> str | None:
    """Why a tmpfs cannot be mounted here (None when it can)."""
    with tempfile.TemporaryDirectory() as probe:
        done = _mount(Path(probe), 1024 * 1024)
        if done.returncode != 0:
            return f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}"
        subprocess.run(["umount", probe], check=True)
    return None


@contextmanager
def small_disk(path: Path, size_bytes: int) -> Iterator[Path]:
    """``path`` (created if needed) as a tmpfs of ``size_bytes``, unmounted when the block ends."""
    path.mkdir(parents=True, exist_ok=True)
    done = _mount(path, size_bytes)
    assert done.returncode == 0, done.stderr
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def fill(path: Path, leave_bytes: int) -> Path:
    """Take the free space of ``path``'s filesystem but ``leave_bytes``; the filler's path."""
    filler = path / "filler"
    with filler.open("ab") as out:
        os.posix_fallocate(out.fileno(), 0, filler.stat().st_size + free_bytes(path) - leave_bytes)
    return filler
