"""The reward side of online RL (PPO, GRPO): rule rewards, and reward models from a reward run's
checkpoint or a registered model; and the extra objects each RL trainer takes.

GRPO takes a list of reward functions (``reward_funcs``) weighted by ``reward_weights`` (see
``worker.training.mapping.reward_weights``): the spec's rules in order, then the reward model.
PPO takes a reward model and a value model (initialised from the reward model, as in the
InstructGPT recipe); with a peft adapter its reference is the policy with the adapter disabled.
Each is wired in by its method's entry in ``worker.training.methods.WORKER_METHODS``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from sqlalchemy.orm import Session
from transformers import PreTrainedTokenizerBase

from app.models import BaseModel, Checkpoint
from app.spec import RewardRule, TrainingSpec
from worker.checkpoints import load_scorer, materialize_start
from worker.training.chaining import checkpoint_stage, lineage_stages

RewardFunc = Callable[..., list[float]]


def answer_text(completion: Any) -> str:
    """A completion as text: conversational completions are a list of messages."""
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    return str(completion)


def _normalise(text: str | None) -> str:
    return " ".join((text or "").split()).casefold()


def exact_reward(rule: RewardRule) -> RewardFunc:
    def exact(completions: list, reference: list | None = None, **_: Any) -> list[float]:
        references = reference or [None] * len(completions)
        return [
            float(ref is not None and _normalise(answer_text(c)) == _normalise(ref))
            for c, ref in zip(completions, references, strict=True)
        ]

    return exact


def regex_reward(rule: RewardRule) -> RewardFunc:
    pattern = re.compile(rule.pattern or "")

    def regex(completions: list, **_: Any) -> list[float]:
        return [float(pattern.search(answer_text(c)) is not None) for c in completions]

    return regex


def length_reward(rule: RewardRule) -> RewardFunc:
    target = rule.target or 1

    def length(completions: list, **_: Any) -> list[float]:
        return [max(0.0, 1.0 - abs(len(answer_text(c)) - target) / target) for c in completions]

    return length


RULES: dict[str, Callable[[RewardRule], RewardFunc]] = {
    "exact": exact_reward,
    "regex": regex_reward,
    "length": length_reward,
}


def rule_rewards(rules: list[RewardRule]) -> list[RewardFunc]:
    return [RULES[rule.type](rule) for rule in rules]


def reward_model_dir(
    session: Session, spec: TrainingSpec, jobs_dir: Path, work_dir: Path, *, write: bool = True
) -> Path | None:
    """The reward model's weights as one directory: a registered model as it is, or a reward
    run's checkpoint with its adapter (and the run's ancestors) folded into its base (written
    by rank 0 alone: ``write=False`` only says where)."""
    if spec.reward_model is not None:
        model = session.get(BaseModel, spec.reward_model)
        assert model is not None
        return Path(model.path)
    if spec.reward_checkpoint_id is None:
        return None
    checkpoint = session.get(Checkpoint, spec.reward_checkpoint_id)
    assert checkpoint is not None
    job = checkpoint.job
    chain = [*lineage_stages(session, job, jobs_dir), checkpoint_stage(checkpoint, jobs_dir)]
    base = Path(job.base_model.path)
    return materialize_start(base, chain, work_dir, dtype=torch.float32, write=write)


def grpo_extras(
    spec: TrainingSpec, reward_dir: Path | None, tokenizer: PreTrainedTokenizerBase
) -> dict[str, Any]:
    """GRPO's reward functions: the rules, then the reward model when there is one."""
    funcs: list[Any] = rule_rewards(spec.reward_functions)
    processing: list[Any] = [None] * len(funcs)
    if reward_dir is not None:
        funcs.append(load_scorer(reward_dir, tokenizer.pad_token_id))
        processing.append(tokenizer)
    return {"reward_funcs": funcs, "reward_processing_classes": processing}


def ppo_extras(
    spec: TrainingSpec, reward_dir: Path | None, tokenizer: PreTrainedTokenizerBase
) -> dict[str, Any]:
    assert reward_dir is not None, "PPO needs a reward model"
    return {
        "ref_model": None,  # peft: the adapter disabled; otherwise TRL copies the policy
        "reward_model": load_scorer(reward_dir, tokenizer.pad_token_id),
        "value_model": load_scorer(reward_dir, tokenizer.pad_token_id),
    }
