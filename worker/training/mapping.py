"""Pure functions from a TrainingSpec to TRL/peft objects (no I/O, no model loading): the
method's TRL config (``method_config``), and the adapter's peft / bitsandbytes configs. Each
method's own config class and knobs are its entry in ``worker.training.methods.WORKER_METHODS``.

The adapter side (peft configs, bitsandbytes, freeze plans) lives in ``worker.training.adapters``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import EarlyStoppingCallback, TrainingArguments
from trl import SFTConfig

from app.methods import METHODS, get_method, packs
from app.spec import TrainingSpec
from worker.devices import precision_kwargs
from worker.training.adapters import (
    ADAPTER_FIELDS,
    LORA_CONFIG_FIELDS,
    lora_config,
    peft_config,
    quantization_config,
    target_modules,
)
from worker.training.methods import WORKER_METHODS, reward_weights, worker_method
from worker.training.packing import PACKING_STRATEGY

__all__ = [
    "ADAPTER_FIELDS",
    "EARLY_STOPPING_FIELDS",
    "ENCODER_FIELDS",
    "LAUNCH_FIELDS",
    "LORA_CONFIG_FIELDS",
    "METHOD_CONFIG_FIELDS",
    "REWARD_FIELDS",
    "RULE_MAPPED_FIELDS",
    "SFT_CONFIG_FIELDS",
    "early_stopping_callback",
    "lora_config",
    "method_config",
    "peft_config",
    "quantization_config",
    "reward_weights",
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
RULE_MAPPED_FIELDS = (
    "precision",
    "eval_steps",
    "neftune_noise_alpha",
    "packing",
    "liger_kernels",
    "gradient_checkpointing",
)
# Spec fields the studio's encoder (app.chat.rows) reads to choose which tokens carry loss; the
# SFT rows reach TRL already tokenized, with their labels.
ENCODER_FIELDS = ("assistant_only_loss", "completion_only_loss")


# Spec fields that say how the run's processes are launched: ``app.launch`` turns them into the
# launcher's arguments and the strategy's TrainingArguments (``method_config``'s ``strategy``).
LAUNCH_FIELDS = ("num_devices", "distributed_strategy")

# Spec fields passed to transformers' EarlyStoppingCallback under the same name.
EARLY_STOPPING_FIELDS = ("early_stopping_patience", "early_stopping_threshold")
# What early stopping watches (and load_best_model_at_end keeps the best of).
EARLY_STOPPING_METRIC = "eval_loss"


# Spec fields the studio reads to build the reward side of online RL (worker.training.rl): rule
# reward functions, a reward run's checkpoint or a registered reward model.
REWARD_FIELDS = ("reward_functions", "reward_checkpoint_id", "reward_model")
# Method knobs: every field the method table (``app.methods``) gives a method that is not
# handled above, passed to the configs of the methods that list it by each one's
# ``config_kwargs`` (``worker.training.methods``).
METHOD_CONFIG_FIELDS = tuple(
    name
    for name in dict.fromkeys(f for method in METHODS.values() for f in method.fields)
    if name not in (*ENCODER_FIELDS, *RULE_MAPPED_FIELDS, *REWARD_FIELDS, *LAUNCH_FIELDS)
)
# The TRL config class of each method (SFTTrainer trains pretrain on the "text" column).
METHOD_CONFIGS: dict[str, type[TrainingArguments]] = {
    name: method.config for name, method in WORKER_METHODS.items()
}


def evaluation_interval(spec: TrainingSpec) -> int:
    return spec.eval_steps or spec.logging_steps


def _precision_kwargs(spec: TrainingSpec, use_cpu: bool, precision: str | None) -> dict[str, Any]:
    """The mixed-precision flags for the precision the run resolved on its device
    (``worker.devices.resolve_precision``); CPU runs compute in fp32."""
    if use_cpu:
        return precision_kwargs("fp32")
    if precision is not None:
        return precision_kwargs(precision)
    if spec.precision == "auto":  # no device resolved it: transformers picks bf16 if supported
        return {"bf16": None}
    return precision_kwargs(spec.precision)


def _run_kwargs(
    spec: TrainingSpec, has_eval: bool, use_cpu: bool, precision: str | None, liger: bool
) -> dict[str, Any]:
    """The rule-mapped knobs (RULE_MAPPED_FIELDS)."""
    kwargs: dict[str, Any] = {
        "eval_strategy": "steps" if has_eval else "no",
        "eval_steps": evaluation_interval(spec) if has_eval else None,
        **_precision_kwargs(spec, use_cpu, precision),
    }
    if "neftune_noise_alpha" in get_method(spec.method).fields and spec.neftune_noise_alpha > 0:
        kwargs["neftune_noise_alpha"] = spec.neftune_noise_alpha
    if packs(spec):  # best-fit packing, position ids restart per row (padding-free)
        kwargs |= {"packing": True, "packing_strategy": PACKING_STRATEGY}
    if "liger_kernels" in get_method(spec.method).fields:  # resolved on the device
        kwargs["use_liger_kernel"] = liger
    return kwargs


def _checkpointing_kwargs(
    spec: TrainingSpec, checkpointing: bool | None, strategy: dict[str, Any] | None
) -> dict[str, Any]:
    """transformers 5.23 calls gradient checkpointing (still TRL's and peft's word for it)
    activation_checkpointing. Under FSDP it is FSDP's own: the Trainer's would all-gather again
    in backward, and transformers refuses both at once."""
    on = spec.gradient_checkpointing == "on" if checkpointing is None else checkpointing
    fsdp = (strategy or {}).get("fsdp_config")
    if fsdp is not None:
        return {
            "fsdp_config": fsdp | {"activation_checkpointing": on},
            "activation_checkpointing": False,
        }
    return {"activation_checkpointing": on}


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


def method_config(
    spec: TrainingSpec,
    output_dir: Path,
    *,
    has_eval: bool = False,
    use_cpu: bool = False,
    precision: str | None = None,
    strategy: dict[str, Any] | None = None,
    liger: bool = False,
    checkpointing: bool | None = None,
) -> TrainingArguments:
    """The TRL config of the spec's method: SFTConfig (sft, pretrain), DPOConfig, KTOConfig,
    ORPOConfig, CPOConfig (simpo) or RewardConfig. ``precision`` is the one resolved on the
    device; ``strategy`` the distributed strategy's arguments (``app.launch``), for a run on
    several devices; ``liger`` whether the run uses Liger's kernels (``worker.kernels``);
    ``checkpointing`` whether it recomputes activations, as resolved on the device
    (``app.estimate.checkpointing_choice``; None: only when the spec says on)."""
    kwargs: dict[str, Any] = {name: getattr(spec, name) for name in SFT_CONFIG_FIELDS}
    kwargs |= worker_method(spec).config_kwargs(spec)
    kwargs |= _early_stopping_kwargs(spec, has_eval)
    kwargs |= _run_kwargs(spec, has_eval, use_cpu, precision, liger)
    kwargs |= strategy or {}
    kwargs |= _checkpointing_kwargs(spec, checkpointing, strategy)
    if get_method(spec.method).generates:  # prompts are as long as they are; answers have a cap
        del kwargs["max_length"]
    return worker_method(spec).config(
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
    if worker_method(spec).config is not SFTConfig:
        raise ValueError(f"{spec.method} is not trained with SFTConfig")
    config = method_config(spec, output_dir, has_eval=has_eval, use_cpu=use_cpu)
    assert isinstance(config, SFTConfig)
    return config
