"""Pure functions from a TrainingSpec to TRL/peft objects (no I/O, no model loading): the
method's TRL config (``method_config``), and the adapter's peft / bitsandbytes configs.

The adapter side (peft configs, bitsandbytes, freeze plans) lives in ``worker.training.adapters``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from transformers import EarlyStoppingCallback, TrainingArguments
from trl import DPOConfig, GRPOConfig, KTOConfig, RewardConfig, SFTConfig

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # ORPO and CPO live in trl.experimental

from trl.experimental.cpo import CPOConfig
from trl.experimental.orpo import ORPOConfig
from trl.experimental.ppo import PPOConfig

from app.spec import RL_METHODS, TrainingSpec
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
    "EARLY_STOPPING_FIELDS",
    "ENCODER_FIELDS",
    "LORA_CONFIG_FIELDS",
    "METHOD_CONFIG_FIELDS",
    "REWARD_FIELDS",
    "RULE_MAPPED_FIELDS",
    "SFT_CONFIG_FIELDS",
    "SFT_CONFIG_RENAMED",
    "early_stopping_callback",
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
    "seed",
    "logging_steps",
    "save_steps",
    "save_total_limit",
    "optim",
)
# Spec fields that become TRL config settings by a rule (see _run_kwargs).
RULE_MAPPED_FIELDS = ("precision", "eval_steps", "neftune_noise_alpha", "packing")
# Spec fields the studio's encoder (app.chat.rows) reads to choose which tokens carry loss; the
# SFT rows reach TRL already tokenized, with their labels.
ENCODER_FIELDS = ("assistant_only_loss", "completion_only_loss")
# Spec fields passed to SFTConfig under another name: transformers 5.23 renamed
# gradient_checkpointing (still TRL's and peft's word for it) to activation_checkpointing.
SFT_CONFIG_RENAMED = {"gradient_checkpointing": "activation_checkpointing"}


# Spec fields passed to transformers' EarlyStoppingCallback under the same name.
EARLY_STOPPING_FIELDS = ("early_stopping_patience", "early_stopping_threshold")
# What early stopping watches (and load_best_model_at_end keeps the best of).
EARLY_STOPPING_METRIC = "eval_loss"


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
    "num_generations",
    "max_completion_length",
    "temperature",
    "kl_coef",
    "cliprange",
    "vf_coef",
    "num_ppo_epochs",
)
# Spec fields the studio reads to build the reward side of online RL (worker.training.rl): rule
# reward functions, a reward run's checkpoint or a registered reward model.
REWARD_FIELDS = ("reward_functions", "reward_checkpoint_id", "reward_model")
# The TRL config class of each method (SFTTrainer trains pretrain on the "text" column).
METHOD_CONFIGS: dict[str, type[TrainingArguments]] = {
    "sft": SFTConfig,
    "pretrain": SFTConfig,
    "dpo": DPOConfig,
    "kto": KTOConfig,
    "orpo": ORPOConfig,
    "simpo": CPOConfig,
    "reward": RewardConfig,
    "ppo": PPOConfig,
    "grpo": GRPOConfig,
}


def _method_kwargs(spec: TrainingSpec) -> dict[str, Any]:
    """The method knobs, as the method's TRL config names and expects them."""
    method = spec.method
    if method == "sft":
        return {}  # the labels come with the studio's encoding (ENCODER_FIELDS)
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
    if method == "grpo":
        return {
            "beta": spec.beta,
            "num_generations": spec.num_generations,
            "max_completion_length": spec.max_completion_length,
            "temperature": spec.temperature,
            "reward_weights": reward_weights(spec),
        }
    if method == "ppo":
        return {
            "kl_coef": spec.kl_coef,
            "cliprange": spec.cliprange,
            "vf_coef": spec.vf_coef,
            "num_ppo_epochs": spec.num_ppo_epochs,
            "response_length": spec.max_completion_length,
            "temperature": spec.temperature,
            "stop_token": "eos",
            "num_mini_batches": 1,
            "num_sample_generations": 0,
            "total_episodes": _ppo_episodes(spec),
        }
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


def evaluation_interval(spec: TrainingSpec) -> int:
    return spec.eval_steps or spec.logging_steps


def _precision_kwargs(spec: TrainingSpec, use_cpu: bool) -> dict[str, Any]:
    if use_cpu or spec.precision == "fp32":
        return {"bf16": False, "fp16": False}
    if spec.precision == "auto":
        return {"bf16": None}  # transformers picks bf16 where the GPU supports it
    return {"bf16": spec.precision == "bf16", "fp16": spec.precision == "fp16"}


