"""The studio's own processes for tests: a real Celery worker and uvicorn, as `ftstudio` runs
them, each logging to a file and stopped when the block ends."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.jobs import wait_for

REPO = Path(__file__).resolve().parents[2]


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def running_worker(log_path: Path) -> Iterator[subprocess.Popen]:
    """A Celery worker on this run's queue; fails the test if it exits before it is ready."""
    from app.cli import worker_command

    with log_path.open("wb") as log:
        proc = subprocess.Popen(worker_command(), stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        wait_for(
            lambda: b"ready." in log_path.read_bytes() or proc.poll() is not None, 120, "the worker"
        )
        if proc.poll() is not None:
            pytest.fail(f"the worker exited:\n{log_path.read_text()[-3000:]}")
        yield proc
    finally:
        _stop(proc)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_web(log_path: Path) -> Iterator[str]:
    """`ftstudio web` on a free port; yields its base URL once /healthz answers."""
    import httpx

    port = free_port()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "web", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return proc.poll() is not None

    try:
        wait_for(up, 60, "the web server")
        if proc.poll() is not None:
            pytest.fail(f"the web server exited:\n{log_path.read_text()[-3000:]}")
        yield url
    finally:
        _stop(proc)
