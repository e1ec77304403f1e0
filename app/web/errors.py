"""How the studio answers when something goes wrong.

Every 422 of the API has one shape::

    {"detail": ..., "errors": [{"loc": [...] or "line": N, "message": "...", ...}]}

``errors`` always lists at least one problem, each with a ``message`` a person can act on and
where it is: ``loc`` (the path of the field in the request, e.g. ``["hyperparameters", "lr"]``)
or ``line`` (the line of an uploaded file). ``detail`` is a sentence, except where the REST
contract has always promised the field list there (FastAPI's request validation, job and
evaluation requests): those keep the list, each entry with its ``loc``, ``msg`` and ``type``,
and ``errors`` repeats it with ``message`` beside ``msg``.

Outside /api/, errors are pages: an unknown URL gets the studio's 404 page, other errors a
short page that says what went wrong (never raw JSON in a browser).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.access import NotFound
from app.broker import RETRY_AFTER_SECONDS as BROKER_RETRY_AFTER_SECONDS
from app.broker import BrokerUnavailable
from app.data.errors import ImportRefused
from app.db import RETRY_AFTER_SECONDS, database_busy
from app.web.deps import LoginRequired
from app.web.rendering import is_htmx, render, templates

API_PREFIX = "/api/"


class ErrorEntry(BaseModel):
    """One problem: ``message`` and where (``loc`` or ``line``); validation errors also keep
    ``msg`` and ``type``, upload errors the ``field`` of the record."""

    loc: list[str | int] | None = None
    line: int | None = None
    field: str | None = None
    message: str
    msg: str | None = None
    type: str | None = None


class Unprocessable(BaseModel):
    """Every 422 of the API."""

    detail: str | list[ErrorEntry] = Field(
        description="a sentence; the field list itself for field validation errors"
    )
    errors: list[ErrorEntry] = Field(min_length=1)


def is_api(request: Request) -> bool:
    return request.url.path.startswith(API_PREFIX)


def unprocessable(
    message: str, loc: Sequence[str | int] = (), *, kind: str = "value_error"
) -> JSONResponse:
    """A 422 for one problem described in words (``loc``: where in the request; empty: the
    request as a whole)."""
    error = {"loc": list(loc), "message": message, "msg": message, "type": kind}
    return JSONResponse({"detail": message, "errors": [error]}, status_code=422)


def field_errors(errors: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validation errors (``loc``, ``msg``, ``type``...) with ``message`` beside ``msg``."""
    return [
        {**e, "loc": list(e.get("loc") or ()), "message": str(e.get("msg", ""))} for e in errors
    ]


def invalid_fields(errors: Iterable[dict[str, Any]]) -> JSONResponse:
    """A 422 for field validation errors (job and evaluation requests, request validation):
    ``detail`` keeps the list the API always returned; ``errors`` has the one shape."""
    listed = field_errors(errors)
    return JSONResponse({"detail": listed, "errors": listed}, status_code=422)


def import_refused(exc: ImportRefused) -> JSONResponse:
    """A refused upload: one error per bad line, or the file itself when no line is to blame.
    422, or the refusal's own status (413: the content inflates past a limit)."""
    errors: list[dict[str, Any]] = [e.as_dict() for e in exc.errors]
    if not errors:
        errors = [{"loc": ["body", "file"], "message": exc.detail}]
    return JSONResponse({"detail": exc.detail, "errors": errors}, status_code=exc.status_code)


def error_page(request: Request, status_code: int, message: str) -> Response:
    title = {403: "Not allowed", 409: "Not now", 422: "Cannot do that"}.get(status_code, "Error")
    context = {"status_code": status_code, "title": title, "message": message}
    return render(request, "error.html", context, block="error", status_code=status_code)


def upload_refused(request: Request, status_code: int, message: str) -> Response:
    """An upload refused before it is read (no Content-Length, too large): JSON for the API, a
    page for the browser. Called from a middleware, outside the session: the page has no user."""
    return _bare_error(request, status_code, "Upload refused", message)


def _bare_error(
    request: Request, status_code: int, title: str, message: str, headers: dict | None = None
) -> Response:
    """JSON for the API, a page without a user for the browser (no database needed)."""
    if is_api(request):
        return JSONResponse({"detail": message}, status_code=status_code, headers=headers)
    context = {"status_code": status_code, "title": title, "message": message}
    html = templates.env.get_template("error.html").render(context)
    return HTMLResponse(html, status_code=status_code, headers=headers)


def database_unavailable(request: Request) -> Response:
    """503 with Retry-After: the database is locked, restarting or out of connections."""
    return _bare_error(
        request,
        503,
        "Busy",
        f"the database is busy or restarting; try again in {RETRY_AFTER_SECONDS} seconds",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def broker_unavailable(request: Request) -> Response:
    """503 with Retry-After: the task queue did not take the item's message; the item ended
    failed saying so (``app.broker``), so a retry cannot run it twice."""
    return _bare_error(
        request,
        503,
        "Queue unavailable",
        "the task queue (Redis) did not answer, so nothing was queued and nothing ran; "
        f"try again in {BROKER_RETRY_AFTER_SECONDS} seconds",
        headers={"Retry-After": str(BROKER_RETRY_AFTER_SECONDS)},
    )


def install(app: FastAPI) -> None:
    """The exception handlers: API errors as JSON (422 in the one shape), pages for browsers;
    the OpenAPI schema documents that shape for every 422."""
    _document_422(app)

    @app.exception_handler(RequestValidationError)
    async def request_invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [{k: v for k, v in e.items() if k not in ("url",)} for e in exc.errors()]
        if is_api(request):
            return invalid_fields(_jsonable(errors))
        message = "; ".join(_where(e) + str(e.get("msg", "")) for e in errors)
        return error_page(request, 422, message or "the request is not valid")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if is_api(request):
            if exc.status_code == 422 and isinstance(exc.detail, str):
                response = unprocessable(exc.detail)
                response.headers.update(exc.headers or {})
                return response
            return await http_exception_handler(request, exc)
        if exc.status_code == 404:
            return render(request, "not_found.html", {"what": "page"}, status_code=404)
        return error_page(request, exc.status_code, str(exc.detail))

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> Response:
        if is_api(request):
            return JSONResponse({"detail": str(exc)}, status_code=404)
        return render(request, "not_found.html", {"what": exc.what}, status_code=404)

    @app.exception_handler(DBAPIError)
    @app.exception_handler(PoolTimeout)
    async def database_error(request: Request, exc: Exception) -> Response:
        if database_busy(exc):
            return database_unavailable(request)
        raise exc  # a fault: the server's 500, with its traceback in the log

    @app.exception_handler(BrokerUnavailable)
    async def broker_error(request: Request, exc: BrokerUnavailable) -> Response:
        return broker_unavailable(request)

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if is_htmx(request):
            return Response(status_code=401, headers={"HX-Redirect": "/login"})
        return RedirectResponse(f"/login?next={quote(target)}", status_code=303)


def _document_422(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        shape = Unprocessable.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(shape.pop("$defs", {}))
        components["HTTPValidationError"] = shape
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _where(error: dict[str, Any]) -> str:
    loc = [str(p) for p in error.get("loc") or () if p not in ("body", "query", "path")]
    return f"{'.'.join(loc)}: " if loc else ""


def _jsonable(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return jsonable_encoder(errors)
