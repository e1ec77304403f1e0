"""The whole studio in a real browser: log in, upload, train with a live chart, export, download.

Debian's Chromium (see conftest.py) against the live uvicorn server and a real Celery worker.
"""

from __future__ import annotations

import io
import itertools
import re
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.conftest import Account
from tests.support.browser import log_in
from tests.support.datasets import alpaca_demo

pytestmark = [pytest.mark.slow, pytest.mark.worker]

# Measured on a 2-core machine: the job shows `running` ~8-9 s before its first point (the
# training process imports torch/transformers/TRL), then logs ~3-4 steps/s, so 40 steps give
# ~11 s of live points to watch and to reload during.
MAX_STEPS, LOGGING_STEPS, SAVE_STEPS = 40, 1, 20
POLL_SECONDS = 0.1
JOB_TIMEOUT = 300.0
EXPORT_TIMEOUT = 300.0

CHART_STATE = """() => {
  const chart = document.getElementById("loss-chart");
  const status = document.getElementById("job-status");
  return {
    points: chart && chart.dataset.points !== undefined ? Number(chart.dataset.points) : null,
    status: status ? status.textContent.trim() : null,
  };
}"""
FINAL = re.compile(r"^\s*final model\s*$")


class ChartWatch:
    """Samples the chart's point count and the shown status; remembers what it saw."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.samples: list[tuple[float, int | None, str | None]] = []
        self.started = time.monotonic()

    def sample(self) -> tuple[int | None, str | None]:
        state = self.page.evaluate(CHART_STATE)
        self.samples.append((time.monotonic() - self.started, state["points"], state["status"]))
        return state["points"], state["status"]

    def live_increases(self, since: int = 0) -> int:
        """How often the count grew between two samples that both showed `running`."""
        return sum(
            1
            for (_, p0, s0), (_, p1, s1) in itertools.pairwise(self.samples[since:])
            if s0 == s1 == "running" and p0 is not None and p1 is not None and p1 > p0
        )

    def assert_never_shrinks(self, since: int = 0) -> None:
        points = [p for _, p, _ in self.samples[since:] if p is not None]
        assert points == sorted(points), f"the chart lost points: {points}"

    def summary(self) -> str:
        def at(t: float | None) -> str:
            return "never" if t is None else f"{t:.1f}s"

        running = [t for t, _, s in self.samples if s == "running"]
        first_point = next((t for t, p, s in self.samples if p and s == "running"), None)
        return (
            f"{len(self.samples)} samples over {time.monotonic() - self.started:.1f}s; "
            f"running from {at(running[0] if running else None)} "
            f"to {at(running[-1] if running else None)}, first point at {at(first_point)}"
        )


def _upload_demo(page: Page) -> int:
    page.goto("/datasets")
    page.locator("#upload-form input[type=file]").set_input_files(str(alpaca_demo()))
    page.locator("#upload-form button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/datasets/\d+$"))
    expect(page.locator(".dataset-rows")).to_have_text("999")
    previews = page.locator(".row-preview")
    expect(previews.first).to_be_visible()
    expect(previews).to_have_count(20)
    expect(previews.first.locator(".msg-user pre")).not_to_be_empty()
    return int(page.url.rsplit("/", 1)[1])


def _start_job(page: Page, dataset_id: int, tiny_model: str) -> int:
    page.get_by_role("link", name="Train on this dataset").click()
    form = page.locator("#job-form")
    expect(form).to_be_visible()
    expect(form.locator("select[name=dataset_id]")).to_have_value(str(dataset_id))
    form.locator("select[name=base_model]").select_option(label=tiny_model)
    fields = {
        "max_steps": MAX_STEPS,
        "logging_steps": LOGGING_STEPS,
        "save_steps": SAVE_STEPS,
        "per_device_train_batch_size": 2,
        "max_length": 128,
    }
    for name, value in fields.items():
        form.locator(f"input[name={name}]").fill(str(value))
    form.locator("button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/jobs/\d+$"))
    expect(page.locator("#loss-chart")).to_be_attached()
    return int(page.url.rsplit("/", 1)[1])


def _wait_until(
    page: Page,
    watch: ChartWatch,
    done: Callable[[int | None, str | None], bool],
    deadline: float,
    what: str,
) -> None:
    while True:
        points, status = watch.sample()
        if done(points, status):
            return
        if status in ("failed", "cancelled"):
            error = page.locator("#job-error")
            detail = error.inner_text() if error.count() else ""
            pytest.fail(f"the job ended {status} while waiting for {what}: {detail}")
        if time.monotonic() > deadline:
            last = watch.samples[-1]
            pytest.fail(f"timed out waiting for {what}; {watch.summary()}; last sample {last}")
        page.wait_for_timeout(POLL_SECONDS * 1000)


def _final_checkpoint(page: Page) -> Locator:
    return page.locator("tr.checkpoint").filter(
        has=page.locator(".checkpoint-kind", has_text=FINAL)
    )


def test_train_watch_export_and_download_in_the_browser(
    page: Page, alice: Account, worker: Path, tiny_model: str, tmp_path: Path
) -> None:
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login(\?|$)"))
    log_in(page, alice)
    dataset_id = _upload_demo(page)
    job_id = _start_job(page, dataset_id, tiny_model)
    deadline = time.monotonic() + JOB_TIMEOUT

    # 1. The chart gains points while the job runs, pushed over server-sent events.
    watch = ChartWatch(page)

    def grew_live(points: int | None, status: str | None) -> bool:
        return status == "succeeded" or (watch.live_increases() >= 3 and (points or 0) >= 5)

    _wait_until(page, watch, grew_live, deadline, "the chart to grow while running")
    assert watch.live_increases() >= 1, (
        f"the chart never grew while the job was running (too short a run?); {watch.summary()}"
    )
    watch.assert_never_shrinks()

    # 2. A reload keeps what was drawn (stored history) and, while running, keeps appending.
    _, before_reload, status_before = watch.samples[-1]
    page.reload()
    expect(page.locator("#loss-chart")).to_have_attribute("data-points", re.compile(r"^\d+$"))
    after_reload = len(watch.samples)
    first_after, _ = watch.sample()
    assert first_after is not None and first_after >= before_reload, (before_reload, first_after)
    page.screenshot(path=str(tmp_path / "job-running.png"), full_page=True)

    def succeeded(_points: int | None, status: str | None) -> bool:
        return status == "succeeded"

    _wait_until(page, watch, succeeded, deadline, "the job to succeed")
    watch.assert_never_shrinks(after_reload)
    (tmp_path / "chart-samples.txt").write_text(
        "".join(f"{t:.2f} {p} {s}\n" for t, p, s in watch.samples)
    )
    if status_before == "running" and first_after < MAX_STEPS // LOGGING_STEPS:
        assert watch.live_increases(after_reload) >= 1, (
            f"no live points after the reload; {watch.summary()}"
        )

    # Every logged loss is on the chart exactly once: history + live points, no gaps, no doubles.
    metrics = page.request.get(f"/api/jobs/{job_id}/metrics").json()
    assert [m["step"] for m in metrics] == list(range(LOGGING_STEPS, MAX_STEPS + 1, LOGGING_STEPS))
    with_loss = [m for m in metrics if m["loss"] is not None]
    expect(page.locator("#loss-chart")).to_have_attribute("data-points", str(len(with_loss)))
    print(
        f"\nlive chart: {watch.summary()}; {watch.live_increases()} live increases; "
        f"reloaded at {before_reload} points ({status_before})"
    )

    # 3. Export the final checkpoint as a merged model, wait for its link, download it.
    page.reload()
    final = _final_checkpoint(page)
    expect(final).to_have_count(1)
    expect(final.locator("td").first).to_have_text(str(MAX_STEPS))
    final.locator("button.export-merged").click()  # a form post that redirects back here
    expect(final.locator(".export-status, a.download")).to_have_count(1)
    expect(page).to_have_url(re.compile(rf"/jobs/{job_id}$"))
    download = final.locator("a.download")
    export_deadline = time.monotonic() + EXPORT_TIMEOUT
    while not download.count():
        if final.locator(".export-status", has_text="failed").count():
            pytest.fail(f"the export failed: {final.inner_text()}")
        assert time.monotonic() < export_deadline, f"no export yet: {final.inner_text()}"
        page.wait_for_timeout(1000)
        page.reload()
    expect(download).to_have_count(1)
    page.screenshot(path=str(tmp_path / "job.png"), full_page=True)

    response = page.request.get(download.get_attribute("href"), timeout=120_000)
    assert response.status == 200, response.text()[:500]
    with tarfile.open(fileobj=io.BytesIO(response.body())) as tar:
        names = tar.getnames()
        weights = [n for n in names if Path(n).name == "model.safetensors"]
        assert weights, names
        assert tar.getmember(weights[0]).size > 0
        tar.extractall(tmp_path / "export", filter="data")
    model_dir = (tmp_path / "export" / weights[0]).parent
    assert (model_dir / "tokenizer_config.json").exists(), names

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    assert tokenizer.chat_template, "the exported tokenizer lost its chat template"
    job = page.request.get(f"/api/jobs/{job_id}").json()
    assert tokenizer.chat_template == job["chat_template"]

    assert page.js_errors == [], page.js_errors
