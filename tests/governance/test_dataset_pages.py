"""The dataset page and its fragments, parsed with CSS selectors, in a browser session."""

from __future__ import annotations

import hashlib
import random

from tests.conftest import Account
from tests.governance.conftest import MakeDataset, random_text, sft
from tests.support.html import soup

HX = {"HX-Request": "true"}


def test_stats_fragment_shows_numbers_and_a_histogram(
    client, alice_browser: str, alice: Account, make_dataset: MakeDataset, words_model: str
) -> None:
    rng = random.Random(2)
    rows = [sft(random_text(rng, rng.randint(1, 60)), random_text(rng, 20)) for _ in range(50)]
    rows.append({**rows[0]})
    dataset_id = make_dataset(alice, rows, name="stats-page")
    page = soup(client.get(f"/datasets/{dataset_id}"))
    option = next(
        o
        for o in page.select("#stats-form select[name=model] option")
        if o.get_text() == words_model
    )
    model_id = option["value"]
    fragment = soup(
        client.get(
            f"/datasets/{dataset_id}/stats",
            params={"model": model_id, "max_length": "40"},
            headers=HX,
        )
    )
    assert fragment.select_one("header.topbar") is None
    assert fragment.select_one(".stat-rows").get_text() == "51"
    assert fragment.select_one(".stat-duplicates")["data-count"] == "1"
    assert words_model in fragment.select_one(".stat-tokens").get_text()
    api = client.get(
        f"/api/datasets/{dataset_id}/stats", params={"model": model_id, "max_length": 40}
    ).json()
    assert fragment.select_one(".stat-truncated")["data-count"] == str(api["tokens"]["truncated"])
    bars = fragment.select("#length-histogram .bar")
    assert [int(b["data-count"]) for b in bars] == api["tokens"]["histogram"]["counts"]
    assert sum(int(b["data-count"]) for b in bars) == 51
    over = [b for b in bars if "over" in b["class"]]
    assert over and all(int(b["data-high"]) > 40 for b in over)
    assert fragment.select_one(".stat-scripts li[data-script=Latin]") is not None

    # Without HTMX the same URL is the whole page, with the stats in place.
    full = soup(client.get(f"/datasets/{dataset_id}/stats", params={"max_length": "40"}))
    assert full.select_one("header.topbar") is not None
    assert full.select_one("#stats-body .stat-rows").get_text() == "51"


def test_page_lazy_loads_stats_until_they_are_cached(
    client, alice_browser: str, alice: Account, make_dataset: MakeDataset
) -> None:
    dataset_id = make_dataset(alice, [sft("a", "b")])
    page = soup(client.get(f"/datasets/{dataset_id}"))
    loader = page.select_one("#stats-loading")
    assert loader["hx-get"] == f"/datasets/{dataset_id}/stats" and loader["hx-trigger"] == "load"
    client.get(f"/datasets/{dataset_id}/stats", headers=HX)  # computes and caches the defaults
    page = soup(client.get(f"/datasets/{dataset_id}"))
    assert page.select_one("#stats-loading") is None
    assert page.select_one("#stats-body .stat-rows").get_text() == "1"


def test_search_and_paging_through_rows_escape_user_text(
    client, alice_browser: str, alice: Account, make_dataset: MakeDataset
) -> None:
    rows = [sft(f"question {i}", f"answer {i}") for i in range(60)]
    rows += [sft(f"<script>alert({i})</script> needle", "<b>bold</b>") for i in range(25)]
    dataset_id = make_dataset(alice, rows)
    fragment = soup(client.get(f"/datasets/{dataset_id}", params={"search": "NEEDLE"}, headers=HX))
    assert fragment.select_one("header.topbar") is None
    previews = fragment.select(".row-preview")
    assert [p["data-index"] for p in previews] == [str(i) for i in range(60, 80)]
    assert previews[0].select_one(".msg-user pre").get_text() == "<script>alert(0)</script> needle"
    assert not fragment.select(".row-preview script") and not fragment.select(".row-preview b")
    assert "25" in fragment.select_one(".rows-summary").get_text()
    next_link = fragment.select_one(".pager a.next")
    assert next_link["hx-get"] == f"/datasets/{dataset_id}?page=2&search=NEEDLE"
    second = soup(client.get(next_link["hx-get"], headers=HX))
    assert [p["data-index"] for p in second.select(".row-preview")] == [
        str(i) for i in range(80, 85)
    ]
    hostile = soup(client.get(f"/datasets/{dataset_id}", params={"search": '"><i>x</i>'}))
    assert hostile.select_one(".rows-summary i") is None
    assert hostile.select_one("#row-search input[name=search]")["value"] == '"><i>x</i>'
    assert hostile.select_one(".no-rows") is not None


