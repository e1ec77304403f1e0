"""The FastAPI application. Nothing heavy at import: no torch, no model loading."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text
from starlette.middleware.sessions import SessionMiddleware

from app import broker
from app.access import NotFound
from app.db import get_engine
from app.paths import STATIC_DIR
from app.settings import get_settings
from app.web import (
    api,
    chat_template_pages,
    chat_templates_api,
    comparison_pages,
    comparisons_api,
    dataset_ops,
    evaluations_api,
    evaluations_pages,
    pages,
    runs_api,
    runs_pages,
)
from app.web.deps import LoginRequired
from app.web.rendering import render

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
    app.include_router(dataset_ops.router)  # before api/pages: it serves the dataset page
    app.include_router(runs_api.router)
    app.include_router(chat_templates_api.router)
    app.include_router(chat_template_pages.router)
    app.include_router(comparisons_api.router)
    app.include_router(comparison_pages.router)
    app.include_router(evaluations_api.router)
    app.include_router(evaluations_pages.router)
    app.include_router(runs_pages.router)  # before pages: it serves the runs list and job page
    app.include_router(api.router)
    app.include_router(pages.router)
    _install_handlers(app, settings.max_upload_bytes)

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


def _install_handlers(app: FastAPI, max_upload_bytes: int) -> None:
    @app.middleware("http")
    async def limit_upload_size(request: Request, call_next):
        if request.method == "POST" and request.url.path in UPLOAD_PATHS:
            length = request.headers.get("content-length")
            if length is None:
                return JSONResponse(
                    {"detail": "uploads need a Content-Length header"}, status_code=411
                )
            if int(length) > max_upload_bytes:
                detail = f"upload is larger than the limit of {max_upload_bytes} bytes"
                return JSONResponse({"detail": detail}, status_code=413)
        return await call_next(request)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": str(exc)}, status_code=404)
        return render(request, "not_found.html", {"what": exc.what}, status_code=404)

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.headers.get("hx-request") == "true":
            return Response(status_code=401, headers={"HX-Redirect": "/login"})
        return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
