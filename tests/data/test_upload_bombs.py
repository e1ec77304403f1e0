"""Uploads that would make the studio read or store without bound (issue 14) are refused at
the limit, through the real API, leaving nothing behind: gzip bombs (413), too many records,
oversized rows, lone surrogates and deep nesting (422 with the line).

Each bomb ends in damaged gzip data far past the limit the test sets: an import that read on
past the limit would answer "the gzip data is damaged" instead of the limit's refusal, so the
answer itself shows where reading stopped.
"""

from __future__ import annotations

import gzip
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import Account
from tests.support.datasets import imported, jsonl, post_dataset

MIB = 1024 * 1024
DAMAGED_MEMBER = b"\x1f\x8b\x08\x00" + b"this is not deflate data" * 8
# About 1 KiB a line: a MiB of content is about a thousand rows.
LONG_RECORD = {"instruction": "q" * 900, "output": "a" * 100}


def _gzip_bomb(content: bytes, inflated_mib: int) -> bytes:
    """gzip members of one MiB of ``content`` repeated, inflating to ``inflated_mib`` MiB (a few
    KiB compressed per MiB), then a damaged member."""
    chunk = content * (MIB // len(content))
    member = gzip.compress(chunk, compresslevel=9)
    return member * inflated_mib + DAMAGED_MEMBER


def _line(record: dict[str, Any]) -> bytes:
    return (json.dumps(record) + "\n").encode()


@dataclass(frozen=True)
class Snapshot:
    datasets: int
    rows: int
    uploads: list[str]
    data_bytes: int


def _snapshot(client, account: Account) -> Snapshot:
    from sqlalchemy import func, select

    from app.db import session_scope
    from app.models import DatasetRow
    from app.settings import get_settings

    settings = get_settings()
    with session_scope() as session:
        rows = session.scalar(select(func.count()).select_from(DatasetRow))
    uploads = settings.uploads_dir
    files = [p for p in settings.data_dir.rglob("*") if p.is_file()]
    return Snapshot(
        datasets=len(client.get("/api/datasets", headers=account.headers).json()),
        rows=int(rows or 0),
        uploads=sorted(p.name for p in uploads.iterdir()) if uploads.exists() else [],
        data_bytes=sum(p.stat().st_size for p in files),
    )


def _refused(
    client, account: Account, filename: str, content: bytes, status: int, **fields: Any
) -> dict[str, Any]:
    """Upload, expect ``status``, and check that nothing was left behind: no dataset, no rows,
    no temporary or kept file in the uploads folder, and the data dir no larger than a few
    batches of rolled-back rows (SQLite's write-ahead log) whatever the file inflates to."""
    before = _snapshot(client, account)
    code, body = post_dataset(client, account, filename, content, **fields)
    assert code == status, body
    assert isinstance(body["detail"], str) and body["errors"], body
    after = _snapshot(client, account)
    assert (after.datasets, after.rows, after.uploads) == (
        before.datasets,
        before.rows,
        before.uploads,
    )
    assert after.data_bytes - before.data_bytes < 16 * MIB
    return body


@pytest.fixture
def limits(monkeypatch):
    """Set upload limits on the studio's settings for one test."""
    from app.settings import get_settings

    settings = get_settings()

    def set_limits(**values: Any) -> None:
        for name, value in values.items():
            assert hasattr(settings, name), name
            monkeypatch.setattr(settings, name, value)

    return set_limits


def test_a_gzip_bomb_is_refused_with_413_at_the_inflated_size_limit(
    client, alice: Account, limits
) -> None:
    limits(max_inflated_bytes=4 * MIB, max_inflate_ratio=0)
    bomb = _gzip_bomb(_line(LONG_RECORD), inflated_mib=1024)
    assert len(bomb) < 4 * MIB  # 1 GiB once inflated
    body = _refused(client, alice, "bomb.jsonl.gz", bomb, 413)
    assert "inflates to more than 4 MiB" in body["detail"]
    assert "FTSTUDIO_MAX_INFLATED_BYTES" in body["detail"]
    assert body["errors"] == [{"loc": ["body", "file"], "message": body["detail"]}]


def test_a_gzip_bomb_is_refused_by_its_inflate_ratio(client, alice: Account, limits) -> None:
    limits(inflate_ratio_min_bytes=1 * MIB)  # the default 4 GiB size limit stays
    body = _refused(client, alice, "bomb.json.gz", _gzip_bomb(b"\n" * 1024, 512), 413)
    assert "inflates more than 200 times" in body["detail"]
    assert "FTSTUDIO_MAX_INFLATE_RATIO" in body["detail"]


def test_gzip_of_ordinary_text_passes_the_ratio_limit(client, alice: Account, limits) -> None:
    limits(inflate_ratio_min_bytes=64 * 1024)
    records = [
        {"instruction": f"question {i} {i * 7919 % 10007}", "output": "x" * (i % 97 + 1)}
        for i in range(5000)
    ]
    raw = jsonl(records)
    assert len(raw) > 64 * 1024 and len(raw) / len(gzip.compress(raw)) < 200
    body = imported(client, alice, "ok.jsonl.gz", gzip.compress(raw))
    assert body["num_rows"] == 5000


def test_an_uncompressed_file_is_held_to_the_content_limit_too(
    client, alice: Account, limits
) -> None:
    limits(max_inflated_bytes=256 * 1024)
    raw = _line(LONG_RECORD) * 300
    body = _refused(client, alice, "big.jsonl", raw, 413)
    assert "the file is more than 262,144 bytes" in body["detail"]


def test_a_parquet_gz_bomb_stops_unpacking_at_the_limit_and_removes_its_temp_file(
    client, alice: Account, limits
) -> None:
    limits(max_inflated_bytes=8 * MIB, max_inflate_ratio=0)
    table = pa.table({"text": ["z" * 1000] * 1000})
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="none", use_dictionary=False)
    head = sink.getvalue()  # a real Parquet file, then a GiB of zeros past its end
    bomb = gzip.compress(head) + _gzip_bomb(b"\0" * 1024, 1024)
    assert len(bomb) < 4 * MIB
    body = _refused(client, alice, "bomb.parquet.gz", bomb, 413)
    assert "inflates to more than 8 MiB" in body["detail"]


