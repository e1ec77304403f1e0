"""Riding out a database that is briefly unreachable (a Postgres restart or failover, SQLite
locked past its busy timeout) in the worker and its training processes.

A write the studio cannot lose (a checkpoint's record, a job's final status) is tried again
every second for a while instead of failing a run that trained fine; the engine's
``pool_pre_ping`` replaces the connections the restart broke. Anything else still raises.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

logger = logging.getLogger(__name__)

T = TypeVar("T")

OUTAGE_SECONDS = 120.0  # within the reaper's patience for the job's heartbeat, once it is back


def is_database_outage(exc: BaseException) -> bool:
    """The database went away or is locked: not a problem with what was written."""
    return isinstance(exc, OperationalError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


def retry_database(
    work: Callable[[], T], what: str, *, seconds: float = OUTAGE_SECONDS, pause: float = 1.0
) -> T:
    """``work()``, tried again every ``pause`` s while the database is unreachable, for up to
    ``seconds``; then (or for any other error) its exception."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return work()
        except DBAPIError as exc:
            if not is_database_outage(exc) or time.monotonic() > deadline:
                raise
            logger.warning("%s: the database is unreachable, trying again: %s", what, exc.orig)
            time.sleep(pause)
