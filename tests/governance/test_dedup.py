"""Dedup: planted exact and near duplicates are found, unrelated rows are not; a version is
written only when asked, with its parent, operation and content hash."""

from __future__ import annotations

import random

import numpy as np
import pytest

from app.data.governance import DedupOptions, apply_dedup, find_duplicates
from app.data.minhash import MinHasher, jaccard, lsh_params, shingle_hashes, shingles
from app.data.rowtext import words
from app.data.versions import content_hash, iter_rows
from app.db import session_scope
from app.models import Dataset
from tests.conftest import Account
from tests.governance.conftest import MakeDataset, random_text, sft


def _planted() -> tuple[list[dict], dict[int, int], dict[int, int]]:
    """60 unrelated rows plus planted exact (dup -> original) and near (dup -> original) rows."""
    rng = random.Random(7)
    rows = [sft(random_text(rng, 12), random_text(rng, 50)) for _ in range(60)]
    exact: dict[int, int] = {}
    near: dict[int, int] = {}
    for original in (3, 17, 42):
        m = rows[original]["messages"]
        # Same text up to case and whitespace: an exact duplicate once normalised.
        rows.append(sft("  " + m[0]["content"].upper(), m[1]["content"].replace(" ", "  ")))
        exact[len(rows) - 1] = original
    for original in (5, 23, 51):
        m = rows[original]["messages"]
        answer = m[1]["content"].split()
        answer[25] = "changed"  # one word of 62 differs
        rows.append(sft(m[0]["content"], " ".join(answer)))
        near[len(rows) - 1] = original
    rows += [sft(random_text(rng, 12), random_text(rng, 50)) for _ in range(10)]
    return rows, exact, near


def test_minhash_estimates_jaccard_and_lsh_fits_the_signature() -> None:
    rng = random.Random(1)
    base = random_text(rng, 200).split()
    other = base[:150] + random_text(rng, 50).split()
    a, b = shingle_hashes(base), shingle_hashes(other)
    assert len(a) == len(shingles(base)) == 198  # distinct 3-grams, no hash collisions
    hasher = MinHasher(256)
    estimate = float(np.mean(hasher.signature(a) == hasher.signature(b)))
    assert abs(estimate - jaccard(shingles(base), shingles(other))) < 0.1
    assert (hasher.signature(a) == MinHasher(256).signature(a)).all()  # seeded: reproducible
    params = lsh_params(0.8, 128)
    assert params.bands * params.rows <= 128 and params.bands > 1


def test_planted_exact_and_near_duplicates_are_found_and_nothing_else(
    alice: Account, make_dataset: MakeDataset
) -> None:
    rows, exact, near = _planted()
    dataset_id = make_dataset(alice, rows, name="planted")
    with session_scope() as session:
        dataset = session.get(Dataset, dataset_id)
        report = find_duplicates(session, dataset, DedupOptions(near=True, threshold=0.8))
        assert report.exact == exact
        assert {p.duplicate: p.kept for p in report.near} == near
        assert all(0.8 <= p.similarity < 1 for p in report.near)

        exact_only = find_duplicates(session, dataset, DedupOptions(near=False))
        assert exact_only.exact == exact and exact_only.near == []


def test_the_threshold_is_adjustable(alice: Account, make_dataset: MakeDataset) -> None:
    rng = random.Random(3)
    text = random_text(rng, 40).split()
    half_changed = text[:24] + random_text(rng, 16).split()
    similarity = jaccard(shingles(words(" ".join(text))), shingles(words(" ".join(half_changed))))
    assert 0.4 < similarity < 0.7
    rows = [sft("q", " ".join(text)), sft("q", " ".join(half_changed)), sft("x", "y z")]
    dataset_id = make_dataset(alice, rows)
    with session_scope() as session:
        dataset = session.get(Dataset, dataset_id)
        loose = find_duplicates(session, dataset, DedupOptions(near=True, threshold=0.35))
        strict = find_duplicates(session, dataset, DedupOptions(near=True, threshold=0.9))
    assert [(p.kept, p.duplicate) for p in loose.near] == [(0, 1)]
    assert strict.near == []


def test_applying_writes_a_new_version_without_the_duplicates(
    alice: Account, make_dataset: MakeDataset
) -> None:
    rows, exact, near = _planted()
    dataset_id = make_dataset(alice, rows, name="planted")
    with session_scope() as session:
        dataset = session.get(Dataset, dataset_id)
        options = DedupOptions(near=True)
        version = apply_dedup(session, dataset, options, find_duplicates(session, dataset, options))
        kept = [row for _, row in iter_rows(session, version.id)]
        expected = [r for i, r in enumerate(rows) if i not in exact and i not in near]
        assert kept == expected
        assert version.parent_id == dataset.id and version.owner_id == dataset.owner_id
        assert version.kind == dataset.kind and version.num_rows == len(expected)
        assert version.content_hash == content_hash(expected)
        assert version.operation["op"] == "dedup"
        assert version.operation["params"]["near"] is True
        assert version.operation["exact_duplicates"] == 3
        assert version.operation["near_duplicates"] == 3
        assert version.operation["rows_out"] == len(expected)
        assert [r for _, r in iter_rows(session, dataset.id)] == rows  # the source is untouched


def test_api_review_only_then_apply(client, alice: Account, make_dataset: MakeDataset) -> None:
    rows, exact, near = _planted()
    dataset_id = make_dataset(alice, rows, name="api-dedup")
    count = len(client.get("/api/datasets", headers=alice.headers).json())
    review = client.post(
        f"/api/datasets/{dataset_id}/dedup",
        headers=alice.headers,
        json={"near": True, "threshold": 0.8, "apply": False},
    )
    assert review.status_code == 200
    body = review.json()
    assert body["dataset"] is None
    assert len(client.get("/api/datasets", headers=alice.headers).json()) == count
    assert {p["duplicate"]: p["kept"] for p in body["report"]["near_pairs"]} == near
    assert {e["duplicate"]: e["of"] for e in body["report"]["exact"]} == exact
    pair = body["report"]["near_pairs"][0]
    assert "changed" in pair["duplicate_text"] and "changed" not in pair["kept_text"]

    applied = client.post(
        f"/api/datasets/{dataset_id}/dedup", headers=alice.headers, json={"near": True}
    )
    assert applied.status_code == 201
    version = applied.json()["dataset"]
    assert version["parent_id"] == dataset_id and version["num_rows"] == len(rows) - 6
    assert version["operation"]["op"] == "dedup"


@pytest.mark.parametrize("body", [{"threshold": 0}, {"threshold": 1.5}, {"num_perm": 4}])
def test_bad_dedup_parameters_are_422(
    client, alice: Account, make_dataset: MakeDataset, body: dict
) -> None:
    dataset_id = make_dataset(alice, [sft("a", "b")])
    response = client.post(f"/api/datasets/{dataset_id}/dedup", headers=alice.headers, json=body)
    assert response.status_code == 422
