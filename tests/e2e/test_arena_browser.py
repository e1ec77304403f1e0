"""In a real browser: compare the base model with a checkpoint on three prompts, judge the pairs
blind in the arena, turn the votes into a preference dataset and launch a DPO run from it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import Account, wait_for_job
from tests.support.browser import log_in

pytestmark = [pytest.mark.slow, pytest.mark.worker]

PROMPTS = ["Name a colour.", "Name a fruit.", "Name an animal."]


@pytest.fixture(scope="module")
def trained(client, alice: Account, worker, tiny_model: str) -> dict:
    rows = [{"instruction": p, "output": "Blue."} for p in PROMPTS * 4]
    upload = client.post(
        "/api/datasets",
        headers=alice.headers,
        files={"file": ("arena-sft.json", json.dumps(rows).encode())},
    )
    body = {
        "name": "arena sft",
        "base_model": tiny_model,
        "dataset_id": upload.json()["id"],
        "hyperparameters": {"max_steps": 2, "logging_steps": 1, "max_length": 64},
    }
    job = client.post("/api/jobs", headers=alice.headers, json=body).json()
    assert wait_for_job(client, alice, job["id"])["status"] == "succeeded"
    final = client.get(f"/api/jobs/{job['id']}/checkpoints", headers=alice.headers).json()[-1]
    return {"job": job, "checkpoint_id": final["id"]}


def test_compare_vote_blind_make_a_dataset_and_train_dpo_on_it(
    page: Page, client, alice: Account, trained: dict, tiny_model: str, tmp_path: Path
) -> None:
    log_in(page, alice)
    page.goto("/comparisons")
    page.locator(f"input[name=checkpoint_ids][value='{trained['checkpoint_id']}']").check()
    expect(page.locator("input[name=include_base]")).to_be_checked()
    page.locator("#comparison-prompts").fill("\n".join(PROMPTS))
    page.locator("input[name=max_new_tokens]").fill("8")
    page.locator("#start-comparison").click()
    expect(page).to_have_url(re.compile(r"/comparisons/\d+$"))

    grid = page.locator("#comparison-grid")
    expect(grid.locator("th[data-model]")).to_have_count(2)
    expect(grid.locator("tbody tr")).to_have_count(3)
    expect(page.locator("#comparison-status")).to_have_text("succeeded", timeout=180_000)
    expect(grid.locator("td.output.status-succeeded")).to_have_count(6)

    # Three pairs (one per prompt), judged blind: the page never names the models in a pair.
    arena = page.locator("#arena")
    for _ in PROMPTS:
        pair = arena.locator(".arena-pair")
        expect(pair).to_have_count(1)
        assert "base" not in pair.inner_text().lower() and "step" not in pair.inner_text()
        voted_before = arena.locator("h2").inner_text()
        pair.locator("button.vote[data-choice='a']").click()
        expect(arena.locator("h2")).not_to_have_text(voted_before)
    expect(arena.locator(".arena-done")).to_be_visible()
    expect(arena.locator("h2")).to_contain_text("3 of 3 pairs judged")
    rates = arena.locator("table.win-rates tbody tr")
    expect(rates).to_have_count(2)
    wins = sum(int(rates.nth(i).locator("td").nth(2).inner_text()) for i in range(2))
    assert wins == 3
    page.screenshot(path=str(tmp_path / "arena.png"), full_page=True)

    # The votes become a preference dataset; a DPO run trains on it.
    arena.locator("#votes-to-dataset").click()
    expect(page).to_have_url(re.compile(r"/datasets/\d+$"))
    expect(page.locator(".dataset-rows")).to_have_text("3")
    page.get_by_role("link", name="Train on this dataset").click()
    page.locator("#method-select").select_option("dpo")
    page.locator("select[name=base_model]").select_option(label=tiny_model)
    page.locator("input[name=max_steps]").fill("2")
    page.locator("input[name=logging_steps]").fill("1")
    page.locator("input[name=max_length]").fill("64")
    page.locator("#job-form button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/jobs/\d+$"))
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=240_000)
    assert page.js_errors == [], page.js_errors


def test_playground_chats_with_a_checkpoint_and_survives_a_reload(
    page: Page, alice: Account, trained: dict
) -> None:
    log_in(page, alice)
    page.goto(f"/playground?model=checkpoint:{trained['checkpoint_id']}")
    expect(page.locator("#playground-model")).to_have_value(
        f"checkpoint:{trained['checkpoint_id']}"
    )
    page.locator("input[name=max_new_tokens]").fill("6")
    for turn, text in enumerate(("Name a colour.", "Another one?"), start=1):
        page.locator("#playground-input").fill(text)
        page.locator("#playground-send").click()
        answers = page.locator("#chat li.msg-assistant")
        expect(answers).to_have_count(turn)
        expect(answers.nth(turn - 1)).to_have_attribute("data-status", "succeeded", timeout=120_000)
        expect(page.locator("#playground-send")).to_be_enabled()
    page.reload()
    expect(page.locator("#chat li")).to_have_count(4)
    expect(page.locator("#chat li.msg-user").nth(1)).to_contain_text("Another one?")
    assert page.js_errors == [], page.js_errors
