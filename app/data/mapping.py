"""Column mappings: which of the file's columns hold which studio field.

Two forms are accepted:

- a plain mapping ``{"studio field": "your column"}``, e.g. ``{"prompt": "question",
  "completion": "answer"}``; the fields are those of the layouts (``instruction``, ``input``,
  ``output``, ``messages``, ``conversations``, ``prompt``, ``completion``, ``chosen``, ...);
  the record is renamed and its layout detected as usual;
- a LLaMA-Factory ``dataset_info.json`` entry (``formatting``, ``columns``, ``tags``,
  ``ranking``), which also fixes the layout: alpaca (ranking: alpaca_preference; only a
  ``prompt`` or ``text`` column: pretraining text), sharegpt (ranking: sharegpt_preference),
  with ``kto_tag`` as the KTO label. Without ``formatting``, a ``messages`` column means
  sharegpt, alpaca columns mean alpaca, and otherwise the layout is detected.

Errors name the user's columns: ``translate`` turns studio field names back into them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from app.data.errors import ImportRefused
from app.data.sharegpt import DEFAULT_TAGS

PLAIN_FIELDS = (
    "instruction",
    "input",
    "output",
    "system",
    "history",
    "tools",
    "conversations",
    "messages",
    "prompt",
    "completion",
    "chosen",
    "rejected",
    "label",
    "text",
    "reference",
    "preferred_output",
    "non_preferred_output",
    "chosen_messages",
    "rejected_messages",
)
LLAMAFACTORY_KEYS = frozenset(
    {"file_name", "formatting", "ranking", "columns", "tags", "subset", "split", "folder"}
    | {"num_samples", "hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name"}
)
# LLaMA-Factory column role -> studio field, per formatting.
ALPACA_COLUMNS = {
    "prompt": "instruction",
    "query": "input",
    "response": "output",
    "history": "history",
    "system": "system",
    "tools": "tools",
    "chosen": "chosen",
    "rejected": "rejected",
    "kto_tag": "label",
    "text": "text",
}
SHAREGPT_COLUMNS = {
    "messages": "conversations",
    "system": "system",
    "tools": "tools",
    "chosen": "chosen",
    "rejected": "rejected",
    "kto_tag": "label",
}
ALPACA_DEFAULT = {"prompt": "instruction", "query": "input", "response": "output"}
MEDIA_COLUMNS = ("images", "videos", "audios")


@dataclass(frozen=True)
class Mapping:
    renames: dict[str, str]  # studio field -> the file's column
    layout: str | None = None
    kind: str | None = None
    tags: dict[str, str] | None = None
    reason: str = ""

    def apply(self, record: dict[str, Any]) -> dict[str, Any]:
        moved = set(self.renames.values()) | set(self.renames)
        out = {key: value for key, value in record.items() if key not in moved}
        for field, column in self.renames.items():
            if column in record:
                out[field] = record[column]
        return out

    @property
    def is_identity(self) -> bool:
        return all(field == column for field, column in self.renames.items())

    def translate(self, text: str) -> str:
        """Studio field names quoted in a message (``'output'``, ``'messages[2]``) -> columns."""
        moved = {field: column for field, column in self.renames.items() if field != column}
        if not moved:
            return text
        names = "|".join(re.escape(field) for field in sorted(moved, key=len, reverse=True))
        return re.sub(rf"'({names})\b", lambda m: "'" + moved[m.group(1)], text)

    def translate_field(self, path: str) -> str:
        for field, column in self.renames.items():
            if path == field or path.startswith((f"{field}[", f"{field}.")):
                return column + path[len(field) :]
        return path


def mapping_from_json(text: str | None) -> dict[str, Any] | None:
    """The ``mapping`` form field: a JSON object, or nothing."""
    if text is None or not text.strip():
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ImportRefused(f"the mapping is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ImportRefused("the mapping must be a JSON object")
    return value


def parse_mapping(raw: dict[str, Any] | None, kind: str | None) -> Mapping | None:
    if not raw:
        return None
    if LLAMAFACTORY_KEYS & set(raw):
        return _llamafactory(raw, kind)
    return _plain(raw)


def _columns(raw: Any, what: str) -> dict[str, str]:
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in raw.items()
    ):
        raise ImportRefused(f"{what} must map names to column names (strings)")
    return raw


def _plain(raw: dict[str, Any]) -> Mapping:
    columns = _columns(raw, "the mapping")
    unknown = sorted(set(columns) - set(PLAIN_FIELDS))
    if unknown:
        raise ImportRefused(
            f"unknown field(s) in the mapping: {', '.join(unknown)} "
            f"(map these studio fields to your columns: {', '.join(PLAIN_FIELDS)})"
        )
    shown = ", ".join(f"{field} <- {column}" for field, column in columns.items())
    return Mapping(renames=dict(columns), reason=f"column mapping ({shown})")


def _llamafactory(entry: dict[str, Any], kind: str | None) -> Mapping:
    columns = _columns(entry.get("columns") or {}, "'columns'")
    media = [name for name in MEDIA_COLUMNS if columns.get(name)]
    if media:
        raise ImportRefused(f"the studio imports text only; the mapping names {', '.join(media)}")
    ranking = bool(entry.get("ranking"))
    formatting = entry.get("formatting") or _infer_formatting(columns)
    if formatting is None:
        return _lf_columns_only(columns, ranking)
    if formatting not in ("alpaca", "sharegpt", "openai"):
        raise ImportRefused(f"unknown LLaMA-Factory formatting {formatting!r} in the mapping")
    if formatting == "alpaca":
        return _lf_alpaca(columns or ALPACA_DEFAULT, ranking, kind)
    return _lf_sharegpt(entry, columns, ranking, formatting)


def _infer_formatting(columns: dict[str, str]) -> str | None:
    """No ``formatting``: a ``messages`` column means sharegpt, alpaca columns mean alpaca;
    otherwise (no columns, or only system/tools/label...) the layout is detected."""
    if "messages" in columns:
        return "sharegpt"
    if columns.keys() & {"prompt", "query", "response", "history", "text"}:
        return "alpaca"
    return None


def _lf_columns_only(columns: dict[str, str], ranking: bool) -> Mapping:
    renames = _known(columns, ALPACA_COLUMNS, "no formatting")
    implied = "preference" if ranking else "kto" if "label" in renames else None
    return Mapping(renames, None, implied, reason="LLaMA-Factory dataset_info entry")


def _known(columns: dict[str, str], table: dict[str, str], formatting: str) -> dict[str, str]:
    unknown = sorted(set(columns) - set(table) - set(MEDIA_COLUMNS))
    if unknown:
        raise ImportRefused(
            f"unknown column role(s) in the mapping ({formatting}): {', '.join(unknown)} "
            f"(known: {', '.join(table)})"
        )
    return {table[role]: column for role, column in columns.items() if role in table}


def _lf_alpaca(columns: dict[str, str], ranking: bool, kind: str | None) -> Mapping:
    renames = _known(columns, ALPACA_COLUMNS, "alpaca formatting")
    reason = "LLaMA-Factory dataset_info entry (alpaca"
    if ranking:
        return Mapping(renames, "alpaca_preference", "preference", reason=f"{reason}, ranking)")
    if set(renames) in ({"instruction"}, {"text"}):
        # LLaMA-Factory's pretraining convention: a lone prompt column is the text.
        column = renames.get("text") or renames["instruction"]
        if kind == "prompt":
            return Mapping({"prompt": column}, "trl_prompt", "prompt", None, reason)
        text_reason = f"{reason}, only a text column: pretraining text)"
        return Mapping({"text": column}, "text", "text", reason=text_reason)
    implied = "kto" if "label" in renames else None
    return Mapping(renames, "alpaca", implied, reason=f"{reason})")


def _tags(entry: dict[str, Any], formatting: str) -> dict[str, str] | None:
    """The entry's tags over LLaMA-Factory's defaults; none given: guessed per record
    (from/value or role/content), or role/content for the openai formatting."""
    if "tags" not in entry:
        if formatting != "openai":
            return None
        given = {"role_tag": "role", "content_tag": "content", "user_tag": "user"}
        given |= {"assistant_tag": "assistant", "observation_tag": "tool"}
    else:
        given = _columns(entry.get("tags") or {}, "'tags'")
    unknown = sorted(set(given) - set(DEFAULT_TAGS))
    if unknown:
        raise ImportRefused(f"unknown tag(s) in the mapping: {', '.join(unknown)}")
    return {**DEFAULT_TAGS, **given}


def _lf_sharegpt(
    entry: dict[str, Any], columns: dict[str, str], ranking: bool, formatting: str
) -> Mapping:
    known = _known(columns, SHAREGPT_COLUMNS, f"{formatting} formatting")
    renames = {"conversations": "conversations", **known}
    tags = _tags(entry, formatting)
    reason = f"LLaMA-Factory dataset_info entry ({formatting}"
    if ranking:
        return Mapping(renames, "sharegpt_preference", "preference", tags, f"{reason}, ranking)")
    implied = "kto" if "label" in renames else None
    return Mapping(renames, "sharegpt", implied, tags, f"{reason})")
