"""Templates: the full page, or one block of it when HTMX asks for a fragment."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response
from jinja2_fragments.fastapi import Jinja2Blocks

from app.paths import TEMPLATES_DIR
from app.web.deps import csrf_token

templates = Jinja2Blocks(directory=str(TEMPLATES_DIR))


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


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
