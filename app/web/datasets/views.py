"""What the dataset templates show: rows as labelled sections, operations in words, histogram
bars. Plain values only; the templates escape everything they print."""

from __future__ import annotations

from typing import Any

from app.data.rowtext import as_messages

SECTION_TITLES = (("prompt", "Prompt"), ("chosen", "Chosen"), ("rejected", "Rejected"))


def _messages(value: Any) -> list[dict[str, str]]:
    return [{"role": str(m.get("role", "")), "text": m["content"]} for m in as_messages(value)]


def display_row(row: dict[str, Any]) -> dict[str, Any]:
    """{"sections": [{"title", "messages": [{"role", "text"}]}], "text", "reference", "label"}."""
    sections: list[dict[str, Any]] = []
    if "messages" in row:
        sections.append({"title": None, "messages": _messages(row["messages"])})
    else:
        sections += [
            {"title": title, "messages": _messages(row[key])}
            for key, title in SECTION_TITLES
            if key in row
        ]
    label = row.get("label")
    return {
        "sections": sections,
        "text": row.get("text") if isinstance(row.get("text"), str) else None,
        "reference": row.get("reference") if isinstance(row.get("reference"), str) else None,
        "label": label if isinstance(label, bool) else None,
    }


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def describe_operation(op: dict[str, Any] | None) -> str:
    """One line for a version's operation, e.g. 'dedup (near=True, threshold=0.8): 100 -> 93'."""
    if not op:
        return "upload"
    name = str(op.get("op", "operation"))
    if op.get("part"):
        name += f" ({op['part']} part)"
    text = f"{name} [{_params_text(op.get('params') or {})}]"
    if "rows_in" in op and "rows_out" in op:
        text += f": {op['rows_in']} → {op['rows_out']} rows"
    elif "train_rows" in op and "eval_rows" in op:
        text += f": {op['train_rows']} train / {op['eval_rows']} eval rows"
    return text


def histogram_bars(
    hist: dict[str, list[int]] | None, limit: int | None = None
) -> list[dict[str, Any]]:
    """Bars with a height in percent of the tallest; ``over`` when the bin passes ``limit``."""
    if not hist:
        return []
    counts, edges = hist["counts"], hist["edges"]
    tallest = max(counts) or 1
    return [
        {
            "low": edges[i],
            "high": edges[i + 1] - 1,
            "count": count,
            "height": round(100 * count / tallest, 1),
            "over": limit is not None and edges[i + 1] - 1 > limit,
        }
        for i, count in enumerate(counts)
    ]


def percent(value: float) -> str:
    return f"{100 * value:.1f}%"
