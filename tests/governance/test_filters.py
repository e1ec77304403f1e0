"""Filters by length (characters or tokens), by KTO label and by search text."""

from __future__ import annotations

from tests.conftest import Account
from tests.governance.conftest import MakeDataset, sft, words_tokens


def _filter(client, account: Account, dataset_id: int, **body):
    return client.post(f"/api/datasets/{dataset_id}/filter", headers=account.headers, json=body)


def _rows(client, account: Account, dataset_id: int) -> list[dict]:
    body = client.get(f"/api/datasets/{dataset_id}/rows?limit=500", headers=account.headers)
    return body.json()["rows"]


def test_filter_by_characters(client, alice: Account, make_dataset: MakeDataset) -> None:
    rows = [sft("q", "a" * n) for n in (1, 10, 50, 100, 200)]
    dataset_id = make_dataset(alice, rows)
    response = _filter(client, alice, dataset_id, min_chars=20, max_chars=150)
    assert response.status_code == 201
    version = response.json()["dataset"]
    # "q" + newline + the answer: the row's text.
    assert _rows(client, alice, version["id"]) == [rows[2], rows[3]]
    assert version["operation"] == {
        "op": "filter",
        "params": {"min_chars": 20, "max_chars": 150},
        "rows_in": 5,
        "rows_out": 2,
    }


def test_filter_by_tokens_counts_with_the_model_and_its_template(
    client, alice: Account, make_dataset: MakeDataset, words_model: str
) -> None:
    rows = [sft("one two", " ".join(["w"] * n)) for n in (1, 5, 9, 20)]
    dataset_id = make_dataset(alice, rows)
    lengths = [words_tokens(r["messages"]) for r in rows]
    assert lengths == [7, 11, 15, 26]
    response = _filter(client, alice, dataset_id, max_tokens=15, model=words_model)
    assert response.status_code == 201
    assert _rows(client, alice, response.json()["dataset"]["id"]) == rows[:3]
    response = _filter(client, alice, dataset_id, min_tokens=11, max_tokens=20, model=words_model)
    assert _rows(client, alice, response.json()["dataset"]["id"]) == rows[1:3]
    assert response.json()["dataset"]["operation"]["params"]["model"] == words_model


def test_filter_by_kto_label(client, alice: Account, make_dataset: MakeDataset) -> None:
    rows = [{**sft(f"q{i}", f"a{i}"), "label": i % 2 == 0} for i in range(6)]
    dataset_id = make_dataset(alice, rows, kind="kto")
    response = _filter(client, alice, dataset_id, label=False)
    assert _rows(client, alice, response.json()["dataset"]["id"]) == rows[1::2]
    sft_id = make_dataset(alice, [sft("a", "b")])
    assert _filter(client, alice, sft_id, label=True).status_code == 422


def test_filter_by_search_text(client, alice: Account, make_dataset: MakeDataset) -> None:
    rows = [sft("Tell me about Paris", "It is in France"), sft("北京是首都", "是的"), sft("x", "y")]
    dataset_id = make_dataset(alice, rows)
    keep = _filter(client, alice, dataset_id, search="PARIS")
    assert _rows(client, alice, keep.json()["dataset"]["id"]) == [rows[0]]
    chinese = _filter(client, alice, dataset_id, search="首都")
    assert _rows(client, alice, chinese.json()["dataset"]["id"]) == [rows[1]]
    drop = _filter(client, alice, dataset_id, search="paris", exclude_search=True)
    assert _rows(client, alice, drop.json()["dataset"]["id"]) == rows[1:]


def test_refused_filters(client, alice: Account, make_dataset: MakeDataset) -> None:
    dataset_id = make_dataset(alice, [sft("q", "a")])
    assert _filter(client, alice, dataset_id).status_code == 422  # no filter at all
    nothing_left = _filter(client, alice, dataset_id, search="absent")
    assert nothing_left.status_code == 422
    assert "keeps none" in nothing_left.json()["detail"]
    no_model = _filter(client, alice, dataset_id, max_tokens=3, model="no-such-model")
    assert no_model.status_code == 422
