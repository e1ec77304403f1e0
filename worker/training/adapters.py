"""Pure functions from a TrainingSpec to peft / bitsandbytes objects, in the manner of TRL's
``get_peft_config`` and ``get_quantization_config``; plus which parameters a freeze run trains.

``peft_config`` is None for full and freeze (they train without peft); ``quantization_config``
is None except for qlora. ``apply_freeze`` is the one function here that touches a model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import (
    IA3Config,
    LoraConfig,
    PeftConfig,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptTuningConfig,
    TaskType,
)
from peft.tuners.prompt_tuning import PromptTuningInit
from transformers import BitsAndBytesConfig

from app.methods import is_reward_model
from app.spec import TrainingSpec, module_list

# Spec fields each mapping reads (tests assert every spec field is mapped or studio-only).
LORA_CONFIG_FIELDS = ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "use_rslora")
QUANTIZATION_FIELDS = (
    "quantization_bits",
    "bnb_4bit_quant_type",
    "bnb_4bit_use_double_quant",
    "bnb_4bit_compute_dtype",
)
FREEZE_FIELDS = ("freeze_trainable_layers", "freeze_train_embeddings", "freeze_train_lm_head")
PROMPT_LEARNING_FIELDS = (
    "num_virtual_tokens",
    "prefix_projection",
    "encoder_hidden_size",
    "prompt_tuning_init",
    "prompt_tuning_init_text",
)
IA3_FIELDS = ("ia3_target_modules", "ia3_feedforward_modules")
ADAPTER_FIELDS = (
    *LORA_CONFIG_FIELDS,
    *QUANTIZATION_FIELDS,
    *FREEZE_FIELDS,
    *PROMPT_LEARNING_FIELDS,
    *IA3_FIELDS,
)

PROMPT_TUNING_INIT = {
    "random": PromptTuningInit.RANDOM,
    "sample_vocab": PromptTuningInit.SAMPLE_VOCAB,
    "text": PromptTuningInit.TEXT,
}
TORCH_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def target_modules(value: str) -> str | list[str]:
    return "all-linear" if value == "all-linear" else module_list(value)


def task_type(spec: TrainingSpec) -> TaskType:
    """A reward model is a sequence classifier (peft then also trains its new score head)."""
    return TaskType.SEQ_CLS if is_reward_model(spec.method) else TaskType.CAUSAL_LM


def lora_config(spec: TrainingSpec) -> LoraConfig:
    """LoRA for lora and qlora; DoRA (``use_dora``) for dora."""
    return LoraConfig(
        task_type=task_type(spec),
        r=spec.lora_r,
        lora_alpha=spec.lora_alpha,
        lora_dropout=spec.lora_dropout,
        target_modules=target_modules(spec.lora_target_modules),
        use_rslora=spec.use_rslora,
        use_dora=spec.adapter == "dora",
        bias="none",
    )


def peft_config(spec: TrainingSpec, model_path: Path | None = None) -> PeftConfig | None:
    """The peft config of the spec's adapter; None for full and freeze.

    ``model_path`` is the tokenizer source prompt tuning needs to initialise from text.
    """
    adapter = spec.adapter
    if adapter in ("full", "freeze"):
        return None
    if adapter in ("lora", "dora", "qlora"):
        return lora_config(spec)
    encoder: dict[str, Any] = (
        {"encoder_hidden_size": spec.encoder_hidden_size} if spec.encoder_hidden_size else {}
    )
    if adapter == "prefix":
        return PrefixTuningConfig(
            task_type=task_type(spec),
            num_virtual_tokens=spec.num_virtual_tokens,
            prefix_projection=spec.prefix_projection,
            **encoder,
        )
    if adapter == "prompt":
        init = PROMPT_TUNING_INIT[spec.prompt_tuning_init]
        from_text = init == PromptTuningInit.TEXT
        if from_text and model_path is None:
            raise ValueError("prompt tuning from text needs the model's tokenizer (model_path)")
        return PromptTuningConfig(
            task_type=task_type(spec),
            num_virtual_tokens=spec.num_virtual_tokens,
            prompt_tuning_init=init,
            prompt_tuning_init_text=spec.prompt_tuning_init_text if from_text else None,
            tokenizer_name_or_path=str(model_path) if from_text else None,
        )
    if adapter == "ptuning":
        return PromptEncoderConfig(
            task_type=task_type(spec),
            num_virtual_tokens=spec.num_virtual_tokens,
            encoder_reparameterization_type="MLP",
            **encoder,
        )
    if adapter == "ia3":
        feedforward = module_list(spec.ia3_feedforward_modules)
        return IA3Config(
            task_type=task_type(spec),
            target_modules=target_modules(spec.ia3_target_modules),
            feedforward_modules=feedforward,
        )
    raise ValueError(f"unknown adapter {adapter!r}")


def quantization_config(spec: TrainingSpec) -> BitsAndBytesConfig | None:
    """bitsandbytes loading for qlora: 4-bit (NF4/FP4, double quantization, compute dtype) or
    8-bit (LLM.int8); None for every other adapter."""
    if spec.adapter != "qlora":
        return None
    if spec.quantization_bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=spec.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=spec.bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=TORCH_DTYPES[spec.bnb_4bit_compute_dtype],
    )


@dataclass(frozen=True)
class FreezePlan:
    """What a freeze run trains: these blocks (indices), and optionally embeddings and head."""

    layers: tuple[int, ...]
    embeddings: bool
    lm_head: bool


def freeze_plan(spec: TrainingSpec, num_layers: int) -> FreezePlan | None:
    if spec.adapter != "freeze":
        return None
    if spec.freeze_trainable_layers > num_layers:
        raise ValueError(
            f"freeze_trainable_layers is {spec.freeze_trainable_layers} but the model has "
            f"{num_layers} blocks"
        )
    first = num_layers - spec.freeze_trainable_layers
    return FreezePlan(
        layers=tuple(range(first, num_layers)),
        embeddings=spec.freeze_train_embeddings,
        lm_head=spec.freeze_train_lm_head,
    )


def unfrozen_parameters(
    plan: FreezePlan,
    names: Iterable[str],
    *,
    blocks_prefix: str,
    embeddings_prefix: str | None,
    head_prefix: str | None,
) -> set[str]:
    """The parameter names (from ``model.named_parameters()``) a freeze plan trains."""
    block = re.compile(rf"^{re.escape(blocks_prefix)}\.(\d+)\.")
    prefixes = [
        f"{prefix}."
        for prefix, wanted in ((embeddings_prefix, plan.embeddings), (head_prefix, plan.lm_head))
        if wanted and prefix
    ]

    def trained(name: str) -> bool:
        match = block.match(name)
        in_block = match is not None and int(match.group(1)) in plan.layers
        return in_block or any(name.startswith(prefix) for prefix in prefixes)

    return {name for name in names if trained(name)}


def _module_name(model: torch.nn.Module, target: torch.nn.Module | None) -> str | None:
    if target is None:
        return None
    return next((name for name, module in model.named_modules() if module is target), None)


def blocks_prefix(model: torch.nn.Module, num_layers: int) -> str:
    """The name of the ModuleList holding the model's transformer blocks."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == num_layers and name:
            return name
    raise ValueError(f"cannot find the {num_layers} transformer blocks of this model")


def apply_freeze(model: Any, plan: FreezePlan) -> set[str]:
    """Freeze every parameter but the plan's; returns the trained parameter names."""
    num_layers = model.config.get_text_config().num_hidden_layers
    head = model.get_output_embeddings()
    embeddings = model.get_input_embeddings()
    tied = head is not None and head.weight is embeddings.weight
    if tied and plan.embeddings != plan.lm_head:
        raise ValueError(
            "this model ties its output head to its input embeddings: train both or neither"
        )
    names = [name for name, _ in model.named_parameters()]
    chosen = unfrozen_parameters(
        plan,
        names,
        blocks_prefix=blocks_prefix(model, num_layers),
        embeddings_prefix=_module_name(model, embeddings),
        head_prefix=_module_name(model, head),
    )
    for name, param in model.named_parameters():
        param.requires_grad_(name in chosen)
    return chosen
