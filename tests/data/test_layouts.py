"""Layouts and kinds: detection, format hints, kind overrides, and plain-worded refusals."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Account
from tests.support.datasets import all_rows, imported, jsonl, post_dataset

USER = {"role": "user", "content": "What is 2+2?"}
GOOD = {"role": "assistant", "content": "4"}
BAD = {"role": "assistant", "content": "5"}


def _one(client, account: Account, record: dict, **fields) -> tuple[dict, dict]:
    body = imported(client, account, "r.jsonl", jsonl([record]), **fields)
    return body, all_rows(client, account, body["id"])[0]


def test_openai_dpo_layout(client, alice: Account) -> None:
    record = {
        "input": {"messages": [{"role": "developer", "content": "Be exact."}, USER]},
        "preferred_output": [GOOD],
        "non_preferred_output": [BAD],
    }
    body, row = _one(client, alice, record)
    assert (body["kind"], body["format"]) == ("preference", "openai_dpo")
    assert body["detection"].startswith("OpenAI preference (DPO): the first record has 'input'")
    assert row == {
        "prompt": [{"role": "system", "content": "Be exact."}, USER],
        "chosen": [GOOD],
        "rejected": [BAD],
    }


def test_openai_chat_with_tool_calls(client, alice: Account) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2}'}}
    record = {
        "messages": [
            USER,
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "4"},
            {"role": "assistant", "content": "It is 4.", "weight": 1},
        ],
        "tools": [{"type": "function", "function": {"name": "add", "parameters": {}}}],
    }
    body, row = _one(client, alice, record)
    assert (body["kind"], body["format"]) == ("sft", "openai")
    assert row["messages"][1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": "add", "arguments": {"a": 2}}}],
    }
    assert row["messages"][2] == {"role": "tool", "content": "4"}
    assert row["messages"][3]["loss_weight"] == 1.0
    assert json.loads(row["tools"]) == record["tools"]


@pytest.mark.parametrize(
    ("record", "kind", "layout", "row"),
    [
        ({"text": "Once upon a time"}, "text", "text", {"text": "Once upon a time"}),
        (
            {"prompt": "What is 2+2?", "completion": "4"},
            "sft",
            "trl_prompt_completion",
            {"messages": [USER, GOOD]},
        ),
        (
            {"prompt": [USER], "completion": [GOOD], "label": False},
            "kto",
            "trl_prompt_completion",
            {"messages": [USER, GOOD], "label": False},
        ),
        (
            {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"},
            "preference",
            "trl_preference",
            {"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]},
        ),
        (
            {"chosen": [USER, GOOD], "rejected": [USER, BAD]},
            "preference",
            "trl_preference",
            {"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]},
        ),
        (
            {"prompt": [USER], "answer": "4"},
            "prompt",
            "trl_prompt",
            {"prompt": [USER], "reference": "4"},
        ),
        (
            {"messages": [USER, GOOD]},
            "sft",
            "openai",
            {"messages": [USER, GOOD]},
        ),
        (
            {"instruction": "What is 2+2?", "input": "", "chosen": "4", "rejected": "5"},
            "preference",
            "alpaca_preference",
            {"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]},
        ),
        (
            {
                "system": "Be exact.",
                "conversations": [{"from": "human", "value": "What is 2+2?"}],
                "chosen": {"from": "gpt", "value": "4"},
                "rejected": {"from": "gpt", "value": "5"},
            },
            "preference",
            "sharegpt_preference",
            {
                "prompt": [{"role": "system", "content": "Be exact."}, USER],
                "chosen": [GOOD],
                "rejected": [BAD],
            },
        ),
        (
            {"conversations": [{"role": "user", "content": "What is 2+2?"}, GOOD]},
            "sft",
            "sharegpt",
            {"messages": [USER, GOOD]},
        ),
    ],
)
def test_detected_layouts(
    client, alice: Account, record: dict, kind: str, layout: str, row: dict
) -> None:
    body, stored = _one(client, alice, record)
    assert (body["kind"], body["format"]) == (kind, layout)
    assert stored == row


def test_kind_overrides(client, alice: Account) -> None:
    alpaca = {"instruction": "What is 2+2?", "output": "4"}
    assert _one(client, alice, alpaca, kind="prompt")[1] == {"prompt": [USER], "reference": "4"}
    pair = {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"}
    assert _one(client, alice, pair, kind="sft")[1] == {"messages": [USER, GOOD]}
    chat = {"messages": [USER, GOOD, {"role": "user", "content": "And 3+3?"}]}
    _, row = _one(client, alice, chat, kind="prompt")
    assert row == {"prompt": chat["messages"]}


def test_a_format_hint_skips_detection(client, alice: Account) -> None:
    record = {"instruction": "What is 2+2?", "output": "4", "text": "ignored"}
    body, _ = _one(client, alice, record, format="alpaca")
    assert body["detection"].startswith("Alpaca: format given")


@pytest.mark.parametrize(
    ("records", "line", "field", "message"),
    [
        (
            [{"messages": [USER, GOOD]}, {"messages": [USER, USER, GOOD]}],
            2,
            "messages[1]",
            "wrong role order: a user turn cannot follow a user turn",
        ),
        (
            [{"messages": [USER, {"role": "assistant", "content": "  "}]}],
            1,
            "messages[1]",
            "empty assistant turn",
        ),
        (
            [{"messages": [USER, GOOD], "label": "yes"}],
            1,
            "label",
            "label not boolean: expected true or false, got 'yes'",
        ),
        (
            [{"messages": [USER, {"role": "bot", "content": "4"}]}],
            1,
            "messages[1]",
            "unknown role 'bot' (expected system, user, assistant, tool)",
        ),
        (
            [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt"}]}],
            1,
            "conversations[1].value",
            "missing field 'conversations[1].value'",
        ),
        (
            [{"messages": [USER]}],
            1,
            "messages[0]",
            "the conversation must end with an assistant turn, not a user turn",
        ),
        (
            [{"chosen": [USER, GOOD], "rejected": [{**USER, "content": "other"}, BAD]}],
            1,
            "rejected",
            "'rejected' must start with the same prompt as 'chosen'",
        ),
    ],
)
def test_row_errors_say_what_and_where(
    client, alice: Account, records: list, line: int, field: str, message: str
) -> None:
    status, body = post_dataset(client, alice, "bad.jsonl", jsonl(records))
    assert status == 422
    assert body["errors"] == [{"line": line, "field": field, "message": message}]


def test_mapping_errors_use_the_users_column_names(client, alice: Account) -> None:
    records = [{"q": "hi", "a": "hello"}, {"q": "hi"}]
    status, body = post_dataset(
        client, alice, "m.jsonl", jsonl(records), mapping={"instruction": "q", "output": "a"}
    )
    assert status == 422
    assert body["errors"] == [
        {"line": 2, "field": "a", "message": "missing field 'a' (Alpaca layout)"}
    ]


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        ({"kind": "dpo"}, "unknown dataset kind 'dpo'"),
        ({"format": "yaml"}, "unknown format 'yaml'"),
        ({"kind": "text"}, "the Alpaca layout cannot make 'text' rows"),
        ({"mapping": "{not json"}, "the mapping is not valid JSON"),
        ({"mapping": {"answer": "a"}}, "unknown field(s) in the mapping: answer"),
        ({"mapping": {"columns": {"images": "img"}}}, "the studio imports text only"),
        ({"mapping": {"formatting": "sharegpt", "tags": {"colour": "x"}}}, "unknown tag(s)"),
    ],
)
def test_refused_options(client, alice: Account, fields: dict, detail: str) -> None:
    record = {"instruction": "What is 2+2?", "output": "4"}
    status, body = post_dataset(client, alice, "r.jsonl", jsonl([record]), **fields)
    assert status == 422 and detail in body["detail"]


def test_an_unrecognised_layout_lists_the_fields_it_saw(client, alice: Account) -> None:
    status, body = post_dataset(client, alice, "r.jsonl", jsonl([{"foo": 1, "bar": 2}]))
    assert status == 422
    assert body["errors"] == [
        {"line": 1, "message": "unrecognised record layout (fields: bar, foo)"}
    ]


@pytest.mark.parametrize(
    ("record", "hint", "layout"),
    [
        ({"prompt": "What is 2+2?", "completion": "4"}, "trl", "trl_prompt_completion"),
        ({"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"}, "trl", "trl_preference"),
        (
            {"instruction": "What is 2+2?", "chosen": "4", "rejected": "5"},
            "alpaca",
            "alpaca_preference",
        ),
        ({"messages": [USER, GOOD]}, "llamafactory_v1", "llamafactory_v1"),
    ],
)
def test_a_format_family_picks_its_member(
    client, alice: Account, record: dict, hint: str, layout: str
) -> None:
    body, _ = _one(client, alice, record, format=hint)
    assert body["format"] == layout and f"format given ({hint})" in body["detection"]


def test_a_format_hint_that_does_not_fit_reports_the_missing_fields(client, alice: Account) -> None:
    status, body = post_dataset(
        client, alice, "r.jsonl", jsonl([{"q": "a", "a": "b"}]), format="alpaca"
    )
    assert status == 422
    assert body["errors"][0]["message"] == "missing field 'instruction', 'output' (Alpaca layout)"


@pytest.mark.parametrize(
    ("record", "mapping", "kind", "layout", "row"),
    [
        (
            {"dialog": [{"role": "user", "content": "What is 2+2?"}, GOOD]},
            {"columns": {"messages": "dialog"}},
            "sft",
            "sharegpt",
            {"messages": [USER, GOOD]},
        ),
        (
            {"body": "Once upon a time", "id": 3},
            {"columns": {"text": "body"}},
            "text",
            "text",
            {"text": "Once upon a time"},
        ),
        (
            {"messages": [USER, GOOD], "thumbs": "false"},
            {"columns": {"kto_tag": "thumbs"}},
            "kto",
            "openai",
            {"messages": [USER, GOOD], "label": False},
        ),
        (
            {"q": "What is 2+2?", "good": "4", "bad": "5"},
            {"ranking": True, "columns": {"prompt": "q", "chosen": "good", "rejected": "bad"}},
            "preference",
            "alpaca_preference",
            {"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]},
        ),
    ],
)
def test_llamafactory_entries_without_formatting(
    client, alice: Account, record: dict, mapping: dict, kind: str, layout: str, row: dict
) -> None:
    body, stored = _one(client, alice, record, mapping=mapping)
    assert (body["kind"], body["format"], stored) == (kind, layout, row)
