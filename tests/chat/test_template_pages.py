"""The template library pages, the editor's live preview, and the "what the model sees" views,
checked by parsing the HTML."""

from __future__ import annotations

import json

import pytest
from bs4 import BeautifulSoup

from tests.conftest import Account
from tests.support.html import post_login, soup

HTMX = {"HX-Request": "true"}


def trained(fragment: BeautifulSoup) -> str:
    return "".join(t.get_text() for t in fragment.select(".tokens .tok.loss")).replace("↵", "")


@pytest.fixture
def browser(client, alice: Account, tiny_model: str):
    client.cookies.clear()
    post_login(client, {"token": alice.token})
    yield soup(client.get("/")).select_one('meta[name="csrf-token"]')["content"]
    client.cookies.clear()


@pytest.fixture
def dataset_id(client, alice: Account) -> int:
    rows = [
        {"instruction": "Name a colour.", "output": "Blue."},
        {"instruction": "Name a fruit.", "output": "Pear."},
    ]
    response = client.post(
        "/api/datasets",
        headers=alice.headers,
        files={"file": ("colours.json", json.dumps(rows).encode())},
    )
    return response.json()["id"]


def test_library_page_lists_templates_with_copy_links(client, browser: str) -> None:
    page = soup(client.get("/chat-templates"))
    names = [a.get_text() for a in page.select("table.chat-templates td:first-child a")]
    assert {"ChatML", "Llama 3", "Alpaca", "Plain completion"} <= set(names)
    assert page.select_one('a[href^="/chat-templates/new?copy="]') is not None


def test_editor_previews_and_saves_versions_keeping_text_on_errors(
    client, browser: str, dataset_id: int
) -> None:
    editor = soup(client.get("/chat-templates/new"))
    assert editor.select_one("#template-source").get_text().startswith("{% for message")
    assert "<|im_end|>" in trained(editor.select_one("#seen"))

    broken = "{% for m in messages %}{{ m.content }"
    refused = client.post(
        "/chat-templates", data={"csrf_token": browser, "name": "mine", "template": broken}
    )
    assert refused.status_code == 422
    page = soup(refused)
    assert page.select_one("#template-source").get_text() == broken  # nothing lost
    assert "does not compile" in page.select_one("#save-error").get_text()

    marked = (
        "{% for m in messages %}{% if m.role == 'assistant' %}A: {% generation %}"
        "{{ m.content }}{{ eos_token }}{% endgeneration %}{% else %}Q: {{ m.content }} "
        "{% endif %}{% endfor %}{% if add_generation_prompt %}A: {% endif %}"
    )
    created = client.post(
        "/chat-templates",
        data={"csrf_token": browser, "name": "mine", "template": marked},
        follow_redirects=False,
    )
    assert created.status_code == 303
    url = created.headers["location"]
    saved = client.post(
        f"{url}/versions",
        data={"csrf_token": browser, "template": marked.replace("A: ", "Answer: ")},
        follow_redirects=True,
    )
    editor = soup(saved)
    assert "v2" in editor.select_one("h1").get_text()
    assert len(editor.select(".versions li")) == 2

    preview = soup(
        client.post(
            "/chat-templates/preview",
            data={
                "csrf_token": browser,
                "template": marked,
                "dataset_id": str(dataset_id),
                "row": "1",
            },
            headers=HTMX,
        )
    )
    assert preview.select_one("header.topbar") is None
    assert trained(preview) == " Pear.<|im_end|>"  # " Pear" is one token
    everything = soup(
        client.post(
            "/chat-templates/preview",
            data={
                "csrf_token": browser,
                "template": marked,
                "dataset_id": str(dataset_id),
                "row": "1",
                "loss": "all",
            },
            headers=HTMX,
        )
    )
    assert trained(everything).startswith("Q: Name a fruit.")


