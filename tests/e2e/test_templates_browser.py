"""The template editor in a real browser: typing a change re-renders the preview (HTMX) and the
highlighted loss tokens follow; saving keeps a new version."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import Account
from tests.support.browser import log_in

pytestmark = pytest.mark.slow

ONLY_LAST = (
    "{% for m in messages %}{% if m.role == 'assistant' and loop.last %}A: {% generation %}"
    "{{ m.content }}{{ eos_token }}{% endgeneration %}{% elif m.role == 'assistant' %}"
    "A: {{ m.content }} {% else %}Q: {{ m.content }} {% endif %}{% endfor %}"
)


def _trained(page: Page) -> str:
    return "".join(page.locator("#seen .tokens .tok.loss").all_inner_texts()).replace("↵", "")


def test_editing_a_template_changes_the_preview_and_its_loss_tokens(
    page: Page, client, alice: Account, tiny_model: str
) -> None:
    rows = [
        {
            "messages": [
                {"role": "user", "content": "Hello"},
                {"role": "assistant", "content": "Hi there"},
                {"role": "user", "content": "Bye"},
                {"role": "assistant", "content": "Goodbye"},
            ]
        }
    ]
    upload = client.post(
        "/api/datasets",
        headers=alice.headers,
        files={"file": ("chat.jsonl", "\n".join(json.dumps(r) for r in rows).encode())},
    )
    dataset_id = upload.json()["id"]
    log_in(page, alice)
    page.goto("/chat-templates/new")
    page.locator("input[name=name]").fill("browser template")
    page.select_option("select[name=model]", label="tiny-llama")
    page.select_option("select[name=dataset_id]", value=str(dataset_id))
    # The preview starts on the reference conversation; wait for the chosen row to replace it.
    expect(page.locator("#seen .tokens")).to_contain_text("Hi there")
    expect(page.locator("#seen .seen-sequence")).to_have_count(1)
    # The ChatML starting point trains both assistant turns.
    expect(page.locator("#seen .tokens")).to_contain_text("<|im_start|>user")
    assert "Hi there<|im_end|>" in _trained(page) and "Goodbye<|im_end|>" in _trained(page)

    page.locator("#template-source").fill(ONLY_LAST)
    expect(page.locator("#seen .tokens")).to_contain_text("Q: Hello")
    expect(page.locator("#seen .tokens")).not_to_contain_text("<|im_start|>")
    trained = _trained(page)
    assert "Goodbye<|im_end|>" in trained and "Hi there" not in trained
    expect(page.locator("#seen")).not_to_contain_text("will not learn to stop")

    page.locator("#template-source").fill(ONLY_LAST.replace("{{ eos_token }}", ""))
    expect(page.locator("#seen .template-warnings")).to_contain_text("will not learn to stop")
    assert "<|im_end|>" not in _trained(page)

    page.locator("#save-template").click()
    expect(page.locator("h1")).to_contain_text("browser template")
    expect(page.locator("h1")).to_contain_text("v1")
    assert page.locator("#template-source").input_value() == ONLY_LAST.replace(
        "{{ eos_token }}", ""
    )
    assert not page.js_errors
