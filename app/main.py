"""The FastAPI application. Nothing heavy at import: no torch, no model loading."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text
from starlette.middleware.sessions import SessionMiddleware

from app import broker
from app.data.staging import remove_abandoned_imports
from app.db import get_engine, session_scope, web_threads
from app.logins import LoginThrottle
from app.paths import STATIC_DIR
from app.settings import get_settings
from app.web import (
    chat_templates,
    comparisons,
    datasets,
    errors,
    evaluations,
    exports,
    home,
    jobs,
    models,
    workers,
)
from app.web.middleware import RequestLimits, SecurityHeaders

log = logging.getLogger(__name__)


def create_app() -> FastAPI:
    settings = get_settings()
    settings.ensure_dirs()
    threads = web_threads(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Blocking handlers run in anyio's default thread pool: FTSTUDIO_WEB_THREADS of them
        # (0: anyio's 40), the same number as the database pool (app.db.web_threads).
        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        await anyio.to_thread.run_sync(_remove_abandoned_imports)
        yield

    # The schema is served behind auth at /api/openapi.json; no public docs routes.
    app = FastAPI(
        title="Fine-tuning studio",
        version="0.1.0",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.session_secret(),
        session_cookie="ftstudio_session",
        same_site="lax",
        max_age=14 * 24 * 3600,
        https_only=settings.secure_cookies,  # the Secure flag, behind TLS
    )
    app.state.login_throttle = LoginThrottle(settings.login_attempts)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    # One router per resource, each with its API routes and its pages. No two resources
    # share a method and path, so their order does not decide which handler answers; inside
    # a resource, literal paths come before parameters (``/chat-templates/new`` before
    # ``/chat-templates/{template_id}``) and ``/jobs/{job_id:int}`` only matches numbers.
    for resource in (
        home,
        datasets,
        jobs,
        exports,
        evaluations,
        comparisons,
        chat_templates,
        models,
        workers,
    ):
        app.include_router(resource.router)
    errors.install(app)
    app.add_middleware(SecurityHeaders)
    # Added last: the outermost middleware, so an oversized body is refused before anything
    # reads (or spools) it, the session and the user lookup included.
    app.add_middleware(
        RequestLimits,
        max_upload_bytes=settings.max_upload_bytes,
        max_body_bytes=settings.max_body_bytes,
    )

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        checks = {"database": _database_ok(), "broker": broker.broker_reachable()}
        return JSONResponse(
            {"ok": all(checks.values()), **checks}, status_code=200 if all(checks.values()) else 503
        )

    return app


def _remove_abandoned_imports() -> None:
    """Imports a crashed web process left half-written (their heartbeat stopped)."""
    try:
        with session_scope() as session:
            remove_abandoned_imports(session)
    except Exception:  # a database not migrated yet, or down: the next import retries
        log.warning("could not look for abandoned imports", exc_info=True)


def _database_ok() -> bool:
    try:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
