"""Streaming validation: exact physical line numbers, refusal vs skip_invalid, gzip, hashes."""

from __future__ import annotations

import gzip
import hashlib
import json

import pytest
from sqlalchemy import select

from app.data.errors import ImportRefused, RowError
from app.data.jsonarray import iter_json_array
from app.models import Dataset
from tests.conftest import Account
from tests.support.datasets import all_rows, imported, jsonl, post_dataset

BROKEN_LINE = 73_412


def _alpaca(i: int) -> dict:
    return {"instruction": f"question {i}", "input": "", "output": f"answer {i}"}


def _datasets(client, account: Account) -> int:
    return len(client.get("/api/datasets", headers=account.headers).json())


def test_a_broken_line_73412_of_jsonl_is_refused_with_that_line(client, alice: Account) -> None:
    lines = [json.dumps(_alpaca(i)) for i in range(80_000)]
    lines[BROKEN_LINE - 1] = lines[BROKEN_LINE - 1][:-1]  # drop the closing brace
    before = _datasets(client, alice)
    status, body = post_dataset(client, alice, "big.jsonl", ("\n".join(lines) + "\n").encode())
    assert status == 422
    assert body["errors"] == [
        {"line": BROKEN_LINE, "message": body["errors"][0]["message"]},
    ]
    assert body["errors"][0]["message"].startswith("bad JSON:")
    assert body["detail"] == "1 invalid record(s); nothing was stored"
    assert _datasets(client, alice) == before


def test_a_broken_line_73412_inside_a_pretty_printed_array(client, alice: Account) -> None:
    text = json.dumps([_alpaca(i) for i in range(15_000)], indent=2)
    lines = text.replace("[\n", "[\n\n\n", 1).split("\n")  # 73,412: a field line
    assert lines[BROKEN_LINE - 1].lstrip().startswith('"')  # a field line inside a record
    lines[BROKEN_LINE - 1] = lines[BROKEN_LINE - 1].replace('"', "'", 1)
    status, body = post_dataset(client, alice, "big.json", "\n".join(lines).encode())
    assert status == 422
    assert [e["line"] for e in body["errors"]] == [BROKEN_LINE]


def test_a_missing_comma_between_array_records_names_its_line(client, alice: Account) -> None:
    content = b'[\n{"instruction": "a", "output": "b"},\n{"instruction": "c", "output": "d"}\n\n{}]'
    status, body = post_dataset(client, alice, "x.json", content)
    assert status == 422
    assert body["errors"][0]["line"] == 5
    assert "between records" in body["errors"][0]["message"]


def test_an_unclosed_array_is_refused(client, alice: Account) -> None:
    status, body = post_dataset(
        client, alice, "x.json", b'[\n{"instruction": "a", "output": "b"},\n'
    )
    assert status == 422 and "not closed" in body["detail"]


def test_skip_invalid_keeps_good_rows_and_reports_the_rest(client, alice: Account) -> None:
    records = [_alpaca(i) for i in range(10)]
    records[2]["output"] = ""
    records[5] = {"instruction": "no answer"}
    lines = jsonl(records).decode().split("\n")
    lines[7] = "{not json"
    body = imported(client, alice, "mixed.jsonl", "\n".join(lines).encode(), skip_invalid="true")
    assert body["num_rows"] == 7 and body["skipped"] == 3
    assert [(e["line"], e.get("field")) for e in body["skipped_errors"]] == [
        (3, "output"),
        (6, "output"),
        (8, None),
    ]
    assert body["skipped_errors"][1]["message"] == "missing field 'output' (Alpaca layout)"
    kept = [r["messages"][-1]["content"] for r in all_rows(client, alice, body["id"])]
    assert kept == [f"answer {i}" for i in (0, 1, 3, 4, 6, 8, 9)]


def test_without_skip_invalid_the_same_file_is_refused(client, alice: Account) -> None:
    records = [_alpaca(i) for i in range(10)]
    records[2]["output"] = ""
    status, body = post_dataset(client, alice, "mixed.jsonl", jsonl(records))
    assert status == 422 and body["errors"][0]["line"] == 3


