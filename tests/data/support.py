"""Helpers for the dataset import tests: upload through the API, read rows back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import Account

SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "llamafactory"


def upload(
    client, account: Account, filename: str, content: bytes, **fields: Any
) -> tuple[int, dict[str, Any]]:
    """POST /api/datasets; returns (status, body). ``mapping`` may be a dict."""
    data = {
        key: json.dumps(value) if key == "mapping" and not isinstance(value, str) else str(value)
        for key, value in fields.items()
    }
    response = client.post(
        "/api/datasets",
        headers=account.headers,
        files={"file": (filename, content)},
        data=data,
    )
    return response.status_code, response.json()


def imported(client, account: Account, filename: str, content: bytes, **fields: Any) -> dict:
    status, body = upload(client, account, filename, content, **fields)
    assert status == 201, body
    return body


def all_rows(client, account: Account, dataset_id: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    while True:
        page = client.get(
            f"/api/datasets/{dataset_id}/rows?offset={len(rows)}&limit=500",
            headers=account.headers,
        ).json()
        rows += page["rows"]
        if len(rows) >= page["total"]:
            return rows


def jsonl(records: list[Any]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def count_records(path: Path) -> int:
    """Records in a .json array or .jsonl file, counted independently of the studio."""
    if path.suffix == ".jsonl":
        return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return len(json.loads(path.read_text(encoding="utf-8")))


def load_records(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".jsonl":
        lines = path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    return json.loads(path.read_text(encoding="utf-8"))
