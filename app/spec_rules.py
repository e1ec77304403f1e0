"""Knob values that cannot work together, as (field, reason) pairs: the rules TrainingSpec's
validator applies after each field has passed its own bounds. Pure functions over a spec."""

from __future__ import annotations

from app.methods import METHOD_NAMES, get_method
from app.spec import (
    ADAPTERS,
    LORA_ADAPTERS,
    TrainingSpec,
    field_adapters,
    field_applies,
    field_condition,
    field_methods,
    module_list,
)

Problems = list[tuple[str, str]]


def conflicts(spec: TrainingSpec) -> Problems:
    return [
        *_inapplicable_knobs(spec),
        *_adapter_conflicts(spec),
        *_method_conflicts(spec),
        *_early_stopping_conflicts(spec),
        *_device_conflicts(spec),
    ]


def _device_conflicts(spec: TrainingSpec) -> Problems:
    """A strategy is how several devices share a run: one device has none to choose; sharding
    a 4/8-bit base (QLoRA) is not supported by these engines' plain configs."""
    if spec.num_devices == 1:
        if spec.distributed_strategy != "ddp":
            reason = "applies only with num_devices > 1: leave it at ddp, or ask for more devices"
            return [("distributed_strategy", reason)]
        return []
    if spec.adapter == "qlora" and spec.distributed_strategy != "ddp":
        reason = "QLoRA's quantized base cannot be sharded here: use ddp (a copy per device)"
        return [("distributed_strategy", reason)]
    return []


def _inapplicable_knobs(spec: TrainingSpec) -> Problems:
    problems = []
    values = spec.model_dump()
    for name, info in type(spec).model_fields.items():
        if values[name] == info.default or field_applies(name, values):
            continue
        adapters = field_adapters(name) or ADAPTERS
        methods = field_methods(name) or METHOD_NAMES
        if spec.method not in methods:
            reason = (
                f"applies to method {' / '.join(methods)}, not to {spec.method}: "
                "leave it at its default or change the method"
            )
        elif spec.adapter not in adapters:
            reason = (
                f"applies to adapter {' / '.join(adapters)}, not to {spec.adapter}: "
                "leave it at its default or change the adapter"
            )
        else:
            condition = ", ".join(f"{k} = {v}" for k, v in field_condition(name).items())
            reason = f"applies only with {condition}: leave it at its default"
        problems.append((name, reason))
    return problems


def _reward_conflicts(spec: TrainingSpec) -> Problems:
    """Online RL: where the rewards come from (the method table's ``reward_source``)."""
    source = get_method(spec.method).reward_source
    scorer = spec.reward_checkpoint_id is not None or spec.reward_model is not None
    if spec.reward_checkpoint_id is not None and spec.reward_model is not None:
        return [("reward_model", "choose a reward checkpoint or a reward model, not both")]
    if source == "model" and not scorer:
        reason = f"{spec.method.upper()} needs a reward model: a reward run's checkpoint"
        return [("reward_checkpoint_id", reason)]
    if source == "model_or_rules" and not (scorer or spec.reward_functions):
        return [("reward_functions", f"{spec.method.upper()} needs rule rewards or a reward model")]
    return []


def _method_conflicts(spec: TrainingSpec) -> Problems:
    method = get_method(spec.method)
    problems: Problems = [*_reward_conflicts(spec)] if method.reward_source != "none" else []
    if "num_generations" in method.fields and (
        spec.per_device_train_batch_size % spec.num_generations
    ):
        problems.append(
            (
                "num_generations",
                f"per_device_train_batch_size ({spec.per_device_train_batch_size}) must be a "
                f"multiple of num_generations ({spec.num_generations})",
            )
        )
    if reason := method.refused_adapters.get(spec.adapter):
        problems.append(
            ("adapter", f"{spec.method} cannot train {spec.adapter} adapters: {reason}")
        )
    return problems


def _early_stopping_conflicts(spec: TrainingSpec) -> Problems:
    if spec.early_stopping_threshold and not spec.early_stopping_patience:
        reason = "applies only with early stopping on (early_stopping_patience above 0)"
        return [("early_stopping_threshold", reason)]
    return []


def _adapter_conflicts(spec: TrainingSpec) -> Problems:
    problems: Problems = []
    if spec.adapter == "prefix" and spec.gradient_checkpointing == "on":
        problems.append(
            (
                "gradient_checkpointing",
                "prefix tuning cannot use gradient checkpointing: peft passes the prefix as a "
                "key/value cache, which checkpointed layers do not accept. Turn gradient "
                "checkpointing off, or use prompt tuning or LoRA",
            )
        )
    if spec.adapter == "prefix" and spec.encoder_hidden_size and not spec.prefix_projection:
        problems.append(
            (
                "encoder_hidden_size",
                "prefix tuning uses an encoder only with prefix_projection on: turn it on, "
                "or leave encoder_hidden_size at 0",
            )
        )
    if spec.adapter == "prompt":
        text = spec.prompt_tuning_init_text.strip()
        if spec.prompt_tuning_init == "text" and not text:
            problems.append(("prompt_tuning_init_text", "prompt_tuning_init = text needs the text"))
    for field, adapters in (
        ("lora_target_modules", LORA_ADAPTERS),
        ("ia3_target_modules", ("ia3",)),
    ):
        if spec.adapter in adapters and "lm_head" in module_list(getattr(spec, field)):
            problems.append(
                (
                    field,
                    "lm_head cannot be adapted: TRL's chunked loss reads the output head's "
                    "weight directly, so an adapter on it would get no gradient. Remove it",
                )
            )
    if spec.adapter == "ia3" and spec.ia3_target_modules != "all-linear":
        extra = set(module_list(spec.ia3_feedforward_modules)) - set(
            module_list(spec.ia3_target_modules)
        )
        if extra:
            problems.append(
                (
                    "ia3_feedforward_modules",
                    f"{', '.join(sorted(extra))} must also be in ia3_target_modules",
                )
            )
    return problems
