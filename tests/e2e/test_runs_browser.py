"""In a real browser: two runs overlaid on one comparison chart, and a job page whose log tail
shows the training process's output as it streams in."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import Account
from tests.support.browser import log_in
from tests.support.runs import TwoRuns, submit_run, two_trained_runs

pytestmark = [pytest.mark.slow, pytest.mark.worker]


@pytest.fixture(scope="module")
def two_runs(client, alice: Account, worker, tiny_model: str) -> TwoRuns:
    return two_trained_runs(client, alice, tiny_model)


def test_compare_two_runs_and_watch_the_log_tail(
    page: Page, client, alice: Account, two_runs: TwoRuns, tmp_path: Path
) -> None:
    log_in(page, alice)
    run_a, run_b = two_runs.ids

    # Pick both runs in the runs list and compare them.
    page.goto("/jobs?status=succeeded")
    for job_id in (run_a, run_b):
        page.locator(f"tr.job-row[data-job-id='{job_id}'] input.compare-pick").check()
    page.locator("#compare-selected").click()
    expect(page).to_have_url(re.compile(r"/runs/compare\?"))
    chart = page.locator("#compare-chart")
    expect(chart).to_have_attribute("data-series", "2")
    expect(chart).to_have_attribute("data-curve", "loss")
    expect(chart.locator("canvas")).to_have_count(1)
    legend = chart.locator(".u-legend .u-series")
    expect(legend).to_have_count(3)  # the x axis and one line per run
    labels = " ".join(legend.all_inner_texts())
    assert f"#{run_a} " in labels and f"#{run_b} " in labels, labels
    page.locator("#compare-axis").select_option("num_tokens")
    expect(chart).to_have_attribute("data-axis", "num_tokens")
    expect(chart).to_have_attribute("data-series", "2")
    expect(page.locator("tr.diff-row[data-name='learning_rate']")).to_have_count(1)
    page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)

    # A new run's page, opened before its process writes anything, streams the log in.
    job = submit_run(client, alice, two_runs.model, two_runs.dataset_id, max_steps=10)
    page.goto(f"/jobs/{job['id']}")
    log = page.locator("#job-log")
    expect(log).to_contain_text("'loss'", timeout=180_000)
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=120_000)
    # A reload shows the same output from the stored log.
    text_before = log.inner_text()
    page.reload()
    expect(page.locator("#job-log")).to_contain_text("'loss'")
    assert "'loss'" in text_before
    expect(page.locator("#loss-chart")).to_have_attribute("data-points", "10")
    expect(page.locator("#job-timeline li")).to_have_count(3)
    page.screenshot(path=str(tmp_path / "job.png"), full_page=True)
    assert page.js_errors == [], page.js_errors