def test_each_kind_is_shown_with_its_parts(
    client, alice_browser: str, alice: Account, make_dataset: MakeDataset
) -> None:
    pref = {
        "prompt": [{"role": "user", "content": "Pick"}],
        "chosen": [{"role": "assistant", "content": "good"}],
        "rejected": [{"role": "assistant", "content": "bad"}],
    }
    page = soup(client.get(f"/datasets/{make_dataset(alice, [pref], kind='preference')}"))
    assert [h.get_text() for h in page.select(".row-preview .row-section")] == [
        "Prompt",
        "Chosen",
        "Rejected",
    ]
    kto = {**sft("q", "a"), "label": False}
    page = soup(client.get(f"/datasets/{make_dataset(alice, [kto], kind='kto')}"))
    assert page.select_one(".row-preview .row-label.label-false") is not None
    assert page.select_one("#filter-form select[name=label]") is not None
    page = soup(client.get(f"/datasets/{make_dataset(alice, [{'text': 'raw <i>'}], kind='text')}"))
    assert page.select_one(".row-preview pre.row-text").get_text() == "raw <i>"


def test_split_from_the_page_opens_the_train_version_with_its_lineage(
    client, alice_browser: str, alice: Account, make_dataset: MakeDataset
) -> None:
    dataset_id = make_dataset(alice, [sft(f"q{i}", f"a{i}") for i in range(10)], name="<src>")
    form = {
        "csrf_token": alice_browser,
        "mode": "random",
        "eval_ratio": "0.3",
        "seed": "3",
        "by_column": "",
    }
    response = client.post(f"/datasets/{dataset_id}/split", data=form, follow_redirects=False)
    assert response.status_code == 303
    page = soup(client.get(response.headers["location"]))
    assert page.select_one(".dataset-rows").get_text() == "7"
    assert page.select_one(".lineage .parent-link")["href"] == f"/datasets/{dataset_id}"
    assert page.select_one(".lineage .parent-link").get_text() == "<src>"
    assert "split (train part)" in page.select_one(".lineage .operation").get_text()
    parent = soup(client.get(f"/datasets/{dataset_id}"))
    assert len(parent.select(".lineage .children li")) == 2

    bad = client.post(
        f"/datasets/{dataset_id}/split", data={**form, "eval_ratio": "2"}, follow_redirects=False
    )
    assert bad.status_code == 422
    assert "eval_ratio" in soup(bad).select_one("#action-error").get_text()
    by_column = {**form, "mode": "column", "by_column": "label", "eval_values": "true"}
    refused = client.post(f"/datasets/{dataset_id}/split", data=by_column)
    assert refused.status_code == 422  # no row has a label: the eval part would be empty


