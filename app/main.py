"""The FastAPI application. Nothing heavy at import: no torch, no model loading."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text
from starlette.middleware.sessions import SessionMiddleware

from app import broker
from app.db import get_engine
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
    # The schema is served behind auth at /api/openapi.json; no public docs routes.
    app = FastAPI(
        title="Fine-tuning studio", version="0.1.0", docs_url=None, redoc_url=None, openapi_url=None
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
    _limit_uploads(app, settings.max_upload_bytes)

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


def _limit_uploads(app: FastAPI, max_upload_bytes: int) -> None:
    @app.middleware("http")
    async def limit_upload_size(request: Request, call_next):
        if request.method == "POST" and request.url.path in UPLOAD_PATHS:
            length = request.headers.get("content-length")
            if length is None:
                return errors.upload_refused(request, 411, "uploads need a Content-Length header")
            if int(length) > max_upload_bytes:
                detail = f"upload is larger than the limit of {max_upload_bytes} bytes"
                return errors.upload_refused(request, 413, detail)
        return await call_next(request)
