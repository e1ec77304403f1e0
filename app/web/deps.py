"""FastAPI dependencies: database session, current user (token or browser session), CSRF."""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from app.auth import browser_session_user, note_token_use, token_lookup
from app.db import database_busy, session_scope
from app.models import User
from app.settings import Settings, get_settings

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SESSION_KEY = "sid"  # the browser session's id in the signed cookie (app.auth)


def get_session() -> Iterator[Session]:
    """One session per request: committed when the handler succeeds, rolled back otherwise."""
    with session_scope() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


class LoginRequired(Exception):
    """Raised for pages: the handler redirects to the login page."""


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def csrf_matches(request: Request, sent: str) -> bool:
    expected = request.session.get("csrf", "")
    return bool(expected) and hmac.compare_digest(sent, expected)


async def _check_csrf(request: Request) -> None:
    sent = request.headers.get(CSRF_HEADER, "")
    if not sent and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        sent = str((await request.form()).get(CSRF_FIELD, ""))
    if not csrf_matches(request, sent):
        raise HTTPException(status_code=403, detail="CSRF token missing or wrong; reload the page")


def _bearer_user(session: Session, token: str) -> User | None:
    """One read in the request's session finds the token's user. Its last_used_at write (at most
    once a minute per token) goes in its own short transaction, committed before the handler
    runs: no request holds the token's row lock (Postgres) or the write lock (SQLite) while it
    works or streams, and other requests with the same token never wait on it. The common case
    (a token used in the last minute) costs one indexed query and one pooled connection."""
    found = token_lookup(session, token)
    if found is None:
        return None
    user, due = found
    if due is not None:
        try:
            with session_scope() as auth_session:
                note_token_use(auth_session, due)
        except (DBAPIError, PoolTimeout) as exc:
            if not database_busy(exc):
                raise
            # A read never fails for want of its bookkeeping: the next use records it.
            log.info("token %s: last use not recorded, the database is busy", due)
    return user


async def _resolve_user(request: Request, session: Session) -> User | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        # Off the event loop: the lookup may wait on a database lock (its last_used_at write),
        # which must not stall every other request (see BENCHMARKS.md, bench_sse).
        return await run_in_threadpool(_bearer_user, session, header[7:].strip())
    session_id = request.session.get(SESSION_KEY)
    if not isinstance(session_id, str):
        return None
    user = await run_in_threadpool(browser_session_user, session, session_id)
    if user is not None and request.method not in SAFE_METHODS:
        await _check_csrf(request)
    return user


async def api_user(request: Request, session: SessionDep) -> User:
    user = await _resolve_user(request, session)
    if user is None:
        raise HTTPException(
            status_code=401,
            detail="authentication required: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return user


async def page_user(request: Request, session: SessionDep) -> User:
    user = await _resolve_user(request, session)
    if user is None:
        raise LoginRequired()
    return user


def admin_user(user: Annotated[User, Depends(api_user)]) -> User:
    if not user.is_admin:
        raise HTTPException(status_code=403, detail="admin only")
    return user


CurrentUser = Annotated[User, Depends(api_user)]
PageUser = Annotated[User, Depends(page_user)]
AdminUser = Annotated[User, Depends(admin_user)]


async def form_values(request: Request) -> dict[str, str]:
    """A form's text fields (without the CSRF token), read before a plain ``def`` handler runs
    in a worker thread: handlers that touch the database never block the event loop."""
    form = await request.form()
    return {k: v for k, v in form.items() if k != CSRF_FIELD and isinstance(v, str)}


async def form_data(request: Request) -> FormData:
    """The whole form, for fields that repeat (``getlist``)."""
    return await request.form()


FormValues = Annotated[dict[str, str], Depends(form_values)]
RawForm = Annotated[FormData, Depends(form_data)]
