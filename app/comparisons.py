"""Side-by-side comparisons, the blind arena, and the playground.

A comparison asks several models (the base model, checkpoints across runs) the same prompts with
one set of decoding parameters; each answer is a ``Generation`` the worker streams into. For every
prompt and every two models an ``ArenaPair`` shows both answers blind, in a random order; votes
give a win-rate table and become a preference dataset (prompt, chosen, rejected) that a DPO run
can train on directly. A playground turn is a lone generation.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.access import NotFound, get_owned, get_owned_checkpoint
from app.data.rows import RowWriter
from app.data.rowtext import as_messages
from app.models import (
    ArenaPair,
    BaseModel,
    Checkpoint,
    Comparison,
    Dataset,
    DatasetRow,
    Generation,
    Job,
    JobStatus,
    User,
    utcnow,
)

CHOICES = ("a", "b", "tie", "both_bad")
MAX_PROMPTS = 50
MAX_MODELS = 6


class ComparisonRequestError(ValueError):
    pass


@dataclass(frozen=True)
class DecodingIn:
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.max_new_tokens <= 2048:
            raise ComparisonRequestError("max_new_tokens must be between 1 and 2048")
        if not 0 <= self.temperature <= 5 or not 0 < self.top_p <= 1:
            raise ComparisonRequestError("temperature must be in [0, 5] and top_p in (0, 1]")


def model_key_for_checkpoint(checkpoint_id: int) -> str:
    return f"checkpoint:{checkpoint_id}"


def _models(
    session: Session, user: User, checkpoint_ids: list[int], include_base: bool
) -> list[dict[str, str]]:
    models: list[dict[str, str]] = []
    base_ids: list[int] = []
    for checkpoint_id in dict.fromkeys(checkpoint_ids):
        try:
            checkpoint = get_owned_checkpoint(session, checkpoint_id, user)
        except NotFound:
            raise ComparisonRequestError(f"no checkpoint {checkpoint_id}") from None
        label = f"{checkpoint.job.name} · step {checkpoint.step}"
        models.append({"key": model_key_for_checkpoint(checkpoint.id), "label": label})
        base_ids.append(checkpoint.job.base_model_id)
    if include_base:
        for base_id in dict.fromkeys(base_ids) or _first_base(session):
            base = session.get(BaseModel, base_id)
            assert base is not None
            models.insert(0, {"key": f"base:{base.id}", "label": f"{base.name} (base)"})
    if len(models) < 1 or len(models) > MAX_MODELS:
        raise ComparisonRequestError(f"choose 1 to {MAX_MODELS} models (the base counts as one)")
    return models


def _first_base(session: Session) -> list[int]:
    first = session.scalar(select(BaseModel.id).order_by(BaseModel.id))
    return [first] if first is not None else []


def prompt_from_row(row: dict[str, Any]) -> list[dict[str, Any]] | None:
    """What a dataset row asks: its prompt, or its conversation before the last answer."""
    if "prompt" in row:
        return as_messages(row["prompt"])
    messages = as_messages(row.get("messages"))
    answers = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    return messages[: answers[-1]] if answers and answers[-1] > 0 else None


def _prompts(
    session: Session,
    user: User,
    prompts: list[Any] | None,
    dataset_id: int | None,
    limit: int,
) -> list[list[dict[str, Any]]]:
    if prompts:
        result = [as_messages(p) for p in prompts]
    elif dataset_id is not None:
        get_owned(session, Dataset, dataset_id, user)
        rows = session.scalars(
            select(DatasetRow.data)
            .where(DatasetRow.dataset_id == dataset_id)
            .order_by(DatasetRow.index)
            .limit(limit)
        )
        result = [p for p in map(prompt_from_row, rows) if p]
    else:
        raise ComparisonRequestError("give prompts or a dataset_id")
    result = [p for p in result if p and any(m.get("content", "").strip() for m in p)]
    if not result:
        raise ComparisonRequestError("no usable prompt: each needs a non-empty user message")
    if len(result) > MAX_PROMPTS:
        raise ComparisonRequestError(f"at most {MAX_PROMPTS} prompts per comparison")
    return result


def create_comparison(
    session: Session,
    user: User,
    *,
    checkpoint_ids: list[int],
    include_base: bool = True,
    prompts: list[Any] | None = None,
    dataset_id: int | None = None,
    limit: int = 10,
    decoding: DecodingIn | None = None,
    name: str = "",
    seed: int | None = None,
) -> Comparison:
    """A comparison with its generations (queued) and arena pairs (blind, random order)."""
    models = _models(session, user, checkpoint_ids, include_base)
    asked = _prompts(session, user, prompts, dataset_id, limit)
    decoding = decoding or DecodingIn()
    comparison = Comparison(
        owner_id=user.id,
        name=(name or f"{len(models)} models on {len(asked)} prompts")[:200],
        models=models,
        prompts=asked,
        decoding=decoding.__dict__,
    )
    session.add(comparison)
    session.flush()
    cells: dict[tuple[int, str], Generation] = {}
    for index, messages in enumerate(asked):
        for model in models:
            cells[index, model["key"]] = Generation(
                owner_id=user.id,
                comparison_id=comparison.id,
                prompt_index=index,
                model_key=model["key"],
                messages=messages,
                decoding=comparison.decoding,
            )
    session.add_all(cells.values())
    session.flush()
    shuffle = random.Random(seed)
    pairs = []
    for index in range(len(asked)):
        for first, second in itertools.combinations([m["key"] for m in models], 2):
            a, b = (first, second) if shuffle.random() < 0.5 else (second, first)
            pairs.append(
                ArenaPair(
                    comparison_id=comparison.id,
                    prompt_index=index,
                    a_generation_id=cells[index, a].id,
                    b_generation_id=cells[index, b].id,
                )
            )
    shuffle.shuffle(pairs)  # the arena shows pairs in this order
    session.add_all(pairs)
    session.flush()
    return comparison


def generations(session: Session, comparison_id: int) -> list[Generation]:
    return list(
        session.scalars(
            select(Generation)
            .where(Generation.comparison_id == comparison_id)
            .order_by(Generation.prompt_index, Generation.id)
        )
    )


def pairs(session: Session, comparison_id: int) -> list[ArenaPair]:
    return list(
        session.scalars(
            select(ArenaPair).where(ArenaPair.comparison_id == comparison_id).order_by(ArenaPair.id)
        )
    )


def vote(session: Session, comparison: Comparison, pair_id: int, choice: str) -> ArenaPair:
    if choice not in CHOICES:
        raise ComparisonRequestError(f"choice must be one of {', '.join(CHOICES)}")
    pair = session.get(ArenaPair, pair_id)
    if pair is None or pair.comparison_id != comparison.id:
        raise NotFound("arena pair")
    pair.choice, pair.voted_at = choice, utcnow()
    session.flush()
    return pair


def next_unvoted(session: Session, comparison_id: int) -> ArenaPair | None:
    """The next pair to judge whose two answers are both finished."""
    done = {g.id for g in generations(session, comparison_id) if g.status == JobStatus.succeeded}
    for pair in pairs(session, comparison_id):
        if pair.choice is None and {pair.a_generation_id, pair.b_generation_id} <= done:
            return pair
    return None


@dataclass(frozen=True)
class WinRate:
    key: str
    label: str
    wins: int
    losses: int
    ties: int
    both_bad: int

    @property
    def judged(self) -> int:
        return self.wins + self.losses + self.ties + self.both_bad

    @property
    def win_rate(self) -> float | None:
        """Wins plus half the ties, over every judged pair the model was in."""
        return (self.wins + 0.5 * self.ties) / self.judged if self.judged else None


def win_rates(session: Session, comparison: Comparison) -> list[WinRate]:
    by_id = {g.id: g.model_key for g in generations(session, comparison.id)}
    tally: dict[str, Counter] = {m["key"]: Counter() for m in comparison.models}
    for pair in pairs(session, comparison.id):
        if pair.choice is None:
            continue
        a, b = by_id[pair.a_generation_id], by_id[pair.b_generation_id]
        if pair.choice in ("tie", "both_bad"):
            tally[a][pair.choice] += 1
            tally[b][pair.choice] += 1
        else:
            winner, loser = (a, b) if pair.choice == "a" else (b, a)
            tally[winner]["win"] += 1
            tally[loser]["loss"] += 1
    rates = [
        WinRate(m["key"], m["label"], t["win"], t["loss"], t["tie"], t["both_bad"])
        for m in comparison.models
        for t in [tally[m["key"]]]
    ]
    return sorted(rates, key=lambda r: -1 if r.win_rate is None else -r.win_rate)


def preference_rows(session: Session, comparison: Comparison) -> list[dict[str, Any]]:
    """Each decided vote (a or b) as a preference row; ties and both-bad teach no preference."""
    texts = {g.id: g for g in generations(session, comparison.id)}
    rows = []
    for pair in pairs(session, comparison.id):
        if pair.choice not in ("a", "b"):
            continue
        a, b = texts[pair.a_generation_id], texts[pair.b_generation_id]
        chosen, rejected = (a, b) if pair.choice == "a" else (b, a)
        rows.append(
            {
                "prompt": comparison.prompts[pair.prompt_index],
                "chosen": [{"role": "assistant", "content": chosen.text}],
                "rejected": [{"role": "assistant", "content": rejected.text}],
            }
        )
    return rows


def votes_to_dataset(session: Session, user: User, comparison: Comparison) -> Dataset:
    rows = preference_rows(session, comparison)
    if not rows:
        raise ComparisonRequestError("no decided votes yet: vote A or B on some pairs first")
    dataset = Dataset(
        owner_id=user.id,
        name=f"arena votes · {comparison.name}"[:200],
        kind="preference",
        format="arena",
        num_rows=len(rows),
        detection=f"preference pairs from the blind votes of comparison {comparison.id}",
        operation={"op": "arena_votes", "comparison_id": comparison.id, "rows": len(rows)},
    )
    session.add(dataset)
    session.flush()
    writer = RowWriter(session, dataset.id)
    writer.add_all(rows)
    writer.flush()
    dataset.content_hash = writer.hexdigest()
    session.flush()
    return dataset


def create_playground_turn(
    session: Session,
    user: User,
    *,
    model_key: str,
    messages: list[dict[str, Any]],
    decoding: DecodingIn | None = None,
) -> Generation:
    """One playground answer to a conversation (its last message is the user's)."""
    kind, _, ident = model_key.partition(":")
    if kind == "checkpoint" and ident.isdigit():
        try:
            get_owned_checkpoint(session, int(ident), user)
        except NotFound:
            raise ComparisonRequestError(f"no checkpoint {ident}") from None
    elif not (kind == "base" and ident.isdigit() and session.get(BaseModel, int(ident))):
        raise ComparisonRequestError(f"no model {model_key!r}")
    conversation = as_messages(messages)
    if not conversation or conversation[-1].get("role") != "user":
        raise ComparisonRequestError("the conversation must end with a user message")
    generation = Generation(
        owner_id=user.id,
        model_key=model_key,
        messages=conversation,
        decoding=(decoding or DecodingIn()).__dict__,
    )
    session.add(generation)
    session.flush()
    return generation


def owned_generation(session: Session, user: User, generation_id: int) -> Generation:
    return get_owned(session, Generation, generation_id, user)


def list_comparisons(session: Session, user: User) -> list[Comparison]:
    return list(
        session.scalars(
            select(Comparison).where(Comparison.owner_id == user.id).order_by(Comparison.id.desc())
        )
    )


def checkpoint_choices(session: Session, user: User) -> list[tuple[Checkpoint, Job]]:
    """The user's checkpoints that models can be loaded from, newest run first."""
    return list(
        session.execute(
            select(Checkpoint, Job)
            .join(Job, Checkpoint.job_id == Job.id)
            .where(Job.owner_id == user.id, Job.method != "reward")
            .order_by(Job.id.desc(), Checkpoint.step.desc())
        ).tuples()
    )
