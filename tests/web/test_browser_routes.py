"""Browser routes answer with pages, never raw JSON: an unknown URL gets the studio's 404 page
(JSON under /api/), errors a short page, and /models lists the base models."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from bs4 import BeautifulSoup

from tests.conftest import Account
from tests.support.html import post_login


@pytest.fixture
def browser(client, alice: Account) -> Iterator[str]:
    """The test client logged in as alice; yields the CSRF token."""
    client.cookies.clear()
    post_login(client, {"token": alice.token})
    page = BeautifulSoup(client.get("/").text, "html.parser")
    yield page.select_one('meta[name="csrf-token"]')["content"]
    client.cookies.clear()


def _is_page(response) -> BeautifulSoup:
    assert response.headers["content-type"].startswith("text/html"), response.text
    return BeautifulSoup(response.text, "html.parser")


@pytest.mark.parametrize("path", ["/nope", "/jobs/new/extra", "/datasets/1/nothing-here"])
def test_an_unknown_url_gets_the_not_found_page(client, browser: str, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert _is_page(response).h1.text == "Not found"


def test_an_unknown_api_url_is_json(client, alice: Account) -> None:
    response = client.get("/api/nope", headers=alice.headers)
    assert response.status_code == 404 and response.json() == {"detail": "Not Found"}


def test_the_models_page_lists_base_models(client, browser: str, tiny_model: str) -> None:
    response = client.get("/models")
    assert response.status_code == 200
    names = [td.text for td in _is_page(response).select("tr[data-model-id] td:first-child")]
    assert tiny_model in names
    assert client.get("/api/models", headers={}).status_code == 200  # the session works too


def test_a_refused_page_action_is_a_page(client, browser: str) -> None:
    """Exporting a checkpoint that does not exist, or without the CSRF token."""
    missing = client.post("/checkpoints/999999/exports", data={"csrf_token": browser})
    assert missing.status_code == 404 and _is_page(missing).h1.text == "Not found"
    forged = client.post("/checkpoints/999999/exports", data={"csrf_token": "forged"})
    assert forged.status_code == 403
    assert "CSRF" in _is_page(forged).select_one("[role=alert]").text


def test_a_page_with_a_bad_query_is_a_page(client, browser: str) -> None:
    response = client.get("/datasets/not-a-number")
    assert response.status_code == 422
    assert _is_page(response).select_one("[role=alert]")
