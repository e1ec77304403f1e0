"""Engine and sessions. One engine per process, built from Settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from app.settings import Settings, get_settings


class Base(DeclarativeBase):
    pass


def web_threads(settings: Settings) -> int:
    """How many blocking handlers the web process runs at once (``FTSTUDIO_WEB_THREADS``; 0:
    anyio's default of 40). Also the database pool's size. Measured with bench/bench_web.py on
    2 cores under 50 clients, 8 threads were no faster than 40 (BENCHMARKS.md), so the default
    stays; the setting is for operators who measure otherwise."""
    return settings.web_threads or 40


def _make_engine(url: str, pool_size: int = 5, busy_timeout: float = 30.0) -> Engine:
    # A web request holds its session's connection from the auth dependency to its response,
    # across its hops between threads, so the pool bounds requests in flight, not threads: a
    # pool as small as the thread pool deadlocks under load (threads waiting for connections
    # held by requests waiting for threads, until the pool's 30 s timeout). Keep one
    # connection per thread, and let more open beside it: without limit for SQLite (a
    # connection is a file handle); for Postgres at most 10 kept open, and up to one more per
    # thread beside them.
    pool = {"pool_size": pool_size, "max_overflow": pool_size}
    if url.startswith("sqlite"):
        pool["max_overflow"] = -1
        if ":memory:" in url or url.rstrip("/") in ("sqlite:", "sqlite+pysqlite:"):
            # An in-memory database lives in one connection: keep SQLAlchemy's single-
            # connection pool for it.
            pool = {}
        # Pooled connections move between threads (one per request, never shared at once),
        # hence check_same_thread=False.
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": busy_timeout}, **pool
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:
            cursor = dbapi_conn.cursor()
            # WAL lets the web process read while the training process writes metrics.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            cursor.close()

        return engine
    pool["pool_size"] = min(pool_size, 10)
    return create_engine(url, pool_pre_ping=True, **pool)


@lru_cache
def get_engine() -> Engine:
    settings = get_settings()
    settings.ensure_dirs()
    return _make_engine(
        settings.sqlalchemy_url,
        pool_size=web_threads(settings),
        busy_timeout=settings.database_busy_timeout,
    )


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session that commits on success and rolls back on error (for workers and the CLI)."""
    session = get_sessionmaker()()
    try:
        yield session
        session.commit()
    except Exception:
        session.rollback()
        raise
    finally:
        session.close()


# SQLite's "try again" errors; any other OperationalError of SQLite (no such table, a
# malformed file...) is a fault, not a busy database.
_SQLITE_BUSY = ("database is locked", "database is busy", "database table is locked")
RETRY_AFTER_SECONDS = 5


def database_busy(exc: BaseException) -> bool:
    """Whether ``exc`` means the database is briefly unavailable (locked, restarting, out of
    pooled connections, connection lost) rather than a fault: the caller should try again."""
    if isinstance(exc, sa_exc.TimeoutError):  # no pooled connection came free in time
        return True
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, sa_exc.OperationalError):
        return False
    module = type(exc.orig).__module__
    if module.startswith("sqlite3"):
        return any(text in str(exc.orig).lower() for text in _SQLITE_BUSY)
    # Postgres' OperationalErrors are the server's state, not the query: connection refused
    # or lost, an administrator's shutdown, the server still starting.
    return True