def test_parquet_with_too_many_rows_is_refused_from_its_footer(
    client, alice: Account, limits
) -> None:
    limits(max_upload_rows=1000)
    sink = io.BytesIO()
    pq.write_table(pa.table({"text": [f"row {i}" for i in range(1001)]}), sink)
    body = _refused(client, alice, "many.parquet", sink.getvalue(), 422)
    assert body["errors"] == [{"line": 1001, "message": "record 1,001: more than 1,000 records"}]
    assert "more than 1,000 records" in body["detail"]
    assert "FTSTUDIO_MAX_UPLOAD_ROWS" in body["detail"]


def test_too_many_records_are_refused_at_the_first_one_over(client, alice: Account, limits) -> None:
    limits(max_upload_rows=1000)
    bomb = _gzip_bomb(_line({"text": "a"}), inflated_mib=64)  # 4.8 million rows, 100 KiB of gzip
    body = _refused(client, alice, "rows.jsonl.gz", bomb, 422, kind="text")
    assert body["errors"] == [{"line": 1001, "message": "record 1,001: more than 1,000 records"}]


def test_the_row_limit_counts_records_not_lines(client, alice: Account, limits) -> None:
    limits(max_upload_rows=3)
    rows = [{"instruction": f"q{i}", "output": "a"} for i in range(3)]
    raw = b"\n\n" + jsonl(rows[:2]) + b"\n" + jsonl(rows[2:])
    assert imported(client, alice, "three.jsonl", raw)["num_rows"] == 3
    bad = raw + b'{"instruction": "broken"\n'  # a bad record counts too
    body = _refused(client, alice, "four.jsonl", bad, 422, skip_invalid="true")
    assert body["errors"] == [{"line": 7, "message": "record 4: more than 3 records"}]


def test_a_line_over_the_row_limit_is_refused_with_its_number(
    client, alice: Account, limits
) -> None:
    limits(max_row_bytes=4096)
    raw = jsonl([{"instruction": "q", "output": "a"}, {"instruction": "q" * 5000, "output": "a"}])
    body = _refused(client, alice, "long.jsonl", raw, 422)
    assert body["errors"] == [{"line": 2, "message": "the line is larger than 4,096 bytes"}]
    assert "FTSTUDIO_MAX_ROW_BYTES" in body["detail"]