def test_dedup_review_fragment_and_apply(
    client, alice_browser: str, alice: Account, make_dataset: MakeDataset
) -> None:
    rng = random.Random(9)
    base = random_text(rng, 40)
    rows = [sft("q", base), sft("q", base.replace(base.split()[20], "<em>x</em>")), sft("q", base)]
    rows += [sft(random_text(rng, 5), random_text(rng, 30)) for _ in range(5)]
    dataset_id = make_dataset(alice, rows)
    form = {"csrf_token": alice_browser, "near": "true", "threshold": "0.7", "shingle": "3"}
    review = soup(client.post(f"/datasets/{dataset_id}/dedup/review", data=form, headers=HX))
    assert review.select_one(".dedup-report")["data-exact"] == "1"
    pairs = review.select(".near-pairs tr.near-pair")
    assert [(p["data-kept"], p["data-duplicate"]) for p in pairs] == [("0", "1")]
    assert "<em>x</em>" in pairs[0].select("pre")[1].get_text()
    assert not review.select(".near-pairs em")
    assert [td.get_text() for td in review.select(".exact-duplicates td")] == ["#2", "#0"]

    applied = client.post(f"/datasets/{dataset_id}/dedup", data=form, follow_redirects=False)
    assert applied.status_code == 303
    version = soup(client.get(applied.headers["location"]))
    assert version.select_one(".dataset-rows").get_text() == "6"
    assert "dedup" in version.select_one(".lineage .operation").get_text()


def test_contamination_check_fragment_and_filter_from_the_page(
    client, alice_browser: str, alice: Account, make_dataset: MakeDataset
) -> None:
    leak = "one two three four five six seven eight nine ten eleven twelve thirteen <b>x</b>"
    train_id = make_dataset(alice, [sft("q", "before " + leak), sft("q", "clean row")])
    eval_id = make_dataset(alice, [sft("q", leak)], name="held-out")
    page = soup(client.get(f"/datasets/{train_id}"))
    assert str(eval_id) in [o["value"] for o in page.select("#contamination-form option")]
    form = {"csrf_token": alice_browser, "against": str(eval_id), "n": "13", "min_n": "5"}
    result = soup(client.post(f"/datasets/{train_id}/contamination/check", data=form, headers=HX))
    pairs = result.select(".flagged-pairs tr.flagged-pair")
    assert [(p["data-train"], p["data-eval"]) for p in pairs] == [("0", "0")]
    assert pairs[0].select_one("mark.overlap").get_text() == leak[:-1]  # up to the last word
    assert not result.select(".flagged-pairs b")
    applied = client.post(f"/datasets/{train_id}/contamination", data=form, follow_redirects=False)
    assert applied.status_code == 303
    version = soup(client.get(applied.headers["location"]))
    assert version.select_one(".dataset-rows").get_text() == "1"

    filtered = client.post(
        f"/datasets/{train_id}/filter",
        data={"csrf_token": alice_browser, "search": "clean", "model": "", "label": ""},
        follow_redirects=False,
    )
    assert filtered.status_code == 303
    version = soup(client.get(filtered.headers["location"]))
    assert version.select_one(".row-preview .msg-assistant pre").get_text() == "clean row"


def test_export_streams_the_canonical_rows(
    client, alice: Account, make_dataset: MakeDataset
) -> None:
    rows = [sft("你好", "hi"), {**sft("b", "c"), "label": True}]
    dataset_id = make_dataset(alice, rows)
    response = client.get(f"/api/datasets/{dataset_id}/export", headers=alice.headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert "attachment" in response.headers["content-disposition"]
    assert "你好" in response.text.splitlines()[0]
    versions = client.get(f"/api/datasets/{dataset_id}/versions", headers=alice.headers).json()
    assert hashlib.sha256(response.content).hexdigest() == versions["dataset"]["content_hash"]


def test_upload_page_has_the_upload_controls(client, alice_browser: str) -> None:
    form = soup(client.get("/datasets")).select_one("#upload-form")
    assert form["data-api"] == "/api/datasets"
    names = {f["name"] for f in form.select("[name]")}
    assert {"file", "name", "kind", "format", "encoding", "skip_invalid", "mapping"} <= names
    assert [o["value"] for o in form.select("select[name=kind] option")] == [
        "",
        "sft",
        "preference",
        "kto",
        "text",
        "prompt",
    ]
    assert len(form.select("#mapping-table input.mapping-column")) >= 8
    assert form.select_one("#upload-progress") is not None
