"""Text views of canonical rows, shared by dedup, contamination, filters, search and stats.

Canonical shapes (what the importer stores in DatasetRow.data):
sft {"messages"}, preference {"prompt", "chosen", "rejected"}, kto {"messages", "label"},
text {"text"}, prompt {"prompt", "reference"?}; an sft row may carry "tools" (JSON text).
Message content may be a string or a list of typed parts ({"type": "text", "text": ...});
only text parts count as text.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

MESSAGE_KEYS = ("prompt", "messages", "chosen", "rejected")
TEXT_KEYS = ("text", "reference")
# A CJK character is a word of its own (those scripts do not separate words with spaces).
_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
WORD_RE = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")
_SPACE_RE = re.compile(r"\s+")


def content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") if isinstance(p, dict) else str(p) for p in content]
        return "".join(p for p in parts if isinstance(p, str))
    return "" if content is None else str(content)


def as_messages(value: Any) -> list[dict[str, Any]]:
    """A message list with text content (a bare string becomes one user turn)."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        return []
    return [{**m, "content": content_text(m.get("content"))} for m in value if isinstance(m, dict)]


def row_text(row: dict[str, Any], *, with_roles: bool = False) -> str:
    """All the text of a row, one message per line; roles and section names when asked."""
    lines: list[str] = []
    for key in MESSAGE_KEYS:
        if key not in row:
            continue
        if with_roles:
            lines.append(f"[{key}]")
        for m in as_messages(row[key]):
            text = m["content"]
            lines.append(f"{m.get('role', '')}: {text}" if with_roles else text)
    for key in TEXT_KEYS:
        if isinstance(row.get(key), str):
            lines.append(f"[{key}] {row[key]}" if with_roles else row[key])
    if with_roles and "label" in row:
        lines.append(f"[label] {row['label']}")
    if with_roles and isinstance(row.get("tools"), str):
        lines.append(f"[tools] {row['tools']}")
    return "\n".join(lines)


def row_segments(row: dict[str, Any]) -> list[str]:
    """The row's texts one by one: each message's content, then text and reference."""
    segments = [m["content"] for key in MESSAGE_KEYS if key in row for m in as_messages(row[key])]
    return segments + [row[key] for key in TEXT_KEYS if isinstance(row.get(key), str)]


def normalise(text: str) -> str:
    """Compatibility-folded, case-folded text with runs of whitespace made one space."""
    return _SPACE_RE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def _word(word: str) -> str:
    return word.lower() if word.isascii() else unicodedata.normalize("NFKC", word).casefold()


def words(text: str) -> list[str]:
    """The text's words (letters and digits; each CJK character alone), normalised."""
    return [_word(w) for w in WORD_RE.findall(text)]


def word_spans(text: str) -> list[tuple[str, int, int]]:
    """Normalised words with their character spans in ``text`` (for quoting the original)."""
    return [(_word(m.group()), m.start(), m.end()) for m in WORD_RE.finditer(text)]


def turns(row: dict[str, Any]) -> int:
    """Messages in a row; a preference row counts its prompt and one answer."""
    if "messages" in row:
        return len(as_messages(row["messages"]))
    if "chosen" in row:
        return len(as_messages(row.get("prompt"))) + len(as_messages(row["chosen"]))
    if "prompt" in row:
        return len(as_messages(row["prompt"]))
    return 0


def conversations(row: dict[str, Any]) -> list[tuple[list[dict[str, Any]], bool]]:
    """What a model is trained on, as (messages, add_generation_prompt) pairs; [] for text."""
    if "messages" in row:
        return [(as_messages(row["messages"]), False)]
    if "chosen" in row:
        prompt = as_messages(row.get("prompt"))
        return [
            (prompt + as_messages(row["chosen"]), False),
            (prompt + as_messages(row.get("rejected")), False),
        ]
    if "prompt" in row:
        return [(as_messages(row["prompt"]), True)]
    return []


def row_tools(row: dict[str, Any]) -> list[Any] | None:
    """The row's tool descriptions as a list (a chat template's ``tools``), when it has them."""
    tools = row.get("tools")
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except ValueError:
            return None
    if isinstance(tools, dict):
        tools = [tools]
    return tools if isinstance(tools, list) and tools else None