def test_errors_are_counted_all_and_listed_first_100(client, alice: Account) -> None:
    records = [_alpaca(i) if i % 2 else {"instruction": "x", "output": " "} for i in range(500)]
    status, body = post_dataset(client, alice, "many.jsonl", jsonl(records))
    assert status == 422
    assert body["detail"] == "250 invalid record(s); nothing was stored"
    assert len(body["errors"]) == 100
    assert [e["line"] for e in body["errors"][:3]] == [1, 3, 5]


def test_skip_invalid_with_nothing_valid_is_refused(client, alice: Account) -> None:
    status, body = post_dataset(client, alice, "bad.jsonl", b"{oops\n", skip_invalid="true")
    assert status == 422 and "no valid records" in body["detail"]


def test_an_empty_file_is_refused(client, alice: Account) -> None:
    assert post_dataset(client, alice, "empty.jsonl", b"\n\n")[0] == 422
    assert post_dataset(client, alice, "empty.json", b"[]")[0] == 422


def test_gzip_files_import_whatever_their_name(client, alice: Account) -> None:
    raw = jsonl([_alpaca(i) for i in range(50)])
    for name in ("data.jsonl.gz", "data.jsonl"):
        body = imported(client, alice, name, gzip.compress(raw))
        assert body["num_rows"] == 50 and "gzip-compressed" in body["detection"]


def test_a_damaged_gzip_file_is_refused(client, alice: Account) -> None:
    packed = gzip.compress(jsonl([_alpaca(i) for i in range(2000)]))
    status, body = post_dataset(client, alice, "cut.jsonl.gz", packed[: len(packed) // 2])
    assert status == 422 and "gzip" in body["detail"]


def test_content_hash_is_over_canonical_rows_whatever_the_file_form(client, alice: Account) -> None:
    records = [_alpaca(i) for i in range(30)]
    forms = {
        "a.json": json.dumps(records, indent=1).encode(),
        "a.jsonl": jsonl(records),
        "a.jsonl.gz": gzip.compress(jsonl(records)),
    }
    ids = [imported(client, alice, name, raw)["id"] for name, raw in forms.items()]
    rows = all_rows(client, alice, ids[0])
    expected = hashlib.sha256(
        b"".join((json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n").encode() for r in rows)
    ).hexdigest()
    from app.db import session_scope

    with session_scope() as session:
        found = session.scalars(select(Dataset).where(Dataset.id.in_(ids))).all()
        assert {d.content_hash for d in found} == {expected}
        assert len({d.sha256 for d in found}) == 3


ARRAY = (
    '[\n  {"a": "x \\" ] } [ {", "b": [1, {"c": null}]},\n'
    '  {"emoji": "\\ud83d\\ude00 \u4e2d\u6587", "n": -1.5e3},\n'
    '  "not an object", 42, true,\n'
    '  {"nested": {"deep": [[[]]]}}\n]\n'
)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 10_000])
def test_the_array_splitter_agrees_with_json_at_any_chunk_size(size: int) -> None:
    chunks = [ARRAY[i : i + size] for i in range(0, len(ARRAY), size)]
    found = list(iter_json_array(chunks))
    assert [r.value for r in found] == json.loads(ARRAY)
    assert [r.line for r in found] == [2, 3, 4, 4, 4, 5]


def test_the_array_splitter_reports_bad_records_and_goes_on() -> None:
    text = '[\n{"a": 1},\n{"a":\n  nope},\n{"a": 3}\n]'
    found = list(iter_json_array([text]))
    assert isinstance(found[1], RowError) and found[1].line == 4
    assert [r.value for r in found if not isinstance(r, RowError)] == [{"a": 1}, {"a": 3}]


def test_the_array_splitter_refuses_a_runaway_record() -> None:
    with pytest.raises(ImportRefused, match="ends in the middle of a record") as refused:
        list(iter_json_array(['[\n{"a": 1},\n{"a": "never closed}\n']))
    assert refused.value.errors[0].line == 3
