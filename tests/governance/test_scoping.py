"""Another user's dataset does not exist: every new route answers 404, API and pages alike."""

from __future__ import annotations

import pytest

from tests.conftest import Account
from tests.governance.conftest import MakeDataset, sft
from tests.support.html import log_in, soup

API_ROUTES = [
    ("GET", "/api/datasets/{id}/stats", None),
    ("GET", "/api/datasets/{id}/rows?search=a", None),
    ("GET", "/api/datasets/{id}/versions", None),
    ("GET", "/api/datasets/{id}/export", None),
    ("POST", "/api/datasets/{id}/dedup", {"near": True, "apply": False}),
    ("POST", "/api/datasets/{id}/split", {"eval_ratio": 0.5}),
    ("POST", "/api/datasets/{id}/filter", {"search": "a"}),
    ("POST", "/api/datasets/{id}/contamination", {"against": 1}),
]
PAGE_ROUTES = [
    ("GET", "/datasets/{id}"),
    ("GET", "/datasets/{id}/stats"),
    ("POST", "/datasets/{id}/dedup/review"),
    ("POST", "/datasets/{id}/dedup"),
    ("POST", "/datasets/{id}/split"),
    ("POST", "/datasets/{id}/filter"),
    ("POST", "/datasets/{id}/contamination/check"),
    ("POST", "/datasets/{id}/contamination"),
]


@pytest.fixture(scope="module")
def alices(alice: Account, make_dataset: MakeDataset) -> int:
    return make_dataset(alice, [sft("a", "b"), sft("a", "c")], name="alice-only")


@pytest.mark.parametrize(("method", "path", "body"), API_ROUTES)
def test_api_routes_hide_other_users_datasets(
    client, bob: Account, alices: int, method: str, path: str, body
) -> None:
    response = client.request(method, path.format(id=alices), headers=bob.headers, json=body)
    assert response.status_code == 404
    assert response.json() == {"detail": "dataset not found"}


@pytest.mark.parametrize(("method", "path"), PAGE_ROUTES)
def test_pages_hide_other_users_datasets(
    client, bob: Account, alices: int, method: str, path: str
) -> None:
    csrf = log_in(client, bob)
    data = {"csrf_token": csrf, "against": str(alices), "eval_ratio": "0.5", "search": "a"}
    response = client.request(
        method, path.format(id=alices), data=data if method == "POST" else None
    )
    client.cookies.clear()
    assert response.status_code == 404
    assert soup(response).select_one("h1").get_text() == "Not found"


def test_contamination_against_another_users_dataset_is_404(
    client, bob: Account, alices: int, make_dataset: MakeDataset
) -> None:
    bobs = make_dataset(bob, [sft("x", "y")])
    response = client.post(
        f"/api/datasets/{bobs}/contamination", headers=bob.headers, json={"against": alices}
    )
    assert response.status_code == 404


def test_versions_never_list_another_users_children(
    client, alice: Account, bob: Account, alices: int
) -> None:
    split = client.post(
        f"/api/datasets/{alices}/split", headers=alice.headers, json={"eval_ratio": 0.5}
    )
    assert split.status_code == 201
    page = client.get("/api/datasets", headers=bob.headers).json()
    assert alices not in {d["id"] for d in page}
    assert split.json()["train"]["id"] not in {d["id"] for d in page}


def test_routes_need_authentication(client, alices: int) -> None:
    client.cookies.clear()
    assert client.get(f"/api/datasets/{alices}/stats").status_code == 401
    assert client.post(f"/api/datasets/{alices}/dedup", json={}).status_code == 401
    page = client.get(f"/datasets/{alices}", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/login")


def test_page_posts_need_the_csrf_token(client, alice: Account, alices: int) -> None:
    log_in(client, alice)
    response = client.post(f"/datasets/{alices}/split", data={"eval_ratio": "0.5"})
    client.cookies.clear()
    assert response.status_code == 403
