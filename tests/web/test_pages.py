"""Browser pages, checked by parsing the HTML (CSS selectors), logged in with a session."""

from __future__ import annotations

import json

import pytest

from app.spec import HYPERPARAMETER_FIELDS, TrainingSpec
from tests.conftest import Account
from tests.support.html import log_in, soup


@pytest.fixture
def browser(client, alice: Account):
    """The test client logged in as alice through the login form; yields the CSRF token."""
    yield log_in(client, alice)
    client.cookies.clear()


def _upload(client, csrf: str, content: bytes, filename: str = "d.jsonl"):
    return client.post(
        "/datasets",
        data={"csrf_token": csrf},
        files={"file": (filename, content)},
        follow_redirects=True,
    )


def test_upload_lands_on_a_preview_with_user_text_escaped(client, browser: str) -> None:
    record = {"instruction": "<script>alert(1)</script>", "output": "<b>bold</b> & done"}
    page = soup(_upload(client, browser, json.dumps(record).encode()))
    assert page.select_one(".dataset-rows").get_text() == "1"
    assert page.select_one(".dataset-format").get_text() == "alpaca"
    previews = page.select(".row-preview .msg pre")
    assert [p.get_text() for p in previews] == ["<script>alert(1)</script>", "<b>bold</b> & done"]
    assert not page.select(".row-preview script") and not page.select(".row-preview b")


def test_a_refused_upload_lists_its_errors(client, browser: str) -> None:
    response = _upload(client, browser, b'{"instruction": "a", "output": ""}\n{oops\n')
    assert response.status_code == 422
    rows = soup(response).select(".refused table.errors tbody tr")
    assert [r.select("td")[0].get_text() for r in rows] == ["1", "2"]


def test_dataset_rows_page_with_htmx_returns_only_the_fragment(client, browser: str) -> None:
    lines = "\n".join(json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) for i in range(45))
    dataset_url = _upload(client, browser, lines.encode()).url.path
    full = soup(client.get(dataset_url + "?page=3"))
    assert full.select_one("header.topbar") is not None
    assert [a.get_text() for a in full.select(".row-preview header")] == [
        "#40",
        "#41",
        "#42",
        "#43",
        "#44",
    ]
    fragment = soup(client.get(dataset_url + "?page=2", headers={"HX-Request": "true"}))
    assert fragment.select_one("header.topbar") is None
    assert len(fragment.select(".row-preview")) == 20


def test_job_form_is_generated_from_the_spec(client, browser: str) -> None:
    form = soup(client.get("/jobs/new")).select_one("#job-form")
    names = {field["name"] for field in form.select("input[name], select[name]")}
    assert set(HYPERPARAMETER_FIELDS) <= names
    lr = form.select_one("input[name=learning_rate]")
    assert float(lr["value"]) == TrainingSpec().learning_rate
    assert form.select_one("input[name=lora_r]")["min"] == "1"
    scheduler = [o.get_text() for o in form.select("select[name=lr_scheduler_type] option")]
    assert "cosine" in scheduler


def test_job_form_errors_keep_what_was_typed(client, browser: str, tiny_model: str) -> None:
    dataset_url = _upload(client, browser, b'{"instruction": "a", "output": "b"}').url.path
    dataset_id = dataset_url.rsplit("/", 1)[1]
    form = soup(client.get("/jobs/new"))
    model_id = next(
        o["value"]
        for o in form.select("select[name=base_model] option")
        if o.get_text() == tiny_model
    )
    data = {
        "csrf_token": browser,
        "name": "my run",
        "base_model": model_id,
        "dataset_id": dataset_id,
        "learning_rate": "-1",
        "lora_r": "12",
        "max_steps": "7",
        "logging_steps": "1",
    }
    response = client.post("/jobs", data=data)
    assert response.status_code == 422
    page = soup(response)
    assert page.select_one("label.invalid input[name=learning_rate]")["value"] == "-1"
    assert page.select_one("input[name=lora_r]")["value"] == "12"
    assert page.select_one("input[name=name]")["value"] == "my run"
    assert page.select_one("select[name=dataset_id] option[selected]")["value"] == dataset_id


def test_not_found_page(client, browser: str) -> None:
    response = client.get("/jobs/999999")
    assert response.status_code == 404
    assert soup(response).select_one("h1").get_text() == "Not found"
