"""In a real browser: the Workers page shows the session's worker busy with the run it trains
(a link to the run for its owner), its devices, and the worker idle again once the run ends."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import Account
from tests.support.browser import log_in
from tests.support.jobs import wait_for_job
from tests.support.runs import submit_run, upload_counting

pytestmark = [pytest.mark.slow, pytest.mark.worker]


def test_the_workers_page_shows_the_busy_worker_and_its_run(
    page: Page, client, alice: Account, worker, tiny_model: str
) -> None:
    log_in(page, alice)
    dataset_id = upload_counting(client, alice, "workers-page.jsonl")
    job_id = submit_run(client, alice, tiny_model, dataset_id, max_steps=400)["id"]
    link = page.locator(f"tr.worker-row .worker-job a[href='/jobs/{job_id}']")
    for _ in range(60):  # the page is a snapshot: reload until the worker has taken the run
        page.goto("/workers")
        if link.count():
            break
        page.wait_for_timeout(2_000)
    expect(link).to_have_count(1)
    row = page.locator("tr.worker-row", has=page.locator(f".worker-job a[href='/jobs/{job_id}']"))
    expect(row).to_have_attribute("data-state", "busy")
    expect(row.locator("li.device")).not_to_have_count(0)
    expect(row.locator(".device-class")).not_to_be_empty()
    expect(page.locator("nav a[href='/workers']")).to_be_visible()

    response = client.post(f"/api/jobs/{job_id}/cancel", headers=alice.headers)
    assert response.status_code in (200, 202), response.text
    assert wait_for_job(client, alice, job_id)["status"] == "cancelled"
    page.goto("/workers")
    expect(link).to_have_count(0)
    assert not page.js_errors
