"""Datasets for the tests: LLaMA-Factory's real demo files, and uploads through the API.

The demo files come from the ``data/`` folder of the llamafactory source distribution on PyPI;
``make test-data`` (a step of ``make test``) fetches them once into a folder git ignores,
checked against ``llamafactory-data.sha256`` beside this file. No test reads outside the checkout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.accounts import Account

# Preference pairs whose chosen answers are also SFT rows (so SFT makes them likely), used by the
# chaining, evaluation and comparison tests.
COLOURS = ("green", "blue", "yellow", "purple", "orange", "white", "black", "pink")
PAIRS = [
    {
        "prompt": [{"role": "user", "content": f"Name something {colour}."}],
        "chosen": [{"role": "assistant", "content": f"Gladly! A {colour} flower."}],
        "rejected": [{"role": "assistant", "content": "No. No. No. No."}],
    }
    for colour in COLOURS
]
SFT_ROWS = [{"messages": pair["prompt"] + pair["chosen"]} for pair in PAIRS]

LLAMAFACTORY_DATA = Path(__file__).resolve().parents[2] / ".cache" / "llamafactory-data"
LLAMAFACTORY_SUMS = Path(__file__).with_name("llamafactory-data.sha256")
LLAMAFACTORY_FILES = tuple(
    line.split()[1] for line in LLAMAFACTORY_SUMS.read_text().splitlines() if line.strip()
)


def llamafactory_data() -> Path:
    """The folder of LLaMA-Factory demo files; fails the test with the fix if it is missing."""
    if not (LLAMAFACTORY_DATA / ".complete").exists():
        pytest.fail(
            f"LLaMA-Factory's demo datasets are missing at {LLAMAFACTORY_DATA}: "
            "run `make test-data` (make test does it)",
            pytrace=False,
        )
    return LLAMAFACTORY_DATA


def llamafactory_file(name: str) -> Path:
    return llamafactory_data() / name


def post_dataset(
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
    """Upload and expect 201; returns the dataset's JSON."""
    status, body = post_dataset(client, account, filename, content, **fields)
    assert status == 201, body
    return body


def upload_bytes(client, account: Account, filename: str, content: bytes, **fields: Any) -> int:
    """Upload a file and expect 201; returns the dataset's id."""
    return imported(client, account, filename, content, **fields)["id"]


def upload_rows(
    client, account: Account, kind: str, rows: list[dict[str, Any]], name: str = ""
) -> int:
    """Upload rows as JSONL, declaring their kind; returns the dataset's id."""
    body = imported(client, account, name or f"{kind}.jsonl", jsonl(rows), kind=kind)
    assert body["kind"] == kind, body
    return body["id"]


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


def alpaca(rows: list[tuple[str, str]]) -> bytes:
    """Alpaca JSONL from (instruction, output) pairs."""
    return jsonl([{"instruction": q, "output": a} for q, a in rows])


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


def alpaca_demo() -> Path:
    """LLaMA-Factory's alpaca_en_demo.json: 999 English Alpaca records."""
    return llamafactory_file("alpaca_en_demo.json")
