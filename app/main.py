"""The FastAPI application. Nothing heavy at import: no torch, no model loading."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from app import broker
from app.db import get_engine, web_threads
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

UPLOAD_PATHS = ("/api/datasets", "/datasets")


def create_app() -> FastAPI:
    settings = get_settings()
    settings.ensure_dirs()
    threads = web_threads(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Blocking handlers run in anyio's default thread pool: FTSTUDIO_WEB_THREADS of them
        # (0: anyio's 40), the same number as the database pool (app.db.web_threads).
        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
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
    )
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
    # Added last: the outermost middleware, so an oversized upload is refused before anything
    # reads (or spools) its body.
    app.add_middleware(UploadLimit, max_upload_bytes=settings.max_upload_bytes)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        checks = {"database": _database_ok(), "broker": broker.broker_reachable()}
        return JSONResponse(
            {"ok": all(checks.values()), **checks}, status_code=200 if all(checks.values()) else 503
        )

    return app


def _database_ok() -> bool:
    try:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


class UploadLimit:
    """Refuses a POST to an upload path without a Content-Length (411) or over the limit (413)
    before its body is read. A plain ASGI middleware: every other request passes straight
    through, without the per-request cost of ``BaseHTTPMiddleware``."""

    def __init__(self, app: ASGIApp, max_upload_bytes: int) -> None:
        self.app = app
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        upload = scope["type"] == "http" and scope["method"] == "POST"
        if not upload or scope["path"] not in UPLOAD_PATHS:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        length = request.headers.get("content-length")
        if length is None:
            refused = errors.upload_refused(request, 411, "uploads need a Content-Length header")
        elif int(length) > self.max_upload_bytes:
            detail = f"upload is larger than the limit of {self.max_upload_bytes} bytes"
            refused = errors.upload_refused(request, 413, detail)
        else:
            await self.app(scope, receive, send)
            return
        await refused(scope, receive, send)
