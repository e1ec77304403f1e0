"""Rows the GPU check trains on, made here: instruction pairs and preference pairs on a few
topics, of mixed lengths (no file outside the checkout)."""

from __future__ import annotations

import json
import random

TOPICS = ("colour", "river", "planet", "recipe", "poem", "bridge", "garden", "engine")
WORDS = [
    "bright",
    "quiet",
    "rapid",
    "gentle",
    "ancient",
    "modern",
    "silver",
    "golden",
    "narrow",
    "wide",
    "calm",
    "bold",
    "soft",
    "steady",
    "curious",
    "patient",
    "careful",
    "simple",
    "clever",
    "humble",
]


# --- data -------------------------------------------------------------------------------


def sft_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        words = rng.sample(WORDS, 6)
        answer = " ".join(
            f"The {w} {topic} number {i} is {rng.choice(WORDS)} and {rng.choice(WORDS)}."
            for w in words
        )
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"Describe a {words[0]} {topic} (#{i})."},
                    {"role": "assistant", "content": answer},
                ]
            }
        )
    return rows


def preference_rows(n: int, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        good = " ".join(f"A {rng.choice(WORDS)} {topic} is worth a look." for _ in range(5))
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"Tell me about a {topic} (#{i})."}],
                "chosen": [{"role": "assistant", "content": f"Gladly! {good}"}],
                "rejected": [{"role": "assistant", "content": "No. " * 12}],
            }
        )
    return rows


def jsonl(rows: list[dict]) -> bytes:
    return "\n".join(json.dumps(row) for row in rows).encode()


# --- the model --------------------------------------------------------------------------
