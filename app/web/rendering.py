"""Responses made in the handler's own thread: templates (the full page, or one block of it
when HTMX asks for a fragment) and large JSON bodies.

FastAPI encodes what a handler returns on the event loop (``jsonable_encoder``, then
``json.dumps``), however plain the handler: for a large answer (a page of rows, the tokens of a
huge row, generated samples) that held every other request for seconds. Such handlers return
``json_response``, encoded in the thread pool like a rendered template."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response
from jinja2_fragments.fastapi import Jinja2Blocks

from app.paths import TEMPLATES_DIR
from app.serialize import json_bytes
from app.web.deps import csrf_token

templates = Jinja2Blocks(directory=str(TEMPLATES_DIR))


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def json_response(data: Any, status_code: int = 200) -> Response:
    """``data`` (plain JSON values) encoded here, off the event loop, as JSONResponse would."""
    return Response(json_bytes(data), status_code=status_code, media_type="application/json")


def render(
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    *,
    block: str | None = None,
    status_code: int = 200,
) -> Response:
    """Render ``name``; with ``block`` set and an HTMX request, only that block."""
    ctx = {"csrf_token": csrf_token(request), **(context or {})}
    if block and is_htmx(request):
        return templates.TemplateResponse(
            request, name, ctx, block_name=block, status_code=status_code
        )
    return templates.TemplateResponse(request, name, ctx, status_code=status_code)
