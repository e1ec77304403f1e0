"""Every LLaMA-Factory sample file imports unchanged, with the right kind and row count.

Counts come from reading the files here, independently of the studio; each file is imported
twice: layout auto-detected, and with its dataset_info.json entry as the mapping.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Account
from tests.support.datasets import (
    all_rows,
    count_records,
    imported,
    llamafactory_data,
    llamafactory_file,
    load_records,
)

EXPECTED = {
    "alpaca_en_demo.json": ("sft", "alpaca"),
    "alpaca_zh_demo.json": ("sft", "alpaca"),
    "identity.json": ("sft", "alpaca"),
    "glaive_toolcall_en_demo.json": ("sft", "sharegpt"),
    "dpo_en_demo.json": ("preference", "sharegpt_preference"),
    "dpo_zh_demo.json": ("preference", "sharegpt_preference"),
    "kto_en_demo.json": ("kto", "openai"),
    "c4_demo.jsonl": ("text", "text"),
    "v1_sft_demo.jsonl": ("sft", "llamafactory_v1"),
    "v1_dpo_demo.jsonl": ("preference", "llamafactory_v1_dpo"),
}
# With the dataset_info.json entry as mapping, the entry decides the layout.
MAPPED_FORMAT = {"kto_en_demo.json": "sharegpt"}


def _info_entries() -> dict[str, dict]:
    info = json.loads(llamafactory_file("dataset_info.json").read_text())
    return {entry["file_name"]: entry for entry in info.values() if "file_name" in entry}


def test_every_sample_file_is_covered() -> None:
    data_files = {p.name for p in llamafactory_data().iterdir() if p.suffix in (".json", ".jsonl")}
    assert data_files - {"dataset_info.json"} == set(EXPECTED)


@pytest.mark.parametrize("use_entry", [False, True], ids=["detected", "dataset_info"])
@pytest.mark.parametrize("filename", sorted(EXPECTED))
def test_sample_imports_with_kind_and_count(
    client, alice: Account, filename: str, use_entry: bool
) -> None:
    path = llamafactory_file(filename)
    fields = {}
    if use_entry and filename in _info_entries():
        fields["mapping"] = _info_entries()[filename]
    body = imported(client, alice, filename, path.read_bytes(), **fields)
    kind, layout = EXPECTED[filename]
    if use_entry:
        layout = MAPPED_FORMAT.get(filename, layout)
    assert (body["kind"], body["format"]) == (kind, layout)
    assert body["num_rows"] == count_records(path)
    assert body["skipped"] == 0 and body["detection"]


def _rows(client, alice: Account, filename: str, **fields) -> tuple[list[dict], list[dict]]:
    path = llamafactory_file(filename)
    body = imported(client, alice, filename, path.read_bytes(), **fields)
    return load_records(path), all_rows(client, alice, body["id"])


def test_alpaca_zh_keeps_chinese_text(client, alice: Account) -> None:
    source, rows = _rows(client, alice, "alpaca_zh_demo.json")
    assert len(rows) == 1000
    for record, row in zip(source, rows, strict=True):
        prompt = "\n\n".join(p for p in (record["instruction"], record["input"]) if p)
        assert row == {
            "messages": [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": record["output"]},
            ]
        }
    assert "细胞理论" in rows[0]["messages"][1]["content"]


def test_identity_keeps_its_placeholders(client, alice: Account) -> None:
    _, rows = _rows(client, alice, "identity.json")
    assert "{{name}}" in rows[0]["messages"][-1]["content"]


def test_glaive_function_calls_become_tool_calls(client, alice: Account) -> None:
    source, rows = _rows(
        client,
        alice,
        "glaive_toolcall_en_demo.json",
        mapping=_info_entries()["glaive_toolcall_en_demo.json"],
    )
    index = next(
        i for i, r in enumerate(source) if r["conversations"][1]["from"] == "function_call"
    )
    record, row = source[index], rows[index]
    call = json.loads(record["conversations"][1]["value"])
    assert row["tools"] == record["tools"]
    assert row["messages"][:3] == [
        {"role": "user", "content": record["conversations"][0]["value"]},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
            ],
        },
        {"role": "tool", "content": record["conversations"][2]["value"]},
    ]
    assert row["messages"][3]["role"] == "assistant"
    calls = sum(1 for r in rows for m in r["messages"] if m.get("tool_calls"))
    turns = sum(1 for r in source for t in r["conversations"] if t["from"] == "function_call")
    assert calls == turns == 211


@pytest.mark.parametrize("filename", ["dpo_en_demo.json", "dpo_zh_demo.json"])
def test_sharegpt_preference_pairs(client, alice: Account, filename: str) -> None:
    source, rows = _rows(client, alice, filename)
    for record, row in zip(source, rows, strict=True):
        assert row["prompt"][-1] == {
            "role": "user",
            "content": record["conversations"][-1]["value"],
        }
        assert row["chosen"] == [{"role": "assistant", "content": record["chosen"]["value"]}]
        assert row["rejected"] == [{"role": "assistant", "content": record["rejected"]["value"]}]
        if record["conversations"][0]["from"] == "system":
            assert row["prompt"][0]["role"] == "system"


def test_kto_labels_are_booleans(client, alice: Account) -> None:
    source, rows = _rows(client, alice, "kto_en_demo.json")
    assert [r["label"] for r in rows] == [s["label"] for s in source]
    assert all(isinstance(r["label"], bool) for r in rows)
    assert sum(r["label"] for r in rows) == 150
    assert rows[0]["messages"] == source[0]["messages"]


def test_c4_is_text(client, alice: Account) -> None:
    source, rows = _rows(client, alice, "c4_demo.jsonl", mapping=_info_entries()["c4_demo.jsonl"])
    assert rows == [{"text": s["text"]} for s in source]


def test_v1_sft_keeps_loss_weights(client, alice: Account) -> None:
    source, rows = _rows(client, alice, "v1_sft_demo.jsonl")
    assert rows[0]["messages"] == [
        {
            "role": m["role"],
            "content": m["content"][0]["value"],
            "loss_weight": m["loss_weight"],
        }
        for m in source[0]["messages"]
    ]
    weights = {m["loss_weight"] for r in rows for m in r["messages"]}
    assert weights == {0.0, 1.0}


def test_v1_dpo_splits_the_shared_prompt(client, alice: Account) -> None:
    source, rows = _rows(client, alice, "v1_dpo_demo.jsonl")
    first = source[0]
    assert [m["role"] for m in rows[0]["prompt"]] == ["system", "user"]
    assert rows[0]["chosen"][0]["content"] == first["chosen_messages"][-1]["content"][0]["value"]
    assert (
        rows[0]["rejected"][0]["content"] == first["rejected_messages"][-1]["content"][0]["value"]
    )


def test_the_original_upload_is_kept_by_its_hash(client, alice: Account) -> None:
    import hashlib

    from app.settings import get_settings

    raw = llamafactory_file("identity.json").read_bytes()
    imported(client, alice, "identity.json", raw)
    kept = get_settings().uploads_dir / hashlib.sha256(raw).hexdigest()
    assert kept.read_bytes() == raw
    assert not list(Path(get_settings().uploads_dir).glob(".upload-*"))
