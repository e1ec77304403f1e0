"""Test environment: a fresh data dir, database and queue per run, a real worker and server.

The environment is set at import time, before any test module imports ``app``, because
settings are read once per process. Postgres + Redis are used when the Makefile passes
FTSTUDIO_TEST_DATABASE_URL / FTSTUDIO_TEST_BROKER_URL; otherwise the embedded default.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUN_ID = uuid.uuid4().hex[:10]
RUN_DIR = Path(tempfile.mkdtemp(prefix=f"ftstudio-test-{RUN_ID}-"))
TEST_DATABASE = f"ftstudio_test_{RUN_ID}"


def _admin_pg_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _configure_environment() -> None:
    os.environ["FTSTUDIO_DATA_DIR"] = str(RUN_DIR / "data")
    os.environ.setdefault("FTSTUDIO_MODELS_DIR", str(REPO / ".data" / "models"))
    os.environ["FTSTUDIO_QUEUE"] = f"test-{RUN_ID}"
    os.environ["FTSTUDIO_HEARTBEAT_SECONDS"] = "1"
    os.environ["FTSTUDIO_CANCEL_GRACE_SECONDS"] = "15"
    os.environ["FTSTUDIO_SECRET_KEY"] = "test-secret"
    if url := os.environ.get("FTSTUDIO_TEST_DATABASE_URL"):
        import psycopg

        with psycopg.connect(_admin_pg_url(url), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{TEST_DATABASE}"')
        base = url.rsplit("/", 1)[0]
        os.environ["FTSTUDIO_DATABASE_URL"] = f"{base}/{TEST_DATABASE}"
    if broker := os.environ.get("FTSTUDIO_TEST_BROKER_URL"):
        os.environ["FTSTUDIO_BROKER_URL"] = broker


_configure_environment()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if url := os.environ.get("FTSTUDIO_TEST_DATABASE_URL"):
        from app.db import get_engine

        get_engine().dispose()
        import psycopg

        with psycopg.connect(_admin_pg_url(url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{TEST_DATABASE}" WITH (FORCE)')
    shutil.rmtree(RUN_DIR, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def migrated() -> None:
    from app.migrate import upgrade_to_head

    upgrade_to_head()


@dataclass
class Account:
    name: str
    token: str
    user_id: int

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def make_account(name: str, admin: bool = False) -> Account:
    from app.auth import create_token, get_or_create_user
    from app.db import session_scope

    with session_scope() as session:
        user = get_or_create_user(session, name, admin=admin)
        return Account(name, create_token(session, user), user.id)


@pytest.fixture(scope="session")
def alice(migrated: None) -> Account:
    return make_account("alice", admin=True)


@pytest.fixture(scope="session")
def bob(migrated: None) -> Account:
    return make_account("bob")


@pytest.fixture(scope="session")
def client(migrated: None):
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app()) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def bundled_model_dir() -> Path:
    from app.settings import get_settings

    path = get_settings().bundled_model_dir
    if not (path / ".complete").exists():
        pytest.fail(
            f"the bundled model is missing at {path}: run `make setup` (ftstudio setup) first"
        )
    return path


@pytest.fixture(scope="session")
def tiny_model(bundled_model_dir: Path, migrated: None) -> str:
    """A tiny random Llama with the bundled tokenizer, registered as base model 'tiny-llama'."""
    from app.base_models import register_model
    from app.db import session_scope
    from worker.tiny_model import build_tiny_llama

    path = build_tiny_llama(bundled_model_dir, RUN_DIR / "models" / "tiny-llama")
    with session_scope() as session:
        register_model(session, "tiny-llama", path)
    return "tiny-llama"


def _wait_for(predicate, timeout: float, what: str, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="session")
def worker(migrated: None, tiny_model: str) -> Iterator[Path]:
    """A real Celery worker on this run's queue; yields its log file."""
    from app.cli import worker_command

    log_path = RUN_DIR / "worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(worker_command(), stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        _wait_for(
            lambda: b"ready." in log_path.read_bytes() or proc.poll() is not None, 120, "the worker"
        )
        if proc.poll() is not None:
            pytest.fail(f"the worker exited:\n{log_path.read_text()[-3000:]}")
        yield log_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def live_server(migrated: None) -> Iterator[str]:
    """The studio served by uvicorn in its own process, as `ftstudio web` runs it."""
    import httpx

    port = _free_port()
    log_path = RUN_DIR / "web.log"
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
        _wait_for(up, 60, "the web server")
        if proc.poll() is not None:
            pytest.fail(f"the web server exited:\n{log_path.read_text()[-3000:]}")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def wait_for_job(client, account: Account, job_id: int, timeout: float = 300) -> dict:
    """Poll the API until the job ends; returns its final JSON."""
    state: dict = {}

    def ended() -> bool:
        state.update(client.get(f"/api/jobs/{job_id}", headers=account.headers).json())
        return state["status"] in ("succeeded", "failed", "cancelled")

    _wait_for(ended, timeout, f"job {job_id}", interval=0.5)
    return state
