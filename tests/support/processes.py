"""The studio's own processes for tests: a real Celery worker and uvicorn, as `ftstudio` runs
them, each logging to a file and stopped when the block ends."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
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
def running_worker(log_path: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """A Celery worker on this run's queue (or, with ``env``, as `ftstudio worker` with that
    environment: another studio's); fails the test if it exits before it is ready."""
    from app.cli import worker_command

    command = worker_command() if env is None else [sys.executable, "-m", "app.cli", "worker"]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env or os.environ
        )
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
def running_web(log_path: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """`ftstudio web` on a free port (with ``env``: another studio's environment); yields its
    base URL once /healthz answers."""
    import httpx

    port = free_port()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "web", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env or os.environ,
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


def start_class_worker(
    log_path: Path,
    device_class: str,
    preexec_fn: Callable[[], None] | None = None,
    **env: str,
) -> subprocess.Popen:
    """`ftstudio worker --devices cpu --device-class CLASS` on this run's queue (the caller stops
    it); ``env`` adds FTSTUDIO_* settings for that worker only, ``preexec_fn`` runs in it
    before it starts (resource limits its training processes inherit)."""
    argv = [sys.executable, "-m", "app.cli", "worker", "--devices", "cpu"]
    argv += ["--device-class", device_class]
    with log_path.open("ab") as log:
        return subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, **env},
            preexec_fn=preexec_fn,
        )


def registered_worker(client, account, device_class: str, proc: subprocess.Popen, log_path: Path):
    """Wait until the worker of ``device_class`` started as ``proc`` is online; its API entry."""

    def online() -> dict | None:
        workers = client.get("/api/workers", headers=account.headers).json()
        return next((w for w in workers if w["device_class"] == device_class and w["online"]), None)

    wait_for(lambda: online() is not None or proc.poll() is not None, 120, device_class)
    if proc.poll() is not None:
        pytest.fail(f"the worker exited:\n{log_path.read_text()[-3000:]}")
    return online()


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        _stop(proc)
