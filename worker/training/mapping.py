"""Pure functions from a TrainingSpec to TRL/peft objects (no I/O, no model loading).

The adapter side (peft configs, bitsandbytes, freeze plans) lives in ``worker.training.adapters``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trl import SFTConfig

from app.spec import TrainingSpec
from worker.training.adapters import (
    ADAPTER_FIELDS,
    LORA_CONFIG_FIELDS,
    lora_config,
    peft_config,
    quantization_config,
    target_modules,
)

__all__ = [
    "ADAPTER_FIELDS",
    "LORA_CONFIG_FIELDS",
    "SFT_CONFIG_FIELDS",
    "SFT_CONFIG_RENAMED",
    "lora_config",
    "peft_config",
    "quantization_config",
    "sft_config",
    "target_modules",
]

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
# Spec fields passed to SFTConfig under another name: transformers 5.23 renamed
# gradient_checkpointing (still TRL's and peft's word for it) to activation_checkpointing.
SFT_CONFIG_RENAMED = {"gradient_checkpointing": "activation_checkpointing"}


def sft_config(
    spec: TrainingSpec, output_dir: Path, *, has_eval: bool = False, use_cpu: bool = False
) -> SFTConfig:
    kwargs: dict[str, Any] = {name: getattr(spec, name) for name in SFT_CONFIG_FIELDS}
    kwargs |= {theirs: getattr(spec, ours) for ours, theirs in SFT_CONFIG_RENAMED.items()}
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
