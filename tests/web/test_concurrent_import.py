"""One user's gzip bomb does not hold the studio for the others (issue 14), against the real
server on whichever database the suite runs on (SQLite embedded, Postgres in test-services).

While Alice's bomb is being imported (valid rows, committed batch by batch until its inflate
ratio is refused), Bob lists, reads and uploads datasets: every one of his requests succeeds
before her import ends (once, the whole import held SQLite's write lock and his writes failed
with "database is locked" after 30 s). Her import is refused with 413, the server's memory
stays bounded, and nothing of hers is left: no dataset (not even a hidden one), no rows, no
temporary file.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from pathlib import Path

import httpx
import psutil

from tests.conftest import RUN_DIR, make_account
from tests.support.processes import running_web

MIB = 1024 * 1024
INFLATE_CHECK_FROM = 40 * MIB  # the ratio limit applies past this much content
BOB_ROUNDS = 6


def _bomb() -> bytes:
    """Valid SFT rows, about 150 bytes each, compressing about 1000:1: refused by the inflate
    ratio limit after some 160,000 rows have been written."""
    line = json.dumps({"instruction": "tell me " + "why " * 25, "output": "because"}) + "\n"
    chunk = (line * (MIB // len(line))).encode()
    return gzip.compress(chunk, compresslevel=9) * 64


def _rows(n: int, upload: int) -> bytes:
    rows = (json.dumps({"text": f"bob's row {i} of upload {upload}"}) + "\n" for i in range(n))
    return "".join(rows).encode()


def _counts(owner_id: int) -> tuple[int, int]:
    """(datasets, rows) of one owner, hidden imports included."""
    from sqlalchemy import func, select

    from app.db import session_scope
    from app.models import Dataset, DatasetRow

    with session_scope() as session:
        datasets = session.scalar(select(func.count()).where(Dataset.owner_id == owner_id))
        rows = session.scalar(
            select(func.count())
            .select_from(DatasetRow)
            .join(Dataset, DatasetRow.dataset_id == Dataset.id)
            .where(Dataset.owner_id == owner_id)
        )
    return datasets, rows


def _web_process() -> psutil.Process:
    children = psutil.Process().children(recursive=True)
    return next(p for p in children if "web" in p.cmdline())


def _upload(http: httpx.Client, headers: dict, name: str, content: bytes) -> httpx.Response:
    files = {"file": (name, content, "application/octet-stream")}
    return http.post("/api/datasets", headers=headers, files=files, timeout=120)


def test_a_gzip_bomb_import_does_not_hold_the_studio_for_other_users(monkeypatch) -> None:
    monkeypatch.setenv("FTSTUDIO_INFLATE_RATIO_MIN_BYTES", str(INFLATE_CHECK_FROM))
    alice = make_account("bomber")
    bob = make_account("bystander")
    bomb = _bomb()
    assert len(bomb) < MIB // 2
    uploads = Path(RUN_DIR / "data" / "uploads")
    uploads_before = set(uploads.glob("*")) if uploads.exists() else set()

    with running_web(RUN_DIR / "bomb-web.log") as url, httpx.Client(base_url=url) as http:
        server = _web_process()
        rss_before = server.memory_info().rss
        result: dict[str, httpx.Response] = {}
        importing = threading.Thread(
            target=lambda: result.update(bomb=_upload(http, alice.headers, "bomb.jsonl.gz", bomb))
        )
        importing.start()
        # Bob waits until the bomb's rows are being written (its hidden dataset exists).
        deadline = time.monotonic() + 60
        while _counts(alice.user_id)[1] == 0:
            assert importing.is_alive() and time.monotonic() < deadline, result
            time.sleep(0.05)

        peak_rss = rss_before
        bob_ids = []
        for round_ in range(BOB_ROUNDS):
            listed = http.get("/api/datasets", headers=bob.headers, timeout=30)
            assert listed.status_code == 200, listed.text
            assert all(d["name"] != "bomb" for d in listed.json())  # hidden while importing
            stored = _upload(http, bob.headers, f"bob-{round_}.jsonl", _rows(50, round_))
            assert stored.status_code == 201, stored.text
            bob_ids.append(stored.json()["id"])
            rows = http.get(f"/api/datasets/{bob_ids[-1]}/rows", headers=bob.headers, timeout=30)
            assert rows.status_code == 200 and len(rows.json()["rows"]) == 50, rows.text
            peak_rss = max(peak_rss, server.memory_info().rss)
        assert importing.is_alive(), "the bomb's import ended before Bob was done: make it larger"

        importing.join(timeout=300)
        refused = result["bomb"]
        assert refused.status_code == 413, refused.text
        assert "inflates" in refused.json()["detail"] or "ratio" in refused.json()["detail"]
        assert peak_rss - rss_before < 300 * MIB

        assert _counts(alice.user_id) == (0, 0)
        assert _counts(bob.user_id) == (BOB_ROUNDS, 50 * BOB_ROUNDS)
        listed = http.get("/api/datasets", headers=bob.headers).json()
        assert sorted(d["id"] for d in listed) == sorted(bob_ids)
    kept = set(uploads.glob("*")) - uploads_before
    assert len(kept) == BOB_ROUNDS  # Bob's originals; nothing of the bomb, no temporary file
