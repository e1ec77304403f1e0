"""Authentication and authorization: tokens, browser sessions with CSRF, owner scoping."""

from __future__ import annotations

import re

import pytest
from bs4 import BeautifulSoup

from tests.conftest import Account
from tests.support.html import post_login


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
    response = post_login(
        client, {"token": account.token, "next": "/datasets"}, follow_redirects=False
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
    response = post_login(client, {"username": "alice", "password": "nope"})
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
    response = post_login(
        client, {"username": "carol", "password": "correct horse"}, follow_redirects=False
    )
    assert response.status_code == 303
    page = BeautifulSoup(client.get("/").text, "html.parser")
    assert page.select_one(".who").get_text() == "carol"
    client.cookies.clear()


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/"])
def test_login_never_redirects_off_site(client, alice: Account, target: str) -> None:
    client.cookies.clear()
    response = post_login(client, {"token": alice.token, "next": target}, follow_redirects=False)
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

    # 50 new connections at once (issue 14: such a burst once exhausted a pool of 5 + 10).
    with ThreadPoolExecutor(max_workers=50) as pool:
        statuses = list(pool.map(get_jobs, range(100)))
    assert statuses == [200] * 100
    assert _token_last_used(alice) is not None
    assert httpx.get(f"{live_server}/healthz", timeout=5).status_code == 200


def test_login_without_the_forms_csrf_token_is_refused(client, alice: Account) -> None:
    client.cookies.clear()
    client.get("/login")
    response = client.post("/login", data={"token": alice.token}, follow_redirects=False)
    assert response.status_code == 403
    assert client.get("/", follow_redirects=False).status_code == 303  # not signed in


def test_logout_ends_the_session_on_the_server(client, alice: Account) -> None:
    client.cookies.clear()
    assert post_login(client, {"token": alice.token}, follow_redirects=False).status_code == 303
    copied = dict(client.cookies)
    page = BeautifulSoup(client.get("/").text, "html.parser")
    csrf = page.select_one('meta[name="csrf-token"]')["content"]
    assert (
        client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False).status_code == 303
    )
    client.cookies.clear()
    for name, value in copied.items():  # the cookie copied before logging out
        client.cookies.set(name, value)
    assert client.get("/", follow_redirects=False).status_code == 303
    client.cookies.clear()


def test_failed_logins_are_throttled_per_name_and_address(client) -> None:
    from app.auth import get_or_create_user, set_password
    from app.db import session_scope

    with session_scope() as session:
        set_password(session, get_or_create_user(session, "dora"), "correct horse battery")
    client.app.state.login_throttle._records.clear()
    client.cookies.clear()
    allowed = client.app.state.login_throttle.allowed_failures
    for _ in range(allowed):
        wrong = post_login(client, {"username": "dora", "password": "wrong"})
        assert wrong.status_code == 401
    refused = post_login(client, {"username": "dora", "password": "correct horse battery"})
    assert refused.status_code == 429  # even the right password waits its turn
    assert int(refused.headers["retry-after"]) >= 1
    client.app.state.login_throttle._records.clear()
    ok = post_login(
        client, {"username": "dora", "password": "correct horse battery"}, follow_redirects=False
    )
    assert ok.status_code == 303
    client.cookies.clear()


def test_throttle_waits_double_and_a_success_clears_them() -> None:
    from app.logins import MAX_WAIT_SECONDS, LoginThrottle

    now = [0.0]
    throttle = LoginThrottle(2, clock=lambda: now[0])
    for _ in range(2):
        throttle.failed("eve", "10.0.0.1")
    assert throttle.wait_seconds("eve", "10.0.0.9") == 1.0  # the name, from anywhere
    assert throttle.wait_seconds("other", "10.0.0.1") == 1.0  # the address, for any name
    throttle.failed("eve", "10.0.0.1")
    assert throttle.wait_seconds("eve", "10.0.0.1") == 2.0
    for _ in range(30):
        throttle.failed("eve", "10.0.0.1")
    assert throttle.wait_seconds("eve", "10.0.0.1") == MAX_WAIT_SECONDS
    throttle.succeeded("eve", "10.0.0.1")
    assert throttle.wait_seconds("eve", "10.0.0.1") == 0.0


def test_unknown_names_cost_the_same_scrypt_work(monkeypatch) -> None:
    """No early return for a name that does not exist: the same hash is computed."""
    import hashlib

    from app import auth
    from app.db import session_scope

    calls: list[dict] = []
    real = hashlib.scrypt

    def counting(*args, **kwargs):
        calls.append({k: kwargs[k] for k in ("n", "r", "p")})
        return real(*args, **kwargs)

    monkeypatch.setattr(auth.hashlib, "scrypt", counting)
    with session_scope() as session:
        assert auth.authenticate(session, "nobody-at-all", "guess") is None
    assert calls == [auth.SCRYPT]


def test_password_hashes_carry_owasp_parameters_and_old_ones_still_verify() -> None:
    import hashlib

    from app.auth import SCRYPT, hash_password, needs_rehash, verify_password

    assert SCRYPT == {"n": 2**14, "r": 8, "p": 5}
    stored = hash_password("pw-12345678")
    assert stored.startswith("scrypt$16384$8$5$") and verify_password("pw-12345678", stored)
    assert not needs_rehash(stored)
    salt = b"s" * 16
    legacy = f"scrypt${salt.hex()}${hashlib.scrypt(b'old', salt=salt, n=2**14, r=8, p=1).hex()}"
    assert verify_password("old", legacy) and needs_rehash(legacy)


def test_expired_and_revoked_tokens_stop_working(client) -> None:
    from datetime import timedelta

    from app.auth import create_token, get_or_create_user, list_tokens, revoke_token
    from app.db import session_scope

    with session_scope() as session:
        user = get_or_create_user(session, "frank")
        expired = create_token(session, user, "old", expires_in=timedelta(seconds=-1))
        live = create_token(session, user, "live", expires_in=timedelta(days=1))
    assert (
        client.get("/api/jobs", headers={"Authorization": f"Bearer {expired}"}).status_code == 401
    )
    assert client.get("/api/jobs", headers={"Authorization": f"Bearer {live}"}).status_code == 200
    with session_scope() as session:
        (row, owner), *_ = [t for t in list_tokens(session, "frank") if t[0].label == "live"]
        assert owner == "frank" and row.expires_at is not None
        assert revoke_token(session, row.id)
    assert client.get("/api/jobs", headers={"Authorization": f"Bearer {live}"}).status_code == 401
