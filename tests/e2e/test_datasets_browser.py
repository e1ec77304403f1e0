"""Datasets in a real browser: drag-and-drop upload with a progress bar, stats and histogram,
search, a dedup review, and a refused file's line errors.

Debian's Chromium (see conftest.py) against the live uvicorn server; no worker is needed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import Account
from tests.support.browser import log_in

pytestmark = pytest.mark.slow

ROWS = 4000
# The upload is slowed down in the browser (DevTools network emulation) so that the progress
# bar is seen moving; the file is ~1.3 MB, so ~2.5 s at this rate.
UPLOAD_BYTES_PER_SECOND = 512 * 1024
# Stats tokenize every row with the chosen model (~3 s for this file on 2 cores).
STATS_TIMEOUT_MS = 60_000

# Records every value the progress bar takes, and whether it was visible then, across the
# navigation to the dataset page (sessionStorage survives same-origin navigations).
RECORD_PROGRESS = """
new MutationObserver(function (records) {
  records.forEach(function (r) {
    if (r.target.id !== "upload-progress") return;
    const log = JSON.parse(sessionStorage.getItem("progress-log") || "[]");
    const visible = !!(r.target.offsetWidth || r.target.offsetHeight);
    log.push([Number(r.target.getAttribute("value")), visible]);
    sessionStorage.setItem("progress-log", JSON.stringify(log));
  });
}).observe(document, { subtree: true, attributes: true, attributeFilter: ["value"] });
"""

# Builds a JSONL file in the page and drops it on the drop zone, as a person dragging it would.
DROP_FILE = """([rows]) => {
  const lines = [];
  for (let i = 0; i < rows; i++) {
    lines.push(JSON.stringify({
      instruction: "Question " + i + (i === 7 ? " about zanzibar" : "") + ": "
        + "lorem ipsum ".repeat(12 + (i % 40)),
      output: "Answer " + i + " " + "dolor sit amet ".repeat(5 + (i % 25)),
    }));
  }
  const file = new File([lines.join("\\n")], "dropped.jsonl", { type: "application/json" });
  const transfer = new DataTransfer();
  transfer.items.add(file);
  return transfer;
}"""


@pytest.fixture(scope="module")
def bundled_for_stats(bundled_model_dir: Path, migrated: None) -> str:
    from app.base_models import register_model
    from app.cli import BUNDLED_MODEL
    from app.db import session_scope

    with session_scope() as session:
        register_model(session, BUNDLED_MODEL, bundled_model_dir, "bundled")
    return BUNDLED_MODEL


def test_drop_upload_with_progress_then_stats_histogram_search_and_dedup(
    page: Page, alice: Account, bundled_for_stats: str
) -> None:
    page.add_init_script(RECORD_PROGRESS)
    log_in(page, alice)
    page.goto("/datasets")
    transfer = page.evaluate_handle(DROP_FILE, [ROWS])
    page.locator("#dropzone").dispatch_event("drop", {"dataTransfer": transfer})
    expect(page.locator("#chosen-file")).to_contain_text("dropped.jsonl")
    page.locator("#upload-form input[name=name]").fill("dropped <b>data</b>")

    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {
            "offline": False,
            "latency": 0,
            "downloadThroughput": -1,
            "uploadThroughput": UPLOAD_BYTES_PER_SECOND,
        },
    )
    page.locator("#upload-button").click()
    expect(page.locator("#upload-progress")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/datasets/\d+$"), timeout=60_000)
    cdp.send(
        "Network.emulateNetworkConditions",
        {
            "offline": False,
            "latency": 0,
            "downloadThroughput": -1,
            "uploadThroughput": -1,
        },
    )

    log = json.loads(page.evaluate("sessionStorage.getItem('progress-log')") or "[]")
    values = [v for v, _ in log]
    assert values and values[-1] == 100, log
    assert all(visible for _, visible in log), log
    assert any(0 < v < 100 for v in values), f"the bar never showed partial progress: {log}"
    assert values == sorted(values), log

    expect(page.locator("h1.dataset-name")).to_have_text("dropped <b>data</b>")
    expect(page.locator(".dataset-rows")).to_have_text(str(ROWS))

    # Stats load by themselves (HTMX), with a histogram; a model choice refreshes them.
    expect(page.locator("#stats-body .stat-rows")).to_have_text(str(ROWS), timeout=STATS_TIMEOUT_MS)
    bars = page.locator("#length-histogram .bar")
    expect(bars.first).to_be_attached()
    assert bars.count() >= 5
    heights = page.locator("#length-histogram .bar span").evaluate_all(
        "spans => spans.map(s => s.getBoundingClientRect().height)"
    )
    assert max(heights) > 50, heights  # the tallest bar is drawn, not just present
    page.locator("#stats-form select[name=model]").select_option(label=bundled_for_stats)
    expect(page.locator("#stats-body .stat-tokens")).to_contain_text(
        bundled_for_stats, timeout=STATS_TIMEOUT_MS
    )
    page.locator("#stats-form input[name=max_length]").fill("64")
    page.locator("#stats-form button[type=submit]").click()
    expect(page.locator("#stats-body .stat-truncated")).to_contain_text(
        "max_length 64", timeout=STATS_TIMEOUT_MS
    )
    expect(page.locator("#length-histogram .bar.over").first).to_be_attached()

    # Search through the rows (an HTMX fragment), then page back out of it.
    page.locator("#row-search input[name=search]").fill("ZANZIBAR")
    page.locator("#row-search button[type=submit]").click()
    expect(page.locator(".row-preview")).to_have_count(1)
    expect(page.locator(".row-preview").first).to_have_attribute("data-index", "7")
    expect(page).to_have_url(re.compile(r"search=ZANZIBAR"))

    # Dedup: review (no duplicates planted in this file), then see the lineage of the result.
    page.locator("#dedup-review-button").click()
    expect(page.locator("#dedup-review .dedup-summary")).to_contain_text("0 exact")
    page.locator("#dedup-apply").click()
    expect(page.locator(".lineage .operation")).to_contain_text("dedup")
    expect(page.locator(".lineage .parent-link")).to_have_text("dropped <b>data</b>")
    assert not page.js_errors, page.js_errors


def test_a_refused_file_shows_its_line_errors(page: Page, alice: Account, tmp_path: Path) -> None:
    log_in(page, alice)
    bad = tmp_path / "broken.jsonl"
    bad.write_text(
        json.dumps({"instruction": "fine", "output": "ok"})
        + "\n{<b>not json</b>\n"
        + json.dumps({"instruction": "no answer"})
        + "\n"
    )
    page.goto("/datasets")
    # The mapping table writes the JSON the upload sends (and the JSON fills the table back).
    page.locator("#mapping-editor summary").click()
    page.locator("#mapping-formatting").select_option("alpaca")
    page.locator(".mapping-column[data-field=prompt]").fill("instruction")
    page.locator(".mapping-column[data-field=response]").fill("output")
    mapping = json.loads(page.locator("#mapping-json").input_value())
    assert mapping == {
        "formatting": "alpaca",
        "columns": {"prompt": "instruction", "response": "output"},
    }
    page.locator("#upload-file").set_input_files(str(bad))
    page.locator("#upload-button").click()
    errors = page.locator("#upload-result .refused table.errors tbody tr")
    expect(errors).to_have_count(2)
    assert errors.locator("td:first-child").all_inner_texts() == ["2", "3"]
    for text in errors.locator("td:last-child").all_inner_texts():
        assert text.strip()
    expect(page.locator("#upload-result .refused p.error")).not_to_be_empty()
    assert page.locator("#upload-result b").count() == 0
    expect(page).to_have_url(re.compile(r"/datasets$"))
    assert not page.js_errors, page.js_errors
