"""Pure functions from a TrainingSpec to TRL/peft objects (no I/O, no model loading): the
method's TRL config (``method_config``), and the adapter's peft / bitsandbytes configs.

The adapter side (peft configs, bitsandbytes, freeze plans) lives in ``worker.training.adapters``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from transformers import TrainingArguments
from trl import DPOConfig, KTOConfig, RewardConfig, SFTConfig

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # ORPO and CPO live in trl.experimental

from trl.experimental.cpo import CPOConfig
from trl.experimental.orpo import ORPOConfig

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
    "METHOD_CONFIG_FIELDS",
    "SFT_CONFIG_FIELDS",
    "SFT_CONFIG_RENAMED",
    "lora_config",
    "method_config",
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


# Method knobs, each passed under the same name to the configs of the methods it applies to
# (``methods`` in its spec metadata). SimPO maps to CPOConfig with loss_type="simpo", so the
# spec's loss_type (DPO's choices) reaches DPOConfig only, as a one-item list.
METHOD_CONFIG_FIELDS = (
    "beta",
    "loss_type",
    "label_smoothing",
    "desirable_weight",
    "undesirable_weight",
    "simpo_gamma",
    "cpo_alpha",
    "center_rewards_coefficient",
)
# The TRL config class of each method (SFTTrainer trains pretrain on the "text" column).
METHOD_CONFIGS: dict[str, type[TrainingArguments]] = {
    "sft": SFTConfig,
    "pretrain": SFTConfig,
    "dpo": DPOConfig,
    "kto": KTOConfig,
    "orpo": ORPOConfig,
    "simpo": CPOConfig,
    "reward": RewardConfig,
}


def _method_kwargs(spec: TrainingSpec) -> dict[str, Any]:
    """The method knobs, as the method's TRL config names and expects them."""
    method = spec.method
    if method == "sft":
        return {"completion_only_loss": spec.completion_only_loss}
    if method == "pretrain":  # plain causal LM loss on every token of the text
        return {"completion_only_loss": False, "dataset_text_field": "text"}
    if method == "dpo":
        return {
            "beta": spec.beta,
            "loss_type": [spec.loss_type],
            "label_smoothing": spec.label_smoothing,
        }
    if method == "kto":
        return {
            "beta": spec.beta,
            "desirable_weight": spec.desirable_weight,
            "undesirable_weight": spec.undesirable_weight,
        }
    if method == "orpo":
        return {"beta": spec.beta}
    if method == "simpo":
        return {
            "beta": spec.beta,
            "loss_type": "simpo",
            "simpo_gamma": spec.simpo_gamma,
            "cpo_alpha": spec.cpo_alpha,
        }
    if method == "reward":
        return {"center_rewards_coefficient": spec.center_rewards_coefficient or None}
    raise ValueError(f"unknown method {method!r}")


def method_config(
    spec: TrainingSpec, output_dir: Path, *, has_eval: bool = False, use_cpu: bool = False
) -> TrainingArguments:
    """The TRL config of the spec's method: SFTConfig (sft, pretrain), DPOConfig, KTOConfig,
    ORPOConfig, CPOConfig (simpo) or RewardConfig."""
    kwargs: dict[str, Any] = {
        name: getattr(spec, name) for name in SFT_CONFIG_FIELDS if name != "completion_only_loss"
    }
    kwargs |= {theirs: getattr(spec, ours) for ours, theirs in SFT_CONFIG_RENAMED.items()}
    kwargs |= _method_kwargs(spec)
    return METHOD_CONFIGS[spec.method](
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


def sft_config(
    spec: TrainingSpec, output_dir: Path, *, has_eval: bool = False, use_cpu: bool = False
) -> SFTConfig:
    if spec.method not in ("sft", "pretrain"):
        raise ValueError(f"{spec.method} is not trained with SFTConfig")
    config = method_config(spec, output_dir, has_eval=has_eval, use_cpu=use_cpu)
    assert isinstance(config, SFTConfig)
    return config
