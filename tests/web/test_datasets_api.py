"""Dataset import through the API: the demo file, refusals with line numbers, limits."""

from __future__ import annotations

import json

from app.settings import get_settings
from tests.conftest import Account
from tests.support.datasets import alpaca_demo


def _upload(client, account: Account, filename: str, content: bytes, **data: str):
    return client.post(
        "/api/datasets", headers=account.headers, files={"file": (filename, content)}, data=data
    )


def test_alpaca_demo_imports_999_rows_in_messages_form(client, alice: Account) -> None:
    demo = alpaca_demo()
    response = _upload(client, alice, demo.name, demo.read_bytes(), name="demo")
    assert response.status_code == 201
    body = response.json()
    volatile = {"id": 0, "created_at": "", "detection": "", "content_hash": "", "operation": None}
    assert body | volatile == {
        "id": 0,
        "name": "demo",
        "kind": "sft",
        "format": "alpaca",
        "num_rows": 999,
        "status": "ready",
        "created_at": "",
        "detection": "",
        "content_hash": "",
        "operation": None,
        "parent_id": None,
        "skipped": 0,
        "skipped_errors": [],
    }
    assert body["detection"].startswith("Alpaca: the first record has 'instruction'")
    assert len(body["content_hash"]) == 64
    rows = client.get(
        f"/api/datasets/{body['id']}/rows?offset=998&limit=5", headers=alice.headers
    ).json()
    assert rows["total"] == 999 and len(rows["rows"]) == 1
    source = json.loads(demo.read_text())[998]
    messages = rows["rows"][0]["messages"]
    assert messages[-1] == {"role": "assistant", "content": source["output"]}
    assert messages[-2]["role"] == "user" and source["instruction"] in messages[-2]["content"]


def test_alpaca_system_history_and_input_become_turns(client, alice: Account) -> None:
    record = {
        "system": "Be brief.",
        "history": [["Hi", "Hello!"]],
        "instruction": "Translate",
        "input": "chat",
        "output": "cat",
    }
    response = _upload(client, alice, "one.jsonl", json.dumps(record).encode())
    rows = client.get(f"/api/datasets/{response.json()['id']}/rows", headers=alice.headers).json()
    assert rows["rows"][0]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Translate\n\nchat"},
        {"role": "assistant", "content": "cat"},
    ]


def test_a_bad_file_is_refused_with_line_numbers_and_nothing_stored(client, alice: Account) -> None:
    before = len(client.get("/api/datasets", headers=alice.headers).json())
    content = (
        b'[\n  {"instruction": "a", "output": "b"},\n'
        b'  {"instruction": "c", "output": ""},\n  {"foo": 1}\n]'
    )
    response = _upload(client, alice, "bad.json", content)
    assert response.status_code == 422
    body = response.json()
    assert body["errors"] == [
        {
            "line": 3,
            "field": "output",
            "message": "field 'output' is empty: nothing for the assistant to learn",
        },
        {
            "line": 4,
            "field": "instruction",
            "message": "missing field 'instruction', 'output' (Alpaca layout)",
        },
    ]
    assert "nothing was stored" in body["detail"]
    assert len(client.get("/api/datasets", headers=alice.headers).json()) == before


def test_broken_json_names_its_line(client, alice: Account) -> None:
    response = _upload(
        client, alice, "broken.jsonl", b'{"instruction": "a", "output": "b"}\n{"instruction": \n'
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["line"] == 2


def test_unsupported_type_and_kind_are_refused(client, alice: Account) -> None:
    assert _upload(client, alice, "x.xml", b"<a/>").status_code == 422
    assert (
        _upload(
            client, alice, "x.jsonl", b'{"instruction": "a", "output": "b"}', kind="dpo"
        ).status_code
        == 422
    )


def test_an_upload_over_the_limit_is_413(client, alice: Account, monkeypatch) -> None:
    limit = get_settings().max_upload_bytes
    headers = {
        **alice.headers,
        "Content-Length": str(limit + 1),
        "Content-Type": "multipart/form-data; boundary=x",
    }
    response = client.post("/api/datasets", headers=headers, content=b"--x--")
    assert response.status_code == 413


def test_rows_paging_is_bounded(client, alice: Account) -> None:
    dataset_id = client.get("/api/datasets", headers=alice.headers).json()[-1]["id"]
    assert (
        client.get(
            f"/api/datasets/{dataset_id}/rows?limit=100000", headers=alice.headers
        ).status_code
        == 422
    )
