"""The job form in a real browser (Debian's Chromium): choosing an adapter shows its knobs only,
and the estimate panel follows the form through HTMX."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.conftest import Account

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def page(live_server: str) -> Iterator[Page]:
    if not CHROMIUM.exists():
        pytest.fail(f"Debian's Chromium is missing at {CHROMIUM}: run `make chromium` first")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        context = browser.new_context(base_url=live_server)
        context.set_default_timeout(15_000)
        page = context.new_page()
        page.js_errors = []
        page.on("pageerror", lambda exc: page.js_errors.append(str(exc)))
        try:
            yield page
        finally:
            browser.close()


@pytest.fixture(scope="module")
def dataset_name(client, alice: Account) -> str:
    rows = "\n".join(json.dumps({"instruction": "q" * 20, "output": "a" * 20}) for _ in range(8))
    upload = client.post(
        "/api/datasets",
        headers=alice.headers,
        data={"name": "form-browser"},
        files={"file": ("form.jsonl", rows.encode())},
    )
    assert upload.status_code == 201, upload.text
    return "form-browser"


def test_adapter_choice_shows_its_knobs_and_the_estimate_follows(
    page: Page, alice: Account, tiny_model: str, dataset_name: str
) -> None:
    page.goto("/login")
    page.locator("input[name=token]").fill(alice.token)
    page.locator("form button[type=submit]").first.click()
    page.goto("/jobs/new")
    form = page.locator("#job-form")
    form.locator("select[name=base_model]").select_option(label=tiny_model)
    form.locator("select[name=dataset_id]").select_option(label=f"{dataset_name} (sft, 8 rows)")

    lora_r, tokens = (
        form.locator("input[name=lora_r]"),
        form.locator("input[name=num_virtual_tokens]"),
    )
    expect(lora_r).to_be_visible()
    expect(tokens).to_be_hidden()

    adapter = form.locator("select[name=adapter]")
    adapter.select_option("prompt")
    expect(tokens).to_be_visible()
    expect(lora_r).to_be_hidden()
    expect(lora_r).to_be_disabled()
    tokens.fill("10")
    tokens.dispatch_event("change")
    # 10 virtual tokens x hidden size 64 of the tiny model.
    expect(page.locator("#estimate-trainable")).to_contain_text("640 of")

    adapter.select_option("qlora")
    four_bit = form.locator("select[name=bnb_4bit_quant_type]")
    expect(four_bit).to_be_visible()
    form.locator("select[name=quantization_bits]").select_option("8")
    expect(four_bit).to_be_hidden()
    expect(page.locator("#estimate-memory")).to_contain_text("int8")

    adapter.select_option("full")
    expect(page.locator("fieldset[data-group=adapter]")).to_be_hidden()
    expect(page.locator("#estimate-trainable")).to_contain_text("(100 %)")
    assert page.js_errors == []
    if shots := os.environ.get("FTSTUDIO_SCREENSHOTS"):
        adapter.select_option("lora")
        expect(page.locator("#estimate-trainable")).not_to_contain_text("(100 %)")
        page.screenshot(path=str(Path(shots) / "job-form.png"), full_page=True)
