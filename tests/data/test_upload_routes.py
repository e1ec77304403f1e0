"""The upload routes around the importer: the size limit (413) and the browser form's contract."""

from __future__ import annotations

import json

import pytest
from bs4 import BeautifulSoup

from tests.conftest import Account
from tests.support.datasets import all_rows, jsonl
from tests.support.html import post_login


def _records(n: int) -> bytes:
    return jsonl([{"instruction": f"q{i}", "output": f"a{i}"} for i in range(n)])


def test_an_oversized_upload_is_refused_with_413(alice: Account, monkeypatch) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import get_settings

    monkeypatch.setattr(get_settings(), "max_upload_bytes", 4096)
    with TestClient(create_app()) as small:
        before = len(small.get("/api/datasets", headers=alice.headers).json())
        big = small.post(
            "/api/datasets", headers=alice.headers, files={"file": ("big.jsonl", _records(200))}
        )
        assert big.status_code == 413
        assert "larger than the limit of 4096 bytes" in big.json()["detail"]
        assert len(small.get("/api/datasets", headers=alice.headers).json()) == before
        fits = small.post(
            "/api/datasets", headers=alice.headers, files={"file": ("ok.jsonl", _records(3))}
        )
        assert fits.status_code == 201


@pytest.fixture
def csrf(client, alice: Account):
    client.cookies.clear()
    post_login(client, {"token": alice.token})
    page = BeautifulSoup(client.get("/").text, "html.parser")
    yield page.select_one('meta[name="csrf-token"]')["content"]
    client.cookies.clear()


def test_the_browser_form_takes_the_same_fields(client, alice: Account, csrf: str) -> None:
    raw = b"question,answer\nhi,hello\nbye,\n"
    response = client.post(
        "/datasets",
        data={
            "csrf_token": csrf,
            "name": "from the form",
            "kind": "sft",
            "format": "",
            "encoding": "utf-8",
            "skip_invalid": "on",
            "mapping": json.dumps({"instruction": "question", "output": "answer"}),
        },
        files={"file": ("qa.csv", raw)},
        follow_redirects=False,
    )
    assert response.status_code == 303
    dataset_id = int(response.headers["location"].rsplit("/", 1)[1])
    client.cookies.clear()
    found = client.get(f"/api/datasets/{dataset_id}", headers=alice.headers).json()
    assert (found["name"], found["format"], found["num_rows"]) == ("from the form", "alpaca", 1)
    assert all_rows(client, alice, dataset_id)[0]["messages"][-1]["content"] == "hello"


def test_the_browser_form_shows_a_refusal_with_its_lines(client, csrf: str) -> None:
    raw = b'{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": ""}\n'
    response = client.post(
        "/datasets", data={"csrf_token": csrf}, files={"file": ("bad.jsonl", raw)}
    )
    assert response.status_code == 422
    text = BeautifulSoup(response.text, "html.parser").get_text()
    assert "1 invalid record(s); nothing was stored" in text
    assert "field 'output' is empty" in text
