"""A busy database answers 503 with Retry-After, never a 500 (issue 14): which errors count as
"busy" is checked on real errors of SQLite, Postgres and the pool, and a real server whose
SQLite write lock is held by another process answers writes 503 while its reads (bearer-token
reads included, whose last-use write is skipped) still answer."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.db import RETRY_AFTER_SECONDS, database_busy
from tests.conftest import RUN_DIR, make_account
from tests.support.processes import free_port, running_web

ROWS = b'{"text": "a row"}\n{"text": "another row"}\n'


def _raised(action) -> BaseException:
    try:
        action()
    except Exception as exc:
        return exc
    pytest.fail("expected an error")


@contextmanager
def _write_locked(path: Path) -> Iterator[None]:
    """Another connection holds SQLite's write lock (as a long import once did)."""
    holder = sqlite3.connect(path, isolation_level=None, timeout=5)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_locked_sqlite_database_is_busy(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.1})
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    with _write_locked(path):

        def write() -> None:
            with engine.begin() as conn:
                conn.execute(text("INSERT INTO t VALUES (1)"))

        assert database_busy(_raised(write))


def test_a_missing_sqlite_table_is_a_fault_not_busy(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'empty.db'}")

    def read() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT * FROM nowhere"))

    error = _raised(read)
    assert isinstance(error, DBAPIError)
    assert not database_busy(error)


def test_an_unreachable_postgres_is_busy() -> None:
    engine = create_engine(f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none")
    assert database_busy(_raised(engine.connect))


def test_an_exhausted_pool_is_busy(tmp_path: Path) -> None:
    engine = create_engine(
        f"sqlite:///{tmp_path / 'pool.db'}", pool_size=1, max_overflow=0, pool_timeout=0.1
    )
    with engine.connect():
        error = _raised(engine.connect)
    assert isinstance(error, PoolTimeout)
    assert database_busy(error)


def test_other_errors_are_not_busy() -> None:
    assert not database_busy(ValueError("database is locked"))


@pytest.fixture
def sqlite_file() -> Path:
    from app.settings import get_settings

    url = get_settings().sqlalchemy_url
    if not url.startswith("sqlite:///"):
        pytest.skip("the write lock is SQLite's (Postgres has no database-wide lock)")
    return Path(url.removeprefix("sqlite:///"))


def test_a_locked_database_answers_writes_503_and_reads_still_answer(
    sqlite_file: Path, monkeypatch
) -> None:
    monkeypatch.setenv("FTSTUDIO_DATABASE_BUSY_TIMEOUT", "0.5")
    writer = make_account("busy-writer")
    fresh = make_account("busy-reader")  # never used: its first read would record the use
    with running_web(RUN_DIR / "busy-web.log") as url, httpx.Client(base_url=url) as http:

        def upload() -> httpx.Response:
            files = {"file": ("rows.jsonl", ROWS, "application/json")}
            return http.post("/api/datasets", headers=writer.headers, files=files, timeout=30)

        before = http.get("/api/datasets", headers=writer.headers).json()
        with _write_locked(sqlite_file):
            refused = upload()
            read = http.get("/api/datasets", headers=fresh.headers, timeout=30)
            page = http.get("/login", timeout=30)
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
        assert "busy" in refused.json()["detail"]
        assert read.status_code == 200, read.text
        assert page.status_code == 200

        assert http.get("/api/datasets", headers=writer.headers).json() == before
        stored = upload()
        assert stored.status_code == 201, stored.text
        assert stored.json()["num_rows"] == 2
