"""In a real browser: a loss spike's alarm arrives live on an open job page (a marker under the
loss chart and an entry with its advice and rows on the timeline), and a reload shows it again."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import Account
from tests.support.browser import log_in
from tests.support.datasets import upload_bytes
from tests.support.health import spike_job, spike_rows
from tests.support.jobs import submit_job

pytestmark = [pytest.mark.slow, pytest.mark.worker]


def test_a_spike_alarm_appears_live_on_the_job_page(
    page: Page, client, alice: Account, worker, tiny_model: str, tmp_path: Path
) -> None:
    log_in(page, alice)
    dataset_id = upload_bytes(client, alice, "ok.jsonl", spike_rows())
    job_id = submit_job(client, alice, **spike_job(tiny_model, dataset_id))["id"]
    page.goto(f"/jobs/{job_id}")
    # The markers list sits outside the summary that HTMX refreshes: only the live stream adds
    # to it while the page stays open.
    marker = page.locator('#chart-markers li[data-event="loss_spike"]').first
    expect(marker).to_be_visible(timeout=240_000)
    alarm = page.locator('#job-timeline li.timeline-event[data-event="loss_spike"]').first
    expect(alarm.locator(".event-advice")).to_contain_text("warmup")
    expect(alarm.locator("a.event-row")).to_have_count(2)
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=120_000)
    step = marker.get_attribute("data-step")
    page.reload()
    expect(
        page.locator(f'#chart-markers li[data-event="loss_spike"][data-step="{step}"]')
    ).to_have_count(1)
    page.screenshot(path=str(tmp_path / "job-alarm.png"), full_page=True)
    assert page.js_errors == [], page.js_errors
