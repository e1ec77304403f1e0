"""The one table of training methods: what each trains on and how the rest of the studio treats it.

The spec (its ``method`` choices and which knobs belong to which method), the job form, chaining,
presets, the estimate, evaluation, the stop check and the worker's dispatch all read this table.
Adding a method is one entry here, one entry in ``worker.training.methods.WORKER_METHODS`` (TRL
config, trainer, row layout), at least one preset in ``app.presets`` and its tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# What sits on top of the transformer: the language-model head, or a one-output score head.
Head = Literal["causal_lm", "score"]
# How evaluation scores a preference pair with a model trained by this method: a DPO-family
# policy by its implicit reward against the run's starting model; ORPO and SimPO (reference-free)
# by the length-normalised log-likelihood they reward; a reward model by its score head; anything
# else by the answers' log-likelihood.
PairScoring = Literal["implicit_reward", "normalised_likelihood", "score", "likelihood"]
# Where an online RL method gets its rewards.
RewardSource = Literal["none", "model", "model_or_rules"]

PROMPT_LEARNING = ("prefix", "prompt", "ptuning")
_POSITIONAL = (
    "TRL's preference and reward trainers score every answer token by position, and virtual "
    "tokens shift those positions. Use lora, dora, qlora, ia3, freeze or full"
)
_NO_PROMPT_LEARNING = dict.fromkeys(PROMPT_LEARNING, _POSITIONAL)


STOP_CHECK_FIELD = "stop_check_prompts"


@dataclass(frozen=True)
class TrainingMethod:
    name: str
    label: str
    dataset_kind: str  # the canonical row kind it trains on (app.data.canonical.KINDS)
    # Spec fields that belong to this method (a field no method lists applies to every method).
    fields: tuple[str, ...]
    next_stage: str  # the method a run from this method's checkpoint usually uses
    reference_model: bool = False  # trains against a frozen copy of its starting model
    generates: bool = False  # samples answers during training (online RL)
    head: Head = "causal_lm"
    pair_scoring: PairScoring = "likelihood"
    stop_check: bool = True  # after training, check that the model ends its chat answers
    reward_source: RewardSource = "none"
    # Adapters it cannot train, with the reason the request is refused.
    refused_adapters: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.stop_check:  # every method with the stop check takes its knob
            object.__setattr__(self, "fields", (*self.fields, STOP_CHECK_FIELD))

    @property
    def is_reward_model(self) -> bool:
        return self.head == "score"


_TABLE = (
    TrainingMethod(
        "sft",
        "SFT (supervised fine-tuning)",
        "sft",
        (
            "assistant_only_loss",
            "completion_only_loss",
            "neftune_noise_alpha",
            "packing",
            "liger_kernels",
        ),
        next_stage="dpo",
    ),
    TrainingMethod(
        "pretrain",
        "Continual pretraining (raw text)",
        "text",
        ("packing", "liger_kernels"),
        next_stage="sft",
        stop_check=False,
    ),
    TrainingMethod(
        "dpo",
        "DPO (direct preference optimisation)",
        "preference",
        ("beta", "loss_type", "label_smoothing"),
        next_stage="dpo",
        reference_model=True,
        pair_scoring="implicit_reward",
        refused_adapters=_NO_PROMPT_LEARNING,
    ),
    TrainingMethod(
        "kto",
        "KTO (answers labelled good / bad)",
        "kto",
        ("beta", "desirable_weight", "undesirable_weight"),
        next_stage="kto",
        reference_model=True,
        pair_scoring="implicit_reward",
        refused_adapters=_NO_PROMPT_LEARNING,
    ),
    TrainingMethod(
        "orpo",
        "ORPO (odds-ratio preference, no reference model)",
        "preference",
        ("beta",),
        next_stage="orpo",
        pair_scoring="normalised_likelihood",
        refused_adapters=_NO_PROMPT_LEARNING,
    ),
    TrainingMethod(
        "simpo",
        "SimPO (CPO with the SimPO loss)",
        "preference",
        ("beta", "simpo_gamma", "cpo_alpha"),
        next_stage="simpo",
        pair_scoring="normalised_likelihood",
        refused_adapters=_NO_PROMPT_LEARNING,
    ),
    TrainingMethod(
        "reward",
        "Reward model (scores preference pairs)",
        "preference",
        ("center_rewards_coefficient",),
        next_stage="reward",
        head="score",
        pair_scoring="score",
        stop_check=False,
        refused_adapters={
            **_NO_PROMPT_LEARNING,
            "freeze": "a reward model needs its new score head trained, which freeze leaves "
            "frozen. Use lora, dora, qlora, ia3 or full",
        },
    ),
    TrainingMethod(
        "ppo",
        "PPO (RLHF with a reward model)",
        "prompt",
        (
            "max_completion_length",
            "temperature",
            "kl_coef",
            "cliprange",
            "vf_coef",
            "num_ppo_epochs",
            "reward_checkpoint_id",
            "reward_model",
        ),
        next_stage="ppo",
        reference_model=True,
        generates=True,
        stop_check=False,
        reward_source="model",
        refused_adapters={
            **dict.fromkeys(
                (*PROMPT_LEARNING, "qlora", "ia3"), "PPO trains full, freeze, lora or dora policies"
            ),
        },
    ),
    TrainingMethod(
        "grpo",
        "GRPO (group-relative RL with rule rewards or a reward model)",
        "prompt",
        (
            "beta",
            "num_generations",
            "max_completion_length",
            "temperature",
            "reward_functions",
            "reward_checkpoint_id",
            "reward_model",
        ),
        next_stage="grpo",
        reference_model=True,
        generates=True,
        reward_source="model_or_rules",
        refused_adapters=_NO_PROMPT_LEARNING,
    ),
)

METHODS: dict[str, TrainingMethod] = {method.name: method for method in _TABLE}
METHOD_NAMES: tuple[str, ...] = tuple(METHODS)


def get_method(name: str) -> TrainingMethod:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}") from None


def is_reward_model(method: str | None) -> bool:
    """Whether checkpoints of ``method`` carry a score head instead of a language-model head."""
    return method is not None and method in METHODS and METHODS[method].is_reward_model


def packs(spec: Any) -> bool:
    """Whether a ``TrainingSpec``'s rows are packed: its method takes the knob (SFT,
    pretraining) and it is on (the default)."""
    return bool(spec.packing) and "packing" in get_method(spec.method).fields


def methods_with_field(name: str) -> tuple[str, ...] | None:
    """The methods a spec field belongs to; None when it applies to every method."""
    owners = tuple(method.name for method in _TABLE if name in method.fields)
    return owners or None


def next_stage_methods(parent_method: str) -> list[str]:
    """The methods a run from a ``parent_method`` checkpoint may use, the usual next one first:
    a score head only feeds another reward model; a language model feeds any method."""
    parent = get_method(parent_method)
    allowed = [m.name for m in _TABLE if m.is_reward_model or not parent.is_reward_model]
    return sorted(allowed, key=lambda method: method != parent.next_stage)
