"""Plain ASGI middlewares around the whole app (no per-request cost of ``BaseHTTPMiddleware``):
request body limits, applied before anything parses a body or looks up a user, and the security
headers of every response."""

from __future__ import annotations

from fastapi import Request
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.web import errors

UPLOAD_PATHS = ("/api/datasets", "/datasets")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# No inline script anywhere (the pages' scripts are files; their data rides in JSON script
# elements, which are not run); inline styles stay allowed (chart bars, htmx's indicator).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


class BodyTooLarge(HTTPException):
    """A body without a Content-Length grew past the limit while being read: raised from the
    reader, answered 413 by the app's error handlers (or here, outside the app)."""

    def __init__(self, detail: str) -> None:
        super().__init__(status_code=413, detail=detail)


class RequestLimits:
    """Every request's body is bounded before it is read: uploads (POST to an upload path) by
    ``max_upload_bytes`` and must say their Content-Length (411); every other body by
    ``max_body_bytes``, by its Content-Length (413 at once) or, sent chunked, by counting what
    is read (413 as soon as the count passes the limit)."""

    def __init__(self, app: ASGIApp, max_upload_bytes: int, max_body_bytes: int) -> None:
        self.app = app
        self.max_upload_bytes = max_upload_bytes
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        upload = scope["method"] == "POST" and scope["path"] in UPLOAD_PATHS
        limit = self.max_upload_bytes if upload else self.max_body_bytes
        length = request.headers.get("content-length")
        what = "upload" if upload else "request body"
        too_large = f"{what} is larger than the limit of {limit} bytes"
        if length is None and upload:
            refused = errors.upload_refused(request, 411, "uploads need a Content-Length header")
        elif length is not None and (not length.isdigit() or int(length) > limit):
            refused = errors.upload_refused(request, 413, too_large)
        elif length is not None:
            await self.app(scope, receive, send)
            return
        else:
            await self._counted(scope, receive, send, limit, too_large)
            return
        await refused(scope, receive, send)

    async def _counted(
        self, scope: Scope, receive: Receive, send: Send, limit: int, too_large: str
    ) -> None:
        read = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > limit:
                    raise BodyTooLarge(too_large)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await errors.upload_refused(Request(scope), 413, too_large)(scope, receive, send)


class SecurityHeaders:
    """CSP without inline script, no framing, nosniff and a same-origin referrer on every
    response (a header the handler set itself is kept)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
