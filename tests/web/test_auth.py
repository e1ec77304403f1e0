"""Authentication and authorization: tokens, browser sessions with CSRF, owner scoping."""

from __future__ import annotations

import re

import pytest
from bs4 import BeautifulSoup

from tests.conftest import Account


def _api_routes(client) -> list[tuple[str, str]]:
    routes = []
    for path, operations in client.app.openapi()["paths"].items():
        if path.startswith("/api/"):
            routes += [(method.upper(), re.sub(r"\{[^}]+\}", "1", path)) for method in operations]
    return routes


def test_every_api_route_needs_a_token(client) -> None:
    routes = _api_routes(client)
    assert len(routes) >= 15
    client.cookies.clear()
    for method, path in routes:
        response = client.request(method, path)
        assert response.status_code == 401, (method, path, response.status_code)
        assert response.headers["www-authenticate"] == "Bearer"


def test_only_login_static_and_healthz_are_public(client) -> None:
    client.cookies.clear()
    assert client.get("/openapi.json").status_code == 404
    assert client.get("/docs").status_code == 404
    assert client.get("/api/openapi.json").status_code == 401
    assert client.get("/static/css/studio.css").status_code == 200
    assert client.get("/login").status_code == 200


def test_a_wrong_token_is_401(client) -> None:
    assert client.get("/api/jobs", headers={"Authorization": "Bearer fts_nope"}).status_code == 401


def test_pages_redirect_to_login(client) -> None:
    client.cookies.clear()
    for path in ("/", "/datasets", "/datasets/1", "/jobs", "/jobs/new", "/jobs/1"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/login?next=")


def test_healthz_is_public(client) -> None:
    body = client.get("/healthz").json()
    assert body == {"ok": True, "database": True, "broker": True}


def _login(client, account: Account) -> str:
    client.cookies.clear()
    response = client.post(
        "/login", data={"token": account.token, "next": "/datasets"}, follow_redirects=False
    )
    assert response.status_code == 303 and response.headers["location"] == "/datasets"
    page = BeautifulSoup(client.get("/datasets").text, "html.parser")
    return page.select_one('meta[name="csrf-token"]')["content"]


def test_browser_session_needs_csrf_on_writes(client, alice: Account) -> None:
    csrf = _login(client, alice)
    upload = {"file": ("a.jsonl", b'{"instruction": "hi", "output": "hello"}\n')}
    assert client.post("/api/datasets", files=upload).status_code == 403
    assert (
        client.post("/api/datasets", files=upload, headers={"X-CSRF-Token": "wrong"}).status_code
        == 403
    )
    ok = client.post("/api/datasets", files=upload, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 201
    form_ok = client.post(
        "/datasets", files=upload, data={"csrf_token": csrf}, follow_redirects=False
    )
    assert form_ok.status_code == 303
    client.cookies.clear()


def test_wrong_login_shows_an_error_and_keeps_the_name(client, alice: Account) -> None:
    client.cookies.clear()
    response = client.post("/login", data={"username": "alice", "password": "nope"})
    assert response.status_code == 401
    page = BeautifulSoup(response.text, "html.parser")
    assert page.select_one("[role=alert]").get_text(strip=True)
    assert page.select_one("input[name=username]")["value"] == "alice"


def test_password_login(client) -> None:
    from app.auth import get_or_create_user, set_password
    from app.db import session_scope

    with session_scope() as session:
        set_password(session, get_or_create_user(session, "carol"), "correct horse")
    client.cookies.clear()
    response = client.post(
        "/login", data={"username": "carol", "password": "correct horse"}, follow_redirects=False
    )
    assert response.status_code == 303
    page = BeautifulSoup(client.get("/").text, "html.parser")
    assert page.select_one(".who").get_text() == "carol"
    client.cookies.clear()


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/"])
def test_login_never_redirects_off_site(client, alice: Account, target: str) -> None:
    client.cookies.clear()
    response = client.post(
        "/login", data={"token": alice.token, "next": target}, follow_redirects=False
    )
    assert response.headers["location"] == "/"
    client.cookies.clear()


def test_model_registration_is_admin_only(client, bob: Account, tmp_path) -> None:
    response = client.post(
        "/api/models", headers=bob.headers, json={"name": "x", "path": str(tmp_path)}
    )
    assert response.status_code == 403


def _token_last_used(account: Account):
    from sqlalchemy import select

    from app.db import session_scope
    from app.models import ApiToken

    with session_scope() as session:
        return session.scalar(
            select(ApiToken.last_used_at).where(ApiToken.user_id == account.user_id)
        )


def _forget_token_use(account: Account) -> None:
    from sqlalchemy import update

    from app.db import session_scope
    from app.models import ApiToken

    with session_scope() as session:
        session.execute(
            update(ApiToken).where(ApiToken.user_id == account.user_id).values(last_used_at=None)
        )


def test_token_use_is_noted_at_most_once_a_minute(client, alice: Account) -> None:
    _forget_token_use(alice)
    assert client.get("/api/jobs", headers=alice.headers).status_code == 200
    first = _token_last_used(alice)
    assert first is not None
    assert client.get("/api/jobs", headers=alice.headers).status_code == 200
    assert _token_last_used(alice) == first


def test_a_burst_of_requests_with_one_stale_token_is_all_served(
    live_server: str, alice: Account
) -> None:
    """Every request of the burst finds the token due for its last-used write; the writes must
    neither serialize the requests behind one another's transactions nor stall the server (they
    did, on Postgres without a timeout, when the write ran in the request's own transaction on
    the event loop)."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    _forget_token_use(alice)

    def get_jobs(_: int) -> int:
        return httpx.get(f"{live_server}/api/jobs", headers=alice.headers, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=24) as pool:
        statuses = list(pool.map(get_jobs, range(48)))
    assert statuses == [200] * 48
    assert _token_last_used(alice) is not None
    assert httpx.get(f"{live_server}/healthz", timeout=5).status_code == 200
