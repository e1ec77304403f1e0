"""In a real browser: "Next stage" on a finished SFT run opens the job form pre-filled to start
a DPO run from its final checkpoint, which trains and shows its lineage; "Resume" on a
cancelled run queues it again and it finishes from its last checkpoint."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import Account
from tests.support.browser import log_in
from tests.support.chaining import (
    LONG_ROWS,
    RESUMABLE_MAX_STEPS,
    TIMEOUT,
    cancelled_after_a_checkpoint,
    sft_run,
)
from tests.support.datasets import PAIRS, SFT_ROWS, upload_rows
from tests.support.jobs import checkpoints

pytestmark = [pytest.mark.slow, pytest.mark.worker]


@pytest.fixture(scope="module")
def runs(client, alice: Account, worker, tiny_model: str) -> dict:
    preference = upload_rows(client, alice, "preference", PAIRS)
    sft = sft_run(client, alice, tiny_model, upload_rows(client, alice, "sft", SFT_ROWS))
    long_rows = upload_rows(client, alice, "sft", LONG_ROWS, "long.jsonl")
    cancelled = cancelled_after_a_checkpoint(client, alice, tiny_model, long_rows)
    return {"preference": preference, "sft": sft, "cancelled": cancelled}


def test_next_stage_launches_dpo_and_resume_finishes_a_cancelled_run(
    page: Page, client, alice: Account, runs: dict, tiny_model: str, tmp_path: Path
) -> None:
    log_in(page, alice)
    sft_id = runs["sft"]["id"]
    final = next(c for c in checkpoints(client, alice, sft_id) if c["is_final"])

    # The finished SFT run offers the next stage, DPO first.
    page.goto(f"/jobs/{sft_id}")
    next_stage = page.locator("#next-stage")
    expect(next_stage.locator("select[name=method]")).to_have_value("dpo")
    page.locator("#next-stage-button").click()
    expect(page).to_have_url(re.compile(rf"/jobs/new\?parent_checkpoint_id={final['id']}"))

    # The form starts from the SFT checkpoint, with DPO and the preference dataset chosen.
    form = page.locator("#job-form")
    expect(form.locator("#job-parent")).to_contain_text(runs["sft"]["name"])
    expect(form.locator("input[name=parent_checkpoint_id]")).to_have_value(str(final["id"]))
    expect(form.locator("select[name=method]")).to_have_value("dpo")
    expect(form.locator("select[name=dataset_id]")).to_have_value(str(runs["preference"]))
    expect(form.locator("select[name=base_model] option:checked")).to_have_text(tiny_model)
    expect(form.locator("input[name=beta]")).to_be_visible()
    fields = {
        "max_steps": 4,
        "logging_steps": 1,
        "per_device_train_batch_size": 8,
        "max_length": 64,
    }
    for name, value in fields.items():
        form.locator(f"input[name={name}]").fill(str(value))
    expect(page.locator("#estimate-trainable")).to_be_visible()  # the request validates
    form.locator("button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/jobs/\d+$"))
    dpo_id = int(page.url.rsplit("/", 1)[1])
    lineage = page.locator("#job-lineage li.lineage-parent")
    expect(lineage).to_have_count(1)
    expect(lineage).to_have_attribute("data-job-id", str(sft_id))
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=TIMEOUT * 1000)
    dpo = client.get(f"/api/jobs/{dpo_id}", headers=alice.headers).json()
    assert (dpo["method"], dpo["parent_checkpoint_id"]) == ("dpo", final["id"])
    page.screenshot(path=str(tmp_path / "dpo.png"), full_page=True)
    page.goto(f"/jobs/{sft_id}")
    expect(page.locator(f"#job-children a[data-job-id='{dpo_id}']")).to_have_count(1)

    # The cancelled run offers Resume from its last checkpoint; it then runs to the end.
    cancelled_id = runs["cancelled"]["id"]
    page.goto(f"/jobs/{cancelled_id}")
    expect(page.locator("#job-status")).to_have_text("cancelled")
    resume = page.locator("#resume-job")
    expect(resume).to_contain_text("Resume from step")
    resume.click()
    expect(page).to_have_url(re.compile(rf"/jobs/{cancelled_id}$"))
    expect(page.locator("#job-status")).not_to_have_text("cancelled")
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=TIMEOUT * 1000)
    expect(page.locator("#job-resumed")).to_be_visible()
    expect(page.locator("#job-step")).to_have_text(
        f"step {RESUMABLE_MAX_STEPS} of {RESUMABLE_MAX_STEPS}"
    )
    metrics = client.get(f"/api/jobs/{cancelled_id}/metrics", headers=alice.headers).json()
    steps = [m["step"] for m in metrics if m.get("loss") is not None]
    assert steps == list(range(1, RESUMABLE_MAX_STEPS + 1))
    page.screenshot(path=str(tmp_path / "resumed.png"), full_page=True)
    assert page.js_errors == [], page.js_errors
