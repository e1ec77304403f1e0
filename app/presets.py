"""Presets: named partial specs grounded in common practice, each validated by TrainingSpec.

A preset only fills the form or an API body; the job still stores the full spec it ran with.
Sources of the numbers: LoRA rank 8-64 with alpha about 2r and lr 5e-5 to 2e-4 (the LoRA and
QLoRA papers, peft/TRL examples); full fine-tuning lr 1e-5 to 5e-5; warmup 1-5 %, cosine
decay, gradient clipping at 1.0, 1-3 epochs.
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

    def spec(self) -> TrainingSpec:
        return TrainingSpec.model_validate(self.values)


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
            "gradient_checkpointing": True,
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

PRESETS_BY_NAME = {preset.name: preset for preset in PRESETS}


def preset_values(name: str | None) -> dict[str, Any]:
    """The preset's spec values with every default filled in; {} for no or an unknown name."""
    preset = PRESETS_BY_NAME.get(name or "")
    return preset.spec().model_dump() if preset else {}
