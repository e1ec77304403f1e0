"""The JSON shapes of comparisons, arena pairs and generations (API and streams)."""

from __future__ import annotations

from typing import Any

from app import comparisons as cmp
from app.models import ArenaPair, Comparison, Generation


def generation_json(generation: Generation, labels: dict[str, str] | None = None) -> dict:
    return {
        "id": generation.id,
        "prompt_index": generation.prompt_index,
        "model": generation.model_key,
        "label": (labels or {}).get(generation.model_key, generation.model_key),
        "text": generation.text,
        "status": generation.status.value,
        "stopped": generation.stopped,
        "error": generation.error,
    }


def pair_json(pair: ArenaPair, texts: dict[int, Generation]) -> dict[str, Any]:
    """A pair as the arena shows it: the two answers, never which model wrote them."""
    a, b = texts[pair.a_generation_id], texts[pair.b_generation_id]
    return {
        "id": pair.id,
        "prompt_index": pair.prompt_index,
        "a": a.text,
        "b": b.text,
        "ready": a.status.value == b.status.value == "succeeded",
        "choice": pair.choice,
    }


def comparison_json(session: Any, comparison: Comparison) -> dict[str, Any]:
    labels = {m["key"]: m["label"] for m in comparison.models}
    outputs = cmp.generations(session, comparison.id)
    texts = {g.id: g for g in outputs}
    return {
        "id": comparison.id,
        "name": comparison.name,
        "status": comparison.status.value,
        "error": comparison.error,
        "models": comparison.models,
        "prompts": comparison.prompts,
        "decoding": comparison.decoding,
        "outputs": [generation_json(g, labels) for g in outputs],
        "pairs": [pair_json(p, texts) for p in cmp.pairs(session, comparison.id)],
        "win_rates": [
            {
                "model": r.key,
                "label": r.label,
                "wins": r.wins,
                "losses": r.losses,
                "ties": r.ties,
                "both_bad": r.both_bad,
                "win_rate": r.win_rate,
            }
            for r in cmp.win_rates(session, comparison)
        ],
        "created_at": comparison.created_at.isoformat(),
    }