def _run_kwargs(spec: TrainingSpec, has_eval: bool, use_cpu: bool) -> dict[str, Any]:
    """The rule-mapped knobs (RULE_MAPPED_FIELDS)."""
    kwargs: dict[str, Any] = {
        "eval_strategy": "steps" if has_eval else "no",
        "eval_steps": evaluation_interval(spec) if has_eval else None,
        **_precision_kwargs(spec, use_cpu),
    }
    if spec.method == "sft" and spec.neftune_noise_alpha > 0:
        kwargs["neftune_noise_alpha"] = spec.neftune_noise_alpha
    if spec.packing:  # best-fit packing, position ids restart per row (padding-free)
        kwargs |= {"packing": True, "packing_strategy": "bfd"}
    return kwargs


def early_stopping_on(spec: TrainingSpec, has_eval: bool) -> bool:
    return has_eval and spec.early_stopping_patience > 0


def _early_stopping_kwargs(spec: TrainingSpec, has_eval: bool) -> dict[str, Any]:
    """What EarlyStoppingCallback needs from the config: the metric it watches, and the best
    checkpoint loaded at the end, for which transformers wants saves on evaluation steps (a
    checkpoint every save_steps rounded up to a multiple of the evaluation interval)."""
    if not early_stopping_on(spec, has_eval):
        return {}
    eval_steps = evaluation_interval(spec)
    return {
        "load_best_model_at_end": True,
        "metric_for_best_model": EARLY_STOPPING_METRIC,
        "greater_is_better": False,
        "save_steps": -(-spec.save_steps // eval_steps) * eval_steps,
    }


def early_stopping_callback(spec: TrainingSpec, has_eval: bool) -> EarlyStoppingCallback | None:
    if not early_stopping_on(spec, has_eval):
        return None
    return EarlyStoppingCallback(**{name: getattr(spec, name) for name in EARLY_STOPPING_FIELDS})


def reward_weights(spec: TrainingSpec) -> list[float]:
    """GRPO: one weight per reward function, in the order worker.training.rl builds them (the
    rules, then the reward model at weight 1)."""
    scorer = spec.reward_checkpoint_id is not None or spec.reward_model is not None
    return [rule.weight for rule in spec.reward_functions] + ([1.0] if scorer else [])


def _ppo_episodes(spec: TrainingSpec) -> int | None:
    """PPO counts prompts (episodes), not steps: max_steps batches of rollouts when set."""
    if spec.max_steps <= 0:
        return None  # num_train_epochs passes over the prompts
    return spec.max_steps * spec.per_device_train_batch_size * spec.gradient_accumulation_steps


def method_config(
    spec: TrainingSpec, output_dir: Path, *, has_eval: bool = False, use_cpu: bool = False
) -> TrainingArguments:
    """The TRL config of the spec's method: SFTConfig (sft, pretrain), DPOConfig, KTOConfig,
    ORPOConfig, CPOConfig (simpo) or RewardConfig."""
    kwargs: dict[str, Any] = {name: getattr(spec, name) for name in SFT_CONFIG_FIELDS}
    kwargs |= {theirs: getattr(spec, ours) for ours, theirs in SFT_CONFIG_RENAMED.items()}
    kwargs |= _method_kwargs(spec)
    kwargs |= _early_stopping_kwargs(spec, has_eval)
    kwargs |= _run_kwargs(spec, has_eval, use_cpu)
    if spec.method in RL_METHODS:  # prompts are as long as they are; answers have their own cap
        del kwargs["max_length"]
    return METHOD_CONFIGS[spec.method](
        output_dir=str(output_dir),
        **kwargs,
        save_strategy="steps",
        report_to=["tensorboard"],  # event files under output_dir/runs/
        logging_nan_inf_filter=False,  # log a NaN loss as NaN, not as the previous average
        disable_tqdm=True,
        use_cpu=use_cpu,
        dataloader_num_workers=0,
    )


def sft_config(
    spec: TrainingSpec, output_dir: Path, *, has_eval: bool = False, use_cpu: bool = False
) -> SFTConfig:
    if spec.method not in ("sft", "pretrain"):
        raise ValueError(f"{spec.method} is not trained with SFTConfig")
    config = method_config(spec, output_dir, has_eval=has_eval, use_cpu=use_cpu)
    assert isinstance(config, SFTConfig)
    return config
