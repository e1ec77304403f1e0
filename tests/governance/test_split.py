"""Train/eval splits: exact sizes, order kept, seeds reproduce; or by a column's value."""

from __future__ import annotations

import pytest

from app.data.versions import content_hash
from tests.conftest import Account
from tests.governance.conftest import MakeDataset, sft


def _rows(client, account: Account, dataset_id: int) -> list[dict]:
    body = client.get(f"/api/datasets/{dataset_id}/rows?limit=500", headers=account.headers)
    return body.json()["rows"]


def _split(client, account: Account, dataset_id: int, **body) -> dict:
    response = client.post(f"/api/datasets/{dataset_id}/split", headers=account.headers, json=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_random_split_sizes_order_and_lineage(
    client, alice: Account, make_dataset: MakeDataset
) -> None:
    rows = [sft(f"question {i}", f"answer {i}") for i in range(101)]
    dataset_id = make_dataset(alice, rows, name="to-split")
    result = _split(client, alice, dataset_id, eval_ratio=0.2, seed=7)
    train, held = result["train"], result["eval"]
    assert (train["num_rows"], held["num_rows"]) == (81, 20)
    train_rows, eval_rows = _rows(client, alice, train["id"]), _rows(client, alice, held["id"])
    # A partition of the source, each part in the source's order.
    assert sorted(rows.index(r) for r in train_rows + eval_rows) == list(range(101))
    assert [rows.index(r) for r in train_rows] == sorted(rows.index(r) for r in train_rows)
    assert [rows.index(r) for r in eval_rows] == sorted(rows.index(r) for r in eval_rows)
    for part, name in ((train, "train"), (held, "eval")):
        assert part["parent_id"] == dataset_id
        assert part["operation"]["op"] == "split" and part["operation"]["part"] == name
        assert part["operation"]["params"] == {"eval_ratio": 0.2, "seed": 7}
    assert train["content_hash"] == content_hash(train_rows)
    assert held["content_hash"] == content_hash(eval_rows)
    versions = client.get(f"/api/datasets/{dataset_id}/versions", headers=alice.headers).json()
    assert [c["id"] for c in versions["children"]] == [train["id"], held["id"]]
    lineage = client.get(f"/api/datasets/{held['id']}/versions", headers=alice.headers).json()
    assert [a["id"] for a in lineage["ancestors"]] == [dataset_id]


def test_seeds_reproduce(client, alice: Account, make_dataset: MakeDataset) -> None:
    dataset_id = make_dataset(alice, [sft(f"q{i}", f"a{i}") for i in range(200)])
    first = _split(client, alice, dataset_id, eval_ratio=0.1, seed=1)
    again = _split(client, alice, dataset_id, eval_ratio=0.1, seed=1)
    other = _split(client, alice, dataset_id, eval_ratio=0.1, seed=2)
    assert first["eval"]["content_hash"] == again["eval"]["content_hash"]
    assert first["train"]["content_hash"] == again["train"]["content_hash"]
    assert _rows(client, alice, first["eval"]["id"]) == _rows(client, alice, again["eval"]["id"])
    assert first["eval"]["content_hash"] != other["eval"]["content_hash"]
    assert other["eval"]["num_rows"] == 20


def test_split_by_a_column_value(client, alice: Account, make_dataset: MakeDataset) -> None:
    rows = [
        {**sft(f"q{i}", f"a{i}"), "label": i % 3 == 0}
        for i in range(30)  # kto rows: label true for every third
    ]
    dataset_id = make_dataset(alice, rows, kind="kto")
    result = _split(client, alice, dataset_id, by_column="label", eval_values=[True])
    assert result["eval"]["num_rows"] == 10 and result["train"]["num_rows"] == 20
    assert all(r["label"] is True for r in _rows(client, alice, result["eval"]["id"]))
    # Form fields arrive as text: "true" matches the boolean true.
    as_text = _split(client, alice, dataset_id, by_column="label", eval_values=["true"])
    assert as_text["eval"]["content_hash"] == result["eval"]["content_hash"]


@pytest.mark.parametrize(
    "body",
    [
        {"eval_ratio": 0},
        {"eval_ratio": 1},
        {},
        {"eval_ratio": 0.1, "by_column": "label", "eval_values": [True]},
        {"by_column": "label"},
        {"by_column": "nothing-has-it", "eval_values": ["x"]},
    ],
)
def test_bad_splits_are_refused_and_store_nothing(
    client, alice: Account, make_dataset: MakeDataset, body: dict
) -> None:
    dataset_id = make_dataset(alice, [{**sft(f"q{i}", "a"), "label": True} for i in range(5)])
    count = len(client.get("/api/datasets", headers=alice.headers).json())
    response = client.post(f"/api/datasets/{dataset_id}/split", headers=alice.headers, json=body)
    assert response.status_code == 422
    assert len(client.get("/api/datasets", headers=alice.headers).json()) == count
