"""Pure functions from a TrainingSpec to TRL/peft objects (no I/O, no model loading)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peft import LoraConfig, TaskType
from trl import SFTConfig

from app.spec import TrainingSpec

# Spec fields passed to SFTConfig under the same name.
SFT_CONFIG_FIELDS = (
    "num_train_epochs",
    "max_steps",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "weight_decay",
    "max_grad_norm",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "completion_only_loss",
    "seed",
    "logging_steps",
    "save_steps",
    "save_total_limit",
)
LORA_CONFIG_FIELDS = ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")


def target_modules(spec: TrainingSpec) -> str | list[str]:
    if spec.lora_target_modules == "all-linear":
        return "all-linear"
    return [name.strip() for name in spec.lora_target_modules.split(",")]


def lora_config(spec: TrainingSpec) -> LoraConfig:
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=spec.lora_r,
        lora_alpha=spec.lora_alpha,
        lora_dropout=spec.lora_dropout,
        target_modules=target_modules(spec),
    )


def sft_config(
    spec: TrainingSpec, output_dir: Path, *, has_eval: bool = False, use_cpu: bool = False
) -> SFTConfig:
    kwargs: dict[str, Any] = {name: getattr(spec, name) for name in SFT_CONFIG_FIELDS}
    return SFTConfig(
        output_dir=str(output_dir),
        **kwargs,
        save_strategy="steps",
        eval_strategy="steps" if has_eval else "no",
        eval_steps=spec.logging_steps if has_eval else None,
        report_to="none",
        disable_tqdm=True,
        use_cpu=use_cpu,
        dataloader_num_workers=0,
        bf16=False if use_cpu else None,
    )
