"""`ftstudio up`: web + worker from one command, two instances side by side in their own dirs."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(data_dir: Path, port: int, models_dir: str) -> tuple[subprocess.Popen, Path]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTSTUDIO_")}
    env |= {"FTSTUDIO_DATA_DIR": str(data_dir), "FTSTUDIO_MODELS_DIR": models_dir}
    log = data_dir.with_suffix(".log")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "up", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    return proc, log


def _wait_ready(proc: subprocess.Popen, log: Path, url: str) -> str:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        text = log.read_text()
        token = re.search(r"^\s*(fts_\S+)\s*$", text, re.MULTILINE)
        if token and f"running at {url}/" in text and "ready." in text:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    return token.group(1)
            except httpx.HTTPError:
                pass
        time.sleep(0.3)
    pytest.fail(f"ftstudio up did not come up:\n{log.read_text()[-3000:]}")


def test_two_instances_run_side_by_side(tmp_path: Path) -> None:
    models_dir = os.environ["FTSTUDIO_MODELS_DIR"]
    instances = []
    try:
        for name in ("one", "two"):
            port = _free_port()
            proc, log = _start(tmp_path / name, port, models_dir)
            instances.append((proc, log, f"http://127.0.0.1:{port}", tmp_path / name))
        for proc, log, url, data_dir in instances:
            token = _wait_ready(proc, log, url)
            headers = {"Authorization": f"Bearer {token}"}
            upload = httpx.post(
                f"{url}/api/datasets",
                headers=headers,
                files={"file": ("a.jsonl", b'{"instruction": "hi", "output": "hello"}')},
            )
            assert upload.status_code == 201
            assert (data_dir / "studio.db").exists() and (data_dir / "uploads").is_dir()
        tokens = [_wait_ready(p, log, url) for p, log, url, _ in instances]
        # Each instance has its own database: one's token means nothing to the other.
        other = httpx.get(
            f"{instances[1][2]}/api/jobs", headers={"Authorization": f"Bearer {tokens[0]}"}
        )
        assert other.status_code == 401
        # Stopping `ftstudio up` (the parent alone) stops its worker too.
        for proc, *_ in instances:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        for proc, *_ in instances:
            _wait_group_gone(proc.pid)
    finally:
        for proc, *_ in instances:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


def _wait_group_gone(pgid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    pytest.fail("the worker outlived `ftstudio up`")
