"""Contamination: planted overlaps between a training and an eval set are flagged with the
overlapping text; nothing else is."""

from __future__ import annotations

import random

from tests.conftest import Account
from tests.governance.conftest import MakeDataset, random_text, sft

STRETCH = (
    "The Quick brown fox jumps over the lazy dog while seven wise owls "
    "count the silver stars above the quiet harbour tonight"
)  # 22 words
SHORT_EVAL = "What is the boiling point of water"  # 7 words: shorter than n = 13


def _sets(alice: Account, make_dataset: MakeDataset) -> tuple[int, int, list[dict]]:
    rng = random.Random(11)
    eval_rows = [sft(random_text(rng, 20), random_text(rng, 30)) for _ in range(6)]
    eval_rows[2] = sft("Summarise: " + STRETCH.lower() + ".", random_text(rng, 20))
    eval_rows[4] = sft(SHORT_EVAL + "?", "100 degrees Celsius.")
    train = [sft(random_text(rng, 15), random_text(rng, 60)) for _ in range(40)]
    train[7] = sft(random_text(rng, 10), random_text(rng, 5) + " " + STRETCH + ", " + "end")
    train[30] = sft("Quiz: " + SHORT_EVAL.upper() + "? Answer briefly.", "100 C")
    # Shares 12 consecutive words with eval row 2: one short of an n-gram, so not flagged.
    train[12] = sft("x", " ".join(STRETCH.split()[:12]) + " " + random_text(rng, 10))
    # Shares 5 words with the short eval row, not all 7: not flagged.
    train[20] = sft("what is the boiling point", "of oil")
    train_id = make_dataset(alice, train, name="train")
    eval_id = make_dataset(alice, eval_rows, name="eval")
    return train_id, eval_id, train


def _check(client, account: Account, train_id: int, **body):
    return client.post(
        f"/api/datasets/{train_id}/contamination", headers=account.headers, json=body
    )


def test_planted_overlaps_are_flagged_with_their_text(
    client, alice: Account, make_dataset: MakeDataset
) -> None:
    train_id, eval_id, _ = _sets(alice, make_dataset)
    response = _check(client, alice, train_id, against=eval_id)
    assert response.status_code == 200
    report = response.json()["report"]
    assert response.json()["dataset"] is None
    pairs = {(p["train_index"], p["eval_index"]): p for p in report["pairs"]}
    assert set(pairs) == {(7, 2), (30, 4)}
    # The longest overlapping stretch, quoted from the training text as written.
    assert pairs[(7, 2)]["overlap"] == STRETCH
    assert pairs[(7, 2)]["shared_ngrams"] == 22 - 13 + 1
    assert pairs[(30, 4)]["overlap"] == SHORT_EVAL.upper()
    assert "boiling point" in pairs[(30, 4)]["eval_text"]
    assert report["flagged_train_rows"] == 2 and report["flagged_eval_rows"] == 2
    assert report["train_rows"] == 40 and report["eval_rows"] == 6


def test_n_is_adjustable(client, alice: Account, make_dataset: MakeDataset) -> None:
    train_id, eval_id, _ = _sets(alice, make_dataset)
    longer = _check(client, alice, train_id, against=eval_id, n=25).json()["report"]
    # No 25-word overlap exists; the 7-word eval text still counts as a whole.
    assert {(p["train_index"], p["eval_index"]) for p in longer["pairs"]} == {(30, 4)}
    shorter = _check(client, alice, train_id, against=eval_id, n=12).json()["report"]
    assert {(p["train_index"], p["eval_index"]) for p in shorter["pairs"]} == {
        (7, 2),
        (12, 2),
        (30, 4),
    }


def test_removing_flagged_rows_makes_a_version(
    client, alice: Account, make_dataset: MakeDataset
) -> None:
    train_id, eval_id, train = _sets(alice, make_dataset)
    response = _check(client, alice, train_id, against=eval_id, apply=True)
    assert response.status_code == 201
    version = response.json()["dataset"]
    assert version["parent_id"] == train_id and version["num_rows"] == 38
    assert version["operation"]["op"] == "decontaminate"
    assert version["operation"]["params"] == {"against": eval_id, "n": 13, "min_n": 5}
    rows = client.get(f"/api/datasets/{version['id']}/rows?limit=100", headers=alice.headers)
    assert rows.json()["rows"] == [r for i, r in enumerate(train) if i not in (7, 30)]


def test_against_itself_is_refused(client, alice: Account, make_dataset: MakeDataset) -> None:
    train_id = make_dataset(alice, [sft("a", "b")])
    assert _check(client, alice, train_id, against=train_id).status_code == 422
