"""Every 422 of the API has one shape: ``{"detail": ..., "errors": [...]}`` where each error has
a ``message`` and says where: ``loc`` (a path into the request) or ``line`` (of an upload).
Field validation keeps the ``loc``/``msg``/``type`` it always had (and its list under
``detail``); every other refusal has a sentence as ``detail``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.db import session_scope
from app.jobs import create_job
from app.models import Checkpoint, JobStatus, User
from tests.conftest import Account


def assert_one_shape(response) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    body = response.json()
    assert set(body) == {"detail", "errors"}, body
    errors = body["errors"]
    assert isinstance(errors, list) and errors, body
    for error in errors:
        assert isinstance(error["message"], str) and error["message"], error
        has_loc = isinstance(error.get("loc"), list)
        has_line = isinstance(error.get("line"), int)
        assert has_loc or has_line, error
    if isinstance(body["detail"], str):
        assert body["detail"]
    else:  # field validation: the list the API always returned, with msg beside message
        assert body["detail"] == errors
        assert all({"loc", "msg", "type"} <= set(e) for e in errors), errors
        assert all(e["message"] == e["msg"] for e in errors)
    return body


@pytest.fixture(scope="module")
def dataset_id(client, alice: Account, tiny_model: str) -> int:
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(6)]
    content = "\n".join(json.dumps(r) for r in rows).encode()
    upload = client.post(
        "/api/datasets", headers=alice.headers, files={"file": ("shape.jsonl", content)}
    )
    assert upload.status_code == 201, upload.text
    return upload.json()["id"]


@pytest.fixture(scope="module")
def checkpoint_id(alice: Account, dataset_id: int) -> int:
    """A final checkpoint row of a succeeded job (no training runs here)."""
    with session_scope() as session:
        owner = session.get(User, alice.user_id)
        job = create_job(session, owner, base_model="tiny-llama", dataset_id=dataset_id)
        job.status = JobStatus.succeeded
        checkpoint = Checkpoint(job_id=job.id, step=1, is_final=True, path=f"{job.id}/final")
        session.add(checkpoint)
        session.flush()
        return checkpoint.id


def test_an_upload_with_a_bad_line(client, alice: Account) -> None:
    content = b'{"instruction": "q", "output": "a"}\n{"instruction": \n'
    response = client.post(
        "/api/datasets", headers=alice.headers, files={"file": ("bad.jsonl", content)}
    )
    body = assert_one_shape(response)
    assert body["errors"][0]["line"] == 2 and isinstance(body["detail"], str)


def test_an_upload_refused_as_a_whole(client, alice: Account) -> None:
    response = client.post(
        "/api/datasets",
        headers=alice.headers,
        files={"file": ("x.jsonl", b"{}")},
        data={"format": "no-such-format"},
    )
    assert_one_shape(response)


@pytest.mark.parametrize(
    ("op", "body"),
    [
        ("dedup", {"threshold": 1.5}),  # request validation
        ("split", {"eval_ratio": 0.5, "by_column": "x"}),  # request validation (model check)
        ("split", {"by_column": "no_such_column", "eval_values": ["x"]}),  # refused by the op
        ("filter", {"min_chars": 100_000}),  # keeps no row
        ("contamination", {"against": "not a number"}),
    ],
)
def test_dataset_operations(client, alice: Account, dataset_id: int, op: str, body) -> None:
    response = client.post(f"/api/datasets/{dataset_id}/{op}", headers=alice.headers, json=body)
    assert_one_shape(response)


def test_dataset_queries(client, alice: Account, dataset_id: int) -> None:
    rows = client.get(f"/api/datasets/{dataset_id}/rows?limit=0", headers=alice.headers)
    assert_one_shape(rows)
    stats = client.get(f"/api/datasets/{dataset_id}/stats?model=nope", headers=alice.headers)
    assert_one_shape(stats)


@pytest.mark.parametrize("route", ["/api/jobs", "/api/jobs/estimate"])
def test_job_requests(client, alice: Account, tiny_model: str, dataset_id: int, route) -> None:
    bad = {"base_model": tiny_model, "dataset_id": dataset_id, "hyperparameters": {"lr": 1}}
    body = assert_one_shape(client.post(route, headers=alice.headers, json=bad))
    assert ["hyperparameters", "lr"] in [e["loc"] for e in body["errors"]]
    too_high = {**bad, "hyperparameters": {"learning_rate": 5}}
    body = assert_one_shape(client.post(route, headers=alice.headers, json=too_high))
    assert ["hyperparameters", "learning_rate"] in [e["loc"] for e in body["errors"]]
    untyped = client.post(route, headers=alice.headers, json={"dataset_id": "many"})
    assert_one_shape(untyped)


def test_job_filters(client, alice: Account) -> None:
    assert_one_shape(client.get("/api/jobs?status=sleeping", headers=alice.headers))
    assert_one_shape(client.get("/api/runs/compare?ids=a,b", headers=alice.headers))


def test_exports(client, alice: Account, checkpoint_id: int) -> None:
    url = f"/api/checkpoints/{checkpoint_id}/exports"
    assert_one_shape(client.post(url, headers=alice.headers, json={"kind": "zip"}))
    gguf = {"kind": "gguf", "quantization": "q2_k"}
    assert_one_shape(client.post(url, headers=alice.headers, json=gguf))


def test_evaluations(client, alice: Account, checkpoint_id: int, dataset_id: int) -> None:
    missing = client.post("/api/evaluations", headers=alice.headers, json={})
    assert_one_shape(missing)
    unknown = {"checkpoint_id": checkpoint_id, "dataset_id": 999_999}
    assert_one_shape(client.post("/api/evaluations", headers=alice.headers, json=unknown))


def test_comparisons_and_playground(client, alice: Account, checkpoint_id: int) -> None:
    no_prompts = {"checkpoint_ids": [checkpoint_id]}
    assert_one_shape(client.post("/api/comparisons", headers=alice.headers, json=no_prompts))
    too_hot = {"prompts": ["hi"], "temperature": 50}
    assert_one_shape(client.post("/api/comparisons", headers=alice.headers, json=too_hot))
    chat = {"model": "nonsense", "messages": [{"role": "user", "content": "hi"}]}
    assert_one_shape(client.post("/api/playground", headers=alice.headers, json=chat))
    assert_one_shape(
        client.post("/api/playground", headers=alice.headers, json={"model": "base:1"})
    )


def test_chat_templates(client, alice: Account) -> None:
    broken = {"name": "broken", "template": "{% for m in messages %}"}
    assert_one_shape(client.post("/api/chat-templates", headers=alice.headers, json=broken))
    render = {"template": "{{ nope(", "messages": [{"role": "user", "content": "hi"}]}
    assert_one_shape(client.post("/api/chat-templates/render", headers=alice.headers, json=render))
    assert_one_shape(client.post("/api/chat-templates", headers=alice.headers, json={}))


def test_models(client, alice: Account, tmp_path) -> None:
    not_a_model = {"name": "empty", "path": str(tmp_path)}
    assert_one_shape(client.post("/api/models", headers=alice.headers, json=not_a_model))
    assert_one_shape(client.post("/api/models", headers=alice.headers, json={"name": ""}))
