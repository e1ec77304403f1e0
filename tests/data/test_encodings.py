"""Encodings: UTF-8 with/without BOM, UTF-16 with BOM, GB18030/GBK detected or declared;
anything else refused with the byte offset. Column names come out clean."""

from __future__ import annotations

import json
from functools import cache

import pytest

from tests.conftest import Account
from tests.support.datasets import all_rows, imported, llamafactory_file, post_dataset


@cache
def _zh() -> list[dict]:
    """The first 50 records of LLaMA-Factory's Chinese Alpaca demo."""
    return json.loads(llamafactory_file("alpaca_zh_demo.json").read_text(encoding="utf-8"))[:50]


def _zh_jsonl() -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in _zh())


def _zh_csv() -> str:
    def cell(text: str) -> str:
        return '"' + text.replace('"', '""') + '"'

    rows = [",".join(cell(r[k]) for k in ("instruction", "input", "output")) for r in _zh()]
    return "instruction,input,output\r\n" + "\r\n".join(rows) + "\r\n"


def _assert_zh(client, account: Account, body: dict) -> None:
    assert body["num_rows"] == len(_zh()) and body["format"] == "alpaca"
    rows = all_rows(client, account, body["id"])
    assert [r["messages"][-1]["content"] for r in rows] == [r["output"] for r in _zh()]
    assert "细胞理论" in rows[0]["messages"][-1]["content"]


ENCODED = {
    "utf-8": lambda t: t.encode("utf-8"),
    "utf-8 BOM": lambda t: b"\xef\xbb\xbf" + t.encode("utf-8"),
    "utf-16 LE BOM": lambda t: b"\xff\xfe" + t.encode("utf-16-le"),
    "utf-16 BE BOM": lambda t: b"\xfe\xff" + t.encode("utf-16-be"),
    "gb18030": lambda t: t.encode("gb18030"),
}


@pytest.mark.parametrize("encoding", sorted(ENCODED))
@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".json"])
def test_chinese_text_survives_every_encoding(
    client, alice: Account, encoding: str, suffix: str
) -> None:
    text = {
        ".jsonl": _zh_jsonl(),
        ".csv": _zh_csv(),
        ".json": json.dumps(_zh(), ensure_ascii=False),
    }
    body = imported(client, alice, f"zh{suffix}", ENCODED[encoding](text[suffix]))
    _assert_zh(client, alice, body)
    if encoding == "gb18030":
        assert "GB18030" in body["detection"]


def test_a_bom_does_not_stick_to_the_first_column_name(client, alice: Account) -> None:
    raw = b"\xef\xbb\xbfquestion,answer\r\nhi,hello\r\n"
    body = imported(
        client, alice, "bom.csv", raw, mapping={"prompt": "question", "completion": "answer"}
    )
    assert all_rows(client, alice, body["id"])[0]["messages"][0] == {
        "role": "user",
        "content": "hi",
    }


def test_gbk_text_is_detected_and_can_be_declared(client, alice: Account) -> None:
    raw = _zh_jsonl().encode("gbk")
    _assert_zh(client, alice, imported(client, alice, "zh.jsonl", raw))
    declared = imported(client, alice, "zh.jsonl", raw, encoding="GBK")
    assert "declared" in declared["detection"]
    _assert_zh(client, alice, declared)


def test_utf16_without_bom_must_be_declared(client, alice: Account) -> None:
    raw = _zh_jsonl().encode("utf-16-le")
    status, body = post_dataset(client, alice, "zh.jsonl", raw)
    assert status == 422 and "utf-16-le" in body["detail"]
    _assert_zh(client, alice, imported(client, alice, "zh.jsonl", raw, encoding="utf-16-le"))


def test_latin1_is_refused_with_the_byte_offset(client, alice: Account) -> None:
    raw = '{"instruction": "caf\u00e9", "output": "ok"}\n'.encode("latin-1")
    status, body = post_dataset(client, alice, "fr.jsonl", raw)
    assert status == 422
    offset = raw.index(0xE9)
    assert f"the byte at offset {offset} is not UTF-8" in body["detail"]


def test_a_bad_byte_after_the_sample_is_refused_with_its_offset(client, alice: Account) -> None:
    line = json.dumps({"instruction": "q", "output": "a" * 100}) + "\n"
    raw = bytearray((line * 2000).encode())
    offset = len(line) * 1500 + 20
    raw[offset] = 0xFF
    status, body = post_dataset(client, alice, "late.jsonl", bytes(raw))
    assert status == 422
    assert f"bad byte at offset {offset}" in body["detail"]


def test_an_unsupported_declared_encoding_is_refused(client, alice: Account) -> None:
    status, body = post_dataset(client, alice, "a.jsonl", b'{"text": "x"}', encoding="latin-1")
    assert status == 422 and "not supported" in body["detail"]