@pytest.mark.parametrize("filename", ["wide.jsonl", "wide.json"])
def test_a_row_over_the_limit_in_utf8_bytes_is_a_row_error(
    client, alice: Account, limits, filename: str
) -> None:
    limits(max_row_bytes=4096)
    records = [{"instruction": "q", "output": "a"}, {"instruction": "中" * 2000, "output": "a"}]
    raw = jsonl(records) if filename.endswith("l") else json.dumps(records, indent=1).encode()
    body = _refused(client, alice, filename, raw, 422)
    [error] = body["errors"]
    assert error["line"] == (2 if filename.endswith("l") else 6)
    assert error["message"].startswith("the row is 6,0")
    assert error["message"].endswith(
        "over the limit of 4,096 bytes for one row (FTSTUDIO_MAX_ROW_BYTES)"
    )
    kept = imported(client, alice, filename, raw, skip_invalid="true")
    assert (kept["num_rows"], kept["skipped"]) == (1, 1)


CHAT = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]
# (a good record, the same layout with a lone surrogate: the fast Alpaca and messages paths)
LONE_SURROGATES = [
    ({"instruction": "q", "output": "a"}, b'{"instruction": "a\\ud800", "output": "b"}'),
    (
        {"messages": CHAT},
        b'{"messages": [{"role": "user", "content": "\\udc00"}, '
        b'{"role": "assistant", "content": "x"}]}',
    ),
    ({"text": "fine"}, b'{"text": "tail \\udfff"}'),
]


@pytest.mark.parametrize(("good", "bad"), LONE_SURROGATES)
def test_a_lone_surrogate_is_a_422_with_its_line(
    client, alice: Account, good: dict[str, Any], bad: bytes
) -> None:
    body = _refused(client, alice, "surrogate.jsonl", _line(good) + bad + b"\n" + _line(good), 422)
    [error] = body["errors"]
    assert error["line"] == 2
    assert "lone surrogate" in error["message"] and "not valid Unicode" in error["message"]
    kept = imported(client, alice, "surrogate.jsonl", _line(good) + bad, skip_invalid="true")
    assert (kept["num_rows"], kept["skipped"]) == (1, 1)


def test_a_lone_surrogate_in_a_json_array(client, alice: Account) -> None:
    raw = b'[\n{"instruction": "q", "output": "a"},\n{"instruction": "\\ud83d", "output": "b"}\n]'
    body = _refused(client, alice, "surrogate.json", raw, 422)
    assert [e["line"] for e in body["errors"]] == [3]


def _deep(depth: int) -> bytes:
    return b'{"instruction": "q", "output": "a", "x": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("depth", [2000, 100_000])
def test_deeply_nested_json_is_a_422_with_its_line(client, alice: Account, depth: int) -> None:
    good = _line({"instruction": "q", "output": "a"})
    body = _refused(client, alice, "deep.jsonl", good * 2 + _deep(depth) + b"\n" + good, 422)
    assert body["errors"] == [
        {
            "line": 3,
            "message": "bad JSON: arrays or objects nested too deeply (about 1,000 levels at most)",
        }
    ]
    array = b"[\n" + good.strip() + b",\n" + _deep(depth) + b"\n]"
    body = _refused(client, alice, "deep.json", array, 422)
    assert [e["line"] for e in body["errors"]] == [3]
    kept = imported(client, alice, "deep.jsonl", good + _deep(depth) + b"\n", skip_invalid="true")
    assert (kept["num_rows"], kept["skipped"]) == (1, 1)


def test_the_reader_itself_stops_at_the_limit(tmp_path: Path) -> None:
    """The same guard without the web tier: the damaged tail past the limit is never reached,
    and the reader refuses on the first read that crosses it."""
    from app.data.errors import UploadTooLarge
    from app.data.reading import open_binary
    from app.data.uploads import UploadLimits

    path = tmp_path / "bomb.gz"
    path.write_bytes(_gzip_bomb(b"\0" * 1024, 64))
    with open_binary(path, True, UploadLimits(max_inflated_bytes=3 * MIB)) as stream:
        assert len(stream.read(3 * MIB)) == 3 * MIB
        with pytest.raises(UploadTooLarge):
            stream.read(1)
