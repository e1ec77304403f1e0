"""Pinned import output: the stored row text, content hashes and error lines must not drift.

The expected values were recorded from the importer before it was optimised (issue 13): any
change to parsing, canonical JSON or storage that alters a byte shows up here. Each case is
imported straight through ``import_dataset`` in both database modes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from sqlalchemy import text

from app.data.errors import ImportRefused
from app.data.importer import ImportOptions, import_dataset
from app.data.rows import content_hash, row_bytes
from tests.conftest import RUN_DIR

ODD_TEXT = 'quote " backslash \\ tab \t ctrl \u0001 del \u007f sep \u2028 中文 😀 é'

ALPACA = [
    {"instruction": "Say hi", "input": "", "output": "Hi!"},
    {"instruction": ODD_TEXT, "input": "more", "output": ODD_TEXT, "system": "Be brief."},
    {
        "instruction": "Continue",
        "output": "Done",
        "history": [["first", "one"], ["second", "two"]],
        "extra": 123456789012345678901234567890,
    },
    {"instruction": "a", "instruction ": "ignored", "output": "b", "n": "HUGE"},
]
OPENAI = [
    {
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": [{"type": "text", "text": "What is "}, {"text": "2+2?"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "function": {
                            "name": "calc",
                            "arguments": (
                                '{"x": 1e16, "y": 0.1, "z": -0.0, '
                                '"big": 12345678901234567890123, "u": "\\u00e9"}'
                            ),
                        }
                    }
                ],
            },
            {"role": "tool", "content": "4"},
            {"role": "assistant", "content": "4", "weight": 1},
        ],
        "tools": [{"name": "calc", "parameters": {"type": "object", "n": 2.50}}],
    },
    {
        "messages": [
            {"role": "user", "content": "hi", "loss_weight": 0.5},
            {"role": "assistant", "content": "yo", "loss_weight": 1e-7},
        ]
    },
]
SHAREGPT_KTO = [
    {
        "conversations": [
            {"from": "human", "value": "Q " + ODD_TEXT},
            {"from": "gpt", "value": "A"},
        ],
        "label": True,
    },
    {
        "conversations": [{"from": "human", "value": "Q2"}, {"from": "gpt", "value": "B"}],
        "label": "false",
    },
]
PREFERENCE = [
    {"prompt": "Pick", "chosen": "good", "rejected": "bad"},
    {
        "chosen": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
        "rejected": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "z"}],
    },
]
TEXT = [{"text": ODD_TEXT}, {"text": "plain"}]
PROMPT = [{"prompt": "Solve", "reference": "42"}, {"prompt": [{"role": "user", "content": "Q"}]}]


def _huge(text: str) -> str:
    """A number too large for a float (Python reads it as inf), which json.dumps cannot write."""
    return text.replace('"HUGE"', "1e400")


def _jsonl(records: list[dict[str, Any]], crlf: bool = False) -> bytes:
    end = "\r\n" if crlf else "\n"
    return "".join(_huge(json.dumps(r, ensure_ascii=False)) + end for r in records).encode()


# name -> (file name, bytes, options, pinned content hash)
CASES: dict[str, tuple[str, bytes, ImportOptions, str]] = {
    "alpaca_jsonl": (
        "a.jsonl",
        _jsonl(ALPACA, crlf=True),
        ImportOptions(),
        "e8242188881b2e001b40dc043fc30d5fb139c9034a35d0b222f6e772e1dcf73a",
    ),
    "alpaca_array": (
        "a.json",
        _huge(json.dumps(ALPACA, indent=2, ensure_ascii=True)).encode(),
        ImportOptions(),
        "e8242188881b2e001b40dc043fc30d5fb139c9034a35d0b222f6e772e1dcf73a",
    ),
    "openai": (
        "o.jsonl",
        _jsonl(OPENAI),
        ImportOptions(),
        "4f23c9792975a40d68efb46597e06a01c76ee2066c89b5c4b12ea85f624d8e17",
    ),
    "sharegpt_kto": (
        "s.jsonl",
        _jsonl(SHAREGPT_KTO),
        ImportOptions(),
        "db313339f7d108dba0bb9bce57245eb0dc7d98a16229b5a006920948565339bc",
    ),
    "preference": (
        "p.jsonl",
        _jsonl(PREFERENCE),
        ImportOptions(),
        "6a416a61f692e64db752bed614a54095f0bf3b1c1ed50b174e64016880a4ea76",
    ),
    "text": (
        "t.txt",
        (ODD_TEXT + "\n\nplain\n").encode(),
        ImportOptions(),
        "e606e762f392c9080f78bbebc7853108985841b48d7acda5188df4060dead3f5",
    ),
    "text_jsonl": (
        "t.jsonl",
        _jsonl(TEXT),
        ImportOptions(),
        "e606e762f392c9080f78bbebc7853108985841b48d7acda5188df4060dead3f5",
    ),
    "prompt": (
        "q.jsonl",
        _jsonl(PROMPT),
        ImportOptions(kind="prompt"),
        "6bff562d7e2b78eaafca2b672ea50832972aa74dc3ac30fe0d45e7aa729b97d1",
    ),
    "alpaca_gb18030": (
        "g.jsonl",
        _jsonl(ALPACA[:2]).decode().encode("gb18030"),
        ImportOptions(encoding="gb18030"),
        "07901e6b64fc0adfcec5fff62e9291918a92af92a6f6e4dc45401bc3d0868a1e",
    ),
    "alpaca_utf16": (
        "u.jsonl",
        _jsonl(ALPACA).decode().encode("utf-16"),
        ImportOptions(),
        "e8242188881b2e001b40dc043fc30d5fb139c9034a35d0b222f6e772e1dcf73a",
    ),
}

# Bad lines of a JSON Lines file, imported with skip_invalid: (line, field, message) each.
BAD_LINES = [
    '{"instruction": "ok", "output": "fine"}',
    "{oops",
    '{"instruction": "x", "output": NaN}',
    '{"instruction": "x", "output": Infinity}',
    '{"instruction": "x", "output": -Infinity}',
    "[1, 2]",
    '"just a string"',
    '{"instruction": "x" "output": "y"}',
    '{"instruction": "x", "output": "y",}',
    "{'instruction': 'x'}",
    '{"instruction": "x", "output": "y"} trailing',
    "\ufeff" + '{"instruction": "x", "output": "y"}',
    '{"instruction": "tab\tinside", "output": "y"}',
    '{"instruction": "x", "output": "y"',
    '{"instruction": 5, "output": "y"}',
    '{"instruction": "x", "output": ""}',
    '{"instruction": "x", "output": "y", "n": 01}',
    '{"instruction": "x", "output": "bad escape \\q"}',
    '{"instruction": "x", "output": "short \\u12"}',
    "   ",
    "",
    "null",
    "12",
    '{"instruction": "dup", "instruction": "last", "output": "y"}',
    '  {"instruction": "spaced", "output": "y"}  ',
]
PINNED_ERRORS: list[tuple[int, str | None, str]] = [
    (2, None, "bad JSON: Expecting property name enclosed in double quotes (column 2)"),
    (3, None, "bad JSON: NaN is not valid JSON"),
    (4, None, "bad JSON: Infinity is not valid JSON"),
    (5, None, "bad JSON: -Infinity is not valid JSON"),
    (6, None, "record is not a JSON object"),
    (7, None, "record is not a JSON object"),
    (8, None, "bad JSON: Expecting ',' delimiter (column 21)"),
    (9, None, "bad JSON: Expecting property name enclosed in double quotes (column 36)"),
    (10, None, "bad JSON: Expecting property name enclosed in double quotes (column 2)"),
    (11, None, "bad JSON: Extra data (column 37)"),
    (12, None, "bad JSON: Expecting value (column 1)"),
    (13, None, "bad JSON: Invalid control character at (column 21)"),
    (14, None, "bad JSON: Expecting ',' delimiter (column 35)"),
    (15, "instruction", "'instruction' must be a string, got int"),
    (16, "output", "field 'output' is empty: nothing for the assistant to learn"),
    (17, None, "bad JSON: Expecting ',' delimiter (column 43)"),
    (18, None, "bad JSON: Invalid \\escape (column 44)"),
    (19, None, "bad JSON: Invalid \\uXXXX escape (column 40)"),
    (22, None, "record is not a JSON object"),
    (23, None, "record is not a JSON object"),
]
PINNED_BAD_LINES_HASH = "29809a97f1a2f372fe9f86ca975a55e51376a2a5c997b8c5dbbd8bac3ff1cc77"


@pytest.fixture(scope="module")
def owner():
    from app.auth import get_or_create_user
    from app.db import session_scope

    with session_scope() as session:
        user = get_or_create_user(session, "pins")
    return user


def _import(owner, filename: str, raw: bytes, options: ImportOptions) -> tuple[int, str, str]:
    """(rows, content hash, sha256 of the stored row texts each with a newline)."""
    from app.db import session_scope

    with session_scope() as session:
        result = import_dataset(
            session,
            owner,
            filename=filename,
            source=raw,
            uploads_dir=RUN_DIR / "pins-uploads",
            options=options,
        )
        session.flush()
        stored = session.connection().execute(
            text(
                "SELECT CAST(data AS TEXT) FROM dataset_rows WHERE dataset_id = :id ORDER BY "
                '"index"'
            ),
            {"id": result.dataset.id},
        )
        digest = hashlib.sha256(b"".join((t + "\n").encode() for (t,) in stored)).hexdigest()
        return result.dataset.num_rows, result.dataset.content_hash, digest


@pytest.mark.parametrize("case", sorted(CASES))
def test_stored_rows_and_content_hash_are_pinned(owner, case: str) -> None:
    filename, raw, options, pinned = CASES[case]
    rows, hashed, stored = _import(owner, filename, raw, options)
    assert rows > 0
    assert stored == hashed
    assert hashed == pinned


def test_bad_lines_give_the_pinned_errors(owner) -> None:
    from app.db import session_scope

    raw = "\n".join(BAD_LINES).encode()
    options = ImportOptions(skip_invalid=True)
    with session_scope() as session:
        result = import_dataset(
            session,
            owner,
            filename="bad.jsonl",
            source=raw,
            uploads_dir=RUN_DIR / "pins-uploads",
            options=options,
        )
        found = [(e.line, e.field, e.message) for e in result.skipped_errors]
        hashed = result.dataset.content_hash
    assert found == PINNED_ERRORS
    assert hashed == PINNED_BAD_LINES_HASH


def test_bad_lines_refuse_the_file_without_skip_invalid(owner) -> None:
    from app.db import session_scope

    with pytest.raises(ImportRefused) as refused, session_scope() as session:
        import_dataset(
            session,
            owner,
            filename="bad.jsonl",
            source="\n".join(BAD_LINES).encode(),
            uploads_dir=RUN_DIR / "pins-uploads",
        )
    assert [(e.line, e.field, e.message) for e in refused.value.errors] == PINNED_ERRORS


def test_row_bytes_and_content_hash_are_pinned() -> None:
    row = {"messages": [{"role": "user", "content": ODD_TEXT}], "label": False, "w": 1e16}
    assert (
        row_bytes(row)
        == (
            '{"label": false, "messages": [{"content": "quote \\" backslash \\\\ tab \\t ctrl '
            '\\u0001 del \u007f sep \u2028 中文 😀 é", "role": "user"}], "w": 1e+16}\n'
        ).encode()
    )
    assert content_hash([row, {"text": "x"}]) == (
        "48cdbc9f6e28e493119679e0d50e7ace5a44b13e6e0dac8579d126c2930f5869"
    )