def test_builtin_editor_is_read_only(client, browser: str, alice: Account) -> None:
    templates = client.get("/api/chat-templates", headers=alice.headers).json()
    chatml = next(t for t in templates if t["name"] == "ChatML")
    page = soup(client.get(f"/chat-templates/{chatml['id']}"))
    assert page.select_one("#template-source").has_attr("readonly")
    assert page.select_one("#save-template") is None
    refused = client.post(
        f"/chat-templates/{chatml['id']}/versions", data={"csrf_token": browser, "template": "x"}
    )
    assert refused.status_code == 422 and "copy" in soup(refused).select_one("#save-error").text


def test_dataset_seen_page_and_fragment(client, browser: str, dataset_id: int) -> None:
    dataset_page = soup(client.get(f"/datasets/{dataset_id}"))
    assert dataset_page.select_one(f'a.seen-link[href="/datasets/{dataset_id}/seen?row=1"]')

    page = soup(client.get(f"/datasets/{dataset_id}/seen?row=0"))
    assert page.select_one("header.topbar") is not None
    (sequence,) = page.select(".seen-sequence")
    assert trained(sequence) == "Blue.<|im_end|>\n"
    assert sequence.select(".tok.eos.loss")

    cut = soup(client.get(f"/datasets/{dataset_id}/seen?row=0&max_length=4", headers=HTMX))
    assert cut.select_one("header.topbar") is None
    assert len(cut.select(".tokens .tok")) > 4
    assert cut.select(".tok.cut") and cut.select_one(".cut-mark") is not None
    assert "drops this row" in cut.get_text()


def test_job_form_shows_the_template_choice_and_what_the_model_sees(
    client, browser: str, dataset_id: int, alice: Account
) -> None:
    form = soup(client.get(f"/jobs/new?dataset_id={dataset_id}"))
    options = [o.get_text() for o in form.select("#chat-template-select option")]
    assert any(o.startswith("Alpaca") for o in options)
    assert form.select_one("#seen-panel[hx-post='/jobs/seen']") is not None

    models = client.get("/api/models", headers=alice.headers).json()
    tiny = next(m["id"] for m in models if m["name"] == "tiny-llama")
    alpaca = next(
        t["id"]
        for t in client.get("/api/chat-templates", headers=alice.headers).json()
        if t["name"] == "Alpaca"
    )
    fields = {
        "csrf_token": browser,
        "base_model": str(tiny),
        "dataset_id": str(dataset_id),
        "chat_template_id": str(alpaca),
        "assistant_only_loss": "on",
        "max_length": "64",
    }
    panel = soup(client.post("/jobs/seen", data=fields, headers=HTMX))
    text = panel.select_one(".tokens").get_text()
    assert text.startswith("### Instruction:")
    assert trained(panel) == "Blue.<|im_end|>"


def test_job_form_shows_where_packed_rows_begin(
    client, browser: str, dataset_id: int, alice: Account
) -> None:
    models = client.get("/api/models", headers=alice.headers).json()
    tiny = next(m["id"] for m in models if m["name"] == "tiny-llama")
    fields = {
        "csrf_token": browser,
        "base_model": str(tiny),
        "dataset_id": str(dataset_id),
        "assistant_only_loss": "on",
        "max_length": "512",
    }
    unpacked = soup(client.post("/jobs/seen", data=fields, headers=HTMX))
    assert unpacked.select_one("#seen-packed") is None
    panel = soup(client.post("/jobs/seen", data=fields | {"packing": "on"}, headers=HTMX))
    rows = panel.select("#seen-packed .packed-rows li")
    assert len(rows) > 1 and "0" in [li["data-row"] for li in rows]
    starts = [int(li.get_text().split("begins at token ")[1].split()[0]) for li in rows]
    tokens = [int(li.get_text().split("· ")[1].split()[0]) for li in rows]
    assert starts == [sum(tokens[:i]) for i in range(len(rows))]
    assert sum(tokens) <= 512
