"""Presets: named partial specs grounded in common practice, each validated by TrainingSpec.

A preset only fills the form or an API body; the job still stores the full spec it ran with.
Sources of the numbers: LoRA rank 8-64 with alpha about 2r and lr 5e-5 to 2e-4 (the LoRA and
QLoRA papers, peft/TRL examples); full fine-tuning lr 1e-5 to 5e-5; warmup 1-5 %, cosine
decay, gradient clipping at 1.0, 1-3 epochs.

Preference methods train on an SFT'ed model (chain them from an SFT run) with a learning rate
about ten times below SFT's, for one epoch: DPO and KTO with beta 0.1 (the DPO paper, TRL's
defaults; TRL's KTO docs suggest lr 5e-7 to 5e-6 and weights near 1); ORPO with lambda (beta)
0.1 as in the ORPO paper, lr 8e-6 as common ORPO recipes use; SimPO with beta 2.0 and gamma 1.0
(gamma/beta 0.5, the SimPO authors' Llama-3 base setting); a reward model on LoRA at lr 5e-5
with a small reward-centring term (0.01, the value TRL's RewardConfig recommends).

Online RL starts from an SFT model too, at lr about 1e-6: GRPO with 4 answers per prompt, beta
0.04 and an exact-match rule reward (the DeepSeekMath GRPO paper's KL weight; TRL's GRPO docs);
PPO with TRL's defaults (KL 0.05, clip 0.2, value weight 0.1, 4 epochs per batch) and lr 3e-6 as
in TRL's PPO example, scored by a reward run's checkpoint the user chooses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.spec import TrainingSpec


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    description: str
    values: dict[str, Any] = field(default_factory=dict)
    # Fields the user must choose (ids of their own objects, such as a reward checkpoint): the
    # preset leaves them empty.
    requires: tuple[str, ...] = ()

    def spec(self, **choices: Any) -> TrainingSpec:
        return TrainingSpec.model_validate({**self.values, **choices})

    def hyperparameters(self) -> dict[str, Any]:
        """Every spec value, with the fields the user must choose left empty (validated with a
        stand-in id, since the spec refuses them missing)."""
        stand_ins = dict.fromkeys(self.requires, 1)
        return self.spec(**stand_ins).model_dump() | dict.fromkeys(self.requires)


_COMMON = {"lr_scheduler_type": "cosine", "warmup_steps": 0.03, "max_grad_norm": 1.0}

PRESETS: tuple[Preset, ...] = (
    Preset(
        "lora-balanced",
        "LoRA, balanced",
        "Rank 16, alpha 32, lr 2e-4, 2 epochs: a good first run for most instruction data.",
        {
            **_COMMON,
            "method": "sft",
            "adapter": "lora",
            "lora_r": 16,
            "lora_alpha": 32,
            "lora_dropout": 0.05,
            "learning_rate": 2e-4,
            "num_train_epochs": 2.0,
        },
    ),
    Preset(
        "lora-high-capacity",
        "LoRA, high capacity",
        "Rank 64 with rank-stabilised scaling and a lower lr, for larger or harder datasets.",
        {
            **_COMMON,
            "method": "sft",
            "adapter": "lora",
            "lora_r": 64,
            "lora_alpha": 128,
            "use_rslora": True,
            "lora_dropout": 0.05,
            "learning_rate": 1e-4,
            "num_train_epochs": 2.0,
        },
    ),
    Preset(
        "dora",
        "DoRA",
        "Weight-decomposed LoRA (rank 16): closer to full fine-tuning at LoRA's memory cost.",
        {
            **_COMMON,
            "method": "sft",
            "adapter": "dora",
            "lora_r": 16,
            "lora_alpha": 32,
            "learning_rate": 1e-4,
            "num_train_epochs": 2.0,
        },
    ),
    Preset(
        "qlora-4bit",
        "QLoRA, 4-bit NF4",
        "NF4 base with double quantization and LoRA rank 16 on top, for large models on one GPU.",
        {
            **_COMMON,
            "method": "sft",
            "adapter": "qlora",
            "quantization_bits": 4,
            "lora_r": 16,
            "lora_alpha": 32,
            "lora_dropout": 0.05,
            "learning_rate": 2e-4,
            "num_train_epochs": 2.0,
            "gradient_checkpointing": "auto",  # on when the estimate says it would not fit
            "optim": "paged_adamw_8bit",  # the QLoRA paper's paged optimizer
        },
    ),
    Preset(
        "full",
        "Full fine-tuning",
        "Every weight trains; lr 2e-5 with 5 % warmup. Needs the most memory.",
        {
            **_COMMON,
            "method": "sft",
            "adapter": "full",
            "learning_rate": 2e-5,
            "warmup_steps": 0.05,
            "num_train_epochs": 2.0,
            "weight_decay": 0.01,
        },
    ),
    Preset(
        "pretrain-lora",
        "Continual pretraining, LoRA",
        "Raw text on LoRA rank 64 at lr 1e-4, one epoch: teach a domain's vocabulary and "
        "facts before instruction tuning (chain an SFT run from it).",
        {
            **_COMMON,
            "method": "pretrain",
            "adapter": "lora",
            "lora_r": 64,
            "lora_alpha": 128,
            "lora_dropout": 0.05,
            "learning_rate": 1e-4,
            "num_train_epochs": 1.0,
        },
    ),
    Preset(
        "smoke-test",
        "Smoke test",
        "20 steps, metrics every step: check data, template and set-up before a long run.",
        {
            "method": "sft",
            "adapter": "lora",
            "max_steps": 20,
            "logging_steps": 1,
            "save_steps": 20,
            "learning_rate": 2e-4,
            "warmup_steps": 0.0,
        },
    ),
)

_PREFERENCE = {
    **_COMMON,
    "adapter": "lora",
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "num_train_epochs": 1.0,
}

PREFERENCE_PRESETS: tuple[Preset, ...] = (
    Preset(
        "dpo-lora",
        "DPO on LoRA",
        "Sigmoid DPO, beta 0.1, lr 5e-6, one epoch: align an SFT model to chosen-over-rejected "
        "pairs (start it from the SFT run's final model).",
        {
            **_PREFERENCE,
            "method": "dpo",
            "beta": 0.1,
            "loss_type": "sigmoid",
            "learning_rate": 5e-6,
        },
    ),
    Preset(
        "kto-lora",
        "KTO on LoRA",
        "Answers labelled good or bad, beta 0.1, equal weights, lr 5e-6; raise the desirable "
        "weight when good answers are the rarer label.",
        {
            **_PREFERENCE,
            "method": "kto",
            "beta": 0.1,
            "desirable_weight": 1.0,
            "undesirable_weight": 1.0,
            "learning_rate": 5e-6,
        },
    ),
    Preset(
        "orpo-lora",
        "ORPO on LoRA",
        "SFT and preference in one stage, no reference model: lambda 0.1, lr 8e-6.",
        {**_PREFERENCE, "method": "orpo", "beta": 0.1, "learning_rate": 8e-6},
    ),
    Preset(
        "simpo-lora",
        "SimPO on LoRA",
        "Reference-free, length-normalised: beta 2.0, target margin gamma 1.0, lr 5e-6.",
        {
            **_PREFERENCE,
            "method": "simpo",
            "beta": 2.0,
            "simpo_gamma": 1.0,
            "cpo_alpha": 0.0,
            "learning_rate": 5e-6,
        },
    ),
    Preset(
        "reward-lora",
        "Reward model on LoRA",
        "A score head on the model, trained on preference pairs at lr 5e-5 with reward "
        "centring 0.01: the reward for PPO or for ranking answers.",
        {
            **_PREFERENCE,
            "method": "reward",
            "center_rewards_coefficient": 0.01,
            "learning_rate": 5e-5,
        },
    ),
)

RL_PRESETS: tuple[Preset, ...] = (
    Preset(
        "grpo-lora",
        "GRPO on LoRA",
        "Group-relative RL from an SFT model: 4 answers per prompt scored by an exact-match "
        "rule against each row's reference, beta 0.04, lr 1e-6.",
        {
            **_PREFERENCE,
            "method": "grpo",
            "beta": 0.04,
            "num_generations": 4,
            "per_device_train_batch_size": 4,
            "max_completion_length": 128,
            "reward_functions": [{"type": "exact", "weight": 1.0}],
            "learning_rate": 1e-6,
        },
    ),
    Preset(
        "ppo-lora",
        "PPO on LoRA",
        "RLHF from an SFT model, scored by one of your reward runs (choose its checkpoint): "
        "KL 0.05, clip 0.2, 4 epochs per batch of rollouts, lr 3e-6.",
        {
            **_PREFERENCE,
            "method": "ppo",
            "kl_coef": 0.05,
            "cliprange": 0.2,
            "vf_coef": 0.1,
            "num_ppo_epochs": 4,
            "max_completion_length": 128,
            "learning_rate": 3e-6,
        },
        requires=("reward_checkpoint_id",),
    ),
)

PRESETS = PRESETS + PREFERENCE_PRESETS + RL_PRESETS
PRESETS_BY_NAME = {preset.name: preset for preset in PRESETS}


def preset_values(name: str | None) -> dict[str, Any]:
    """The preset's spec values with every default filled in; {} for no or an unknown name."""
    preset = PRESETS_BY_NAME.get(name or "")
    return preset.hyperparameters() if preset else {}
