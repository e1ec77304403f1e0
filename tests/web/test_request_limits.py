"""Bounded request bodies and the security headers (issue 14): every route's body is limited
before any parsing or auth, a chunked body is cut off as soon as it passes the limit, and every
response carries a CSP without inline script, no framing, nosniff and a referrer policy."""

from __future__ import annotations

import asyncio

import pytest
from bs4 import BeautifulSoup

from app.web.middleware import CONTENT_SECURITY_POLICY, RequestLimits
from tests.conftest import Account
from tests.support.html import page as logged_in_page

LIMIT = 1024 * 1024  # the default max_body_bytes


def test_a_large_json_body_without_credentials_is_refused_unread(client) -> None:
    response = client.post(
        "/api/jobs",
        content=b"[" + b"0," * (LIMIT // 2) + b"0]",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413  # before auth: not a 401 after reading it
    assert "larger than the limit" in response.json()["detail"]


def test_a_huge_login_body_is_refused_by_its_length(client) -> None:
    response = client.post(
        "/login",
        content=b"x" * 64,
        headers={
            "content-type": "multipart/form-data; boundary=b",
            "content-length": str(300 * 1024 * 1024),
        },
    )
    assert response.status_code == 413
    page = BeautifulSoup(response.text, "html.parser")
    assert "larger than the limit" in page.select_one("main").get_text()


def test_a_chunked_body_past_the_limit_is_refused(client, alice: Account) -> None:
    def chunks():
        for _ in range(LIMIT // 4096 + 2):
            yield b" " * 4096

    response = client.post(
        "/api/jobs",
        content=chunks(),
        headers={**alice.headers, "content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["detail"].startswith("request body is larger than the limit")


def test_reading_stops_at_the_limit() -> None:
    """A chunked body is read only until it passes the limit: the rest is never pulled."""
    pulled = 0

    async def receive() -> dict:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"x" * 1000, "more_body": True}

    async def app(scope, receive, send) -> None:
        while (await receive()).get("more_body"):
            pass

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/jobs",
        "raw_path": b"/api/jobs",
        "root_path": "",
        "scheme": "http",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        "server": ("testserver", 80),
    }
    asyncio.run(
        RequestLimits(app, max_upload_bytes=10**9, max_body_bytes=5000)(scope, receive, send)
    )
    assert pulled == 6  # 6000 bytes: the first count past 5000
    assert sent[0]["status"] == 413


def test_small_bodies_and_reads_pass(client, alice: Account) -> None:
    assert client.get("/api/jobs", headers=alice.headers).status_code == 200
    refused = client.post("/api/jobs", headers=alice.headers, json={"base_model": "nope"})
    assert refused.status_code == 422  # read and validated: under the limit


@pytest.mark.parametrize("path", ["/login", "/api/jobs", "/static/js/job.js", "/no-such-page"])
def test_every_response_has_the_security_headers(client, path: str) -> None:
    headers = client.get(path).headers
    assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert "script-src 'self';" in CONTENT_SECURITY_POLICY  # no 'unsafe-inline' for scripts
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "same-origin"


@pytest.mark.parametrize("path", ["/", "/login", "/datasets", "/jobs", "/jobs/new", "/models"])
def test_pages_have_no_inline_script(client, alice: Account, path: str) -> None:
    """The CSP forbids inline script: no page may rely on it (scripts are files, data rides in
    JSON script elements, no on* handler attributes)."""
    page = logged_in_page(client, alice, path)
    for script in page.select("script"):
        assert script.get("src") or script.get("type") == "application/json", script
    for element in page.find_all(True):
        handlers = [name for name in element.attrs if name.lower().startswith("on")]
        assert not handlers, element
