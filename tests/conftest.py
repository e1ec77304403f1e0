"""Test environment: a fresh data dir, database and queue per run, a real worker and server.

The environment is set at import time, before any test module imports ``app``, because
settings are read once per process. Postgres + Redis are used when the Makefile passes
FTSTUDIO_TEST_DATABASE_URL / FTSTUDIO_TEST_BROKER_URL; otherwise the embedded default.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.accounts import Account, make_account
from tests.support.jobs import wait_for_job
from tests.support.processes import running_web, running_worker

__all__ = ["REPO", "RUN_DIR", "Account", "make_account", "wait_for_job"]

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


@pytest.fixture(scope="session")
def worker(migrated: None, tiny_model: str) -> Iterator[Path]:
    """A real Celery worker on this run's queue; yields its log file."""
    log_path = RUN_DIR / "worker.log"
    with running_worker(log_path):
        yield log_path


@pytest.fixture(scope="session")
def live_server(migrated: None) -> Iterator[str]:
    """The studio served by uvicorn in its own process, as `ftstudio web` runs it."""
    with running_web(RUN_DIR / "web.log") as url:
        yield url
