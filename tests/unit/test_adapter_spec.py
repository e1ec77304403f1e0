"""Adapter knobs: each is read by its mapping, applies only to its adapters, and combinations
that cannot work are refused with the field and a reason (never silently changed)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import (
    IA3Config,
    LoraConfig,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptTuningConfig,
)
from pydantic import ValidationError

from app.jobs import JobRequestError, build_spec
from app.spec import (
    ADAPTERS,
    HYPERPARAMETER_FIELDS,
    SpecConflicts,
    TrainingSpec,
    field_adapters,
    field_applies,
)
from app.web.forms import hyperparameters_from_form
from worker.training.adapters import (
    ADAPTER_FIELDS,
    FreezePlan,
    freeze_plan,
    peft_config,
    quantization_config,
    unfrozen_parameters,
)

# For each adapter knob: an adapter (and other values) it applies under, and a non-default value.
CHANGES: dict[str, tuple[dict[str, Any], Any]] = {
    "lora_r": ({"adapter": "lora"}, 8),
    "lora_alpha": ({"adapter": "dora"}, 7),
    "lora_dropout": ({"adapter": "qlora"}, 0.2),
    "lora_target_modules": ({"adapter": "lora"}, "q_proj,v_proj"),
    "use_rslora": ({"adapter": "lora"}, True),
    "quantization_bits": ({"adapter": "qlora"}, 8),
    "bnb_4bit_quant_type": ({"adapter": "qlora"}, "fp4"),
    "bnb_4bit_use_double_quant": ({"adapter": "qlora"}, False),
    "bnb_4bit_compute_dtype": ({"adapter": "qlora"}, "float16"),
    "freeze_trainable_layers": ({"adapter": "freeze"}, 1),
    "freeze_train_embeddings": ({"adapter": "freeze"}, True),
    "freeze_train_lm_head": ({"adapter": "freeze"}, True),
    "num_virtual_tokens": ({"adapter": "prompt"}, 3),
    "prefix_projection": ({"adapter": "prefix"}, True),
    "encoder_hidden_size": ({"adapter": "ptuning"}, 16),
    "prompt_tuning_init": ({"adapter": "prompt"}, "sample_vocab"),
    "prompt_tuning_init_text": (
        {"adapter": "prompt", "prompt_tuning_init": "text", "prompt_tuning_init_text": "Hi:"},
        "Answer briefly:",
    ),
    "ia3_target_modules": ({"adapter": "ia3"}, "all-linear"),
    "ia3_feedforward_modules": ({"adapter": "ia3"}, ""),
}


def _mapped(spec: TrainingSpec) -> Any:
    peft = peft_config(spec, Path("/models/x"))
    bnb = quantization_config(spec)
    plan = freeze_plan(spec, 4)
    return (
        peft.to_dict() if peft is not None else None,
        bnb.to_dict() if bnb is not None else None,
        plan,
    )


def test_every_adapter_knob_is_covered_here() -> None:
    assert set(CHANGES) == set(ADAPTER_FIELDS)


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_every_adapter_knob_changes_what_is_mapped(name: str) -> None:
    base, value = CHANGES[name]
    before = TrainingSpec(**base)
    after = TrainingSpec(**{**base, name: value})
    assert _mapped(before) != _mapped(after), f"{name} is not read by the adapter mapping"


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_adapter_knobs_are_refused_on_other_adapters(name: str) -> None:
    value = CHANGES[name][1]
    adapters = field_adapters(name)
    assert adapters and set(adapters) <= set(ADAPTERS)
    other = next(a for a in ADAPTERS if a not in adapters)
    with pytest.raises(JobRequestError, match=re.escape(f"hyperparameters.{name}: ")) as info:
        build_spec("sft", other, {name: value})
    assert ["hyperparameters", name] in [e["loc"] for e in info.value.errors]
    assert any(other in e["msg"] for e in info.value.errors)


def test_configs_per_adapter() -> None:
    assert peft_config(TrainingSpec(adapter="full")) is None
    assert peft_config(TrainingSpec(adapter="freeze")) is None
    assert quantization_config(TrainingSpec(adapter="lora")) is None
    lora = peft_config(TrainingSpec(adapter="lora"))
    assert isinstance(lora, LoraConfig) and not lora.use_dora
    dora = peft_config(TrainingSpec(adapter="dora"))
    assert isinstance(dora, LoraConfig) and dora.use_dora
    assert isinstance(peft_config(TrainingSpec(adapter="qlora")), LoraConfig)
    prefix = peft_config(TrainingSpec(adapter="prefix", num_virtual_tokens=7))
    assert isinstance(prefix, PrefixTuningConfig) and prefix.num_virtual_tokens == 7
    assert isinstance(peft_config(TrainingSpec(adapter="prompt")), PromptTuningConfig)
    assert isinstance(peft_config(TrainingSpec(adapter="ptuning")), PromptEncoderConfig)
    ia3 = peft_config(TrainingSpec(adapter="ia3"))
    assert isinstance(ia3, IA3Config)
    assert ia3.target_modules == {"k_proj", "v_proj", "down_proj"}
    assert ia3.feedforward_modules == {"down_proj"}


def test_qlora_quantization() -> None:
    four = quantization_config(TrainingSpec(adapter="qlora"))
    assert four.load_in_4bit and not four.load_in_8bit
    assert four.bnb_4bit_quant_type == "nf4" and four.bnb_4bit_use_double_quant
    assert four.bnb_4bit_compute_dtype == torch.bfloat16
    eight = quantization_config(TrainingSpec(adapter="qlora", quantization_bits="8"))
    assert eight.load_in_8bit and not eight.load_in_4bit


def test_prompt_tuning_from_text_uses_the_model_tokenizer() -> None:
    spec = TrainingSpec(
        adapter="prompt", prompt_tuning_init="text", prompt_tuning_init_text="Be brief:"
    )
    config = peft_config(spec, Path("/models/tiny"))
    assert config.prompt_tuning_init == "TEXT"
    assert config.prompt_tuning_init_text == "Be brief:"
    assert config.tokenizer_name_or_path == "/models/tiny"


def test_freeze_plan_picks_the_last_blocks() -> None:
    spec = TrainingSpec(adapter="freeze", freeze_trainable_layers=2, freeze_train_embeddings=True)
    plan = freeze_plan(spec, 5)
    assert plan == FreezePlan(layers=(3, 4), embeddings=True, lm_head=False)
    names = [
        "model.embed_tokens.weight",
        *(f"model.layers.{i}.mlp.up_proj.weight" for i in range(5)),
        "model.layers.4.input_layernorm.weight",
        "model.norm.weight",
        "lm_head.weight",
    ]
    chosen = unfrozen_parameters(
        plan,
        names,
        blocks_prefix="model.layers",
        embeddings_prefix="model.embed_tokens",
        head_prefix="lm_head",
    )
    assert chosen == {
        "model.embed_tokens.weight",
        "model.layers.3.mlp.up_proj.weight",
        "model.layers.4.mlp.up_proj.weight",
        "model.layers.4.input_layernorm.weight",
    }
    with pytest.raises(ValueError, match="has 1 blocks"):
        freeze_plan(spec, 1)


@pytest.mark.parametrize(
    ("values", "field", "reason"),
    [
        ({"adapter": "prefix", "gradient_checkpointing": "on"}, "gradient_checkpointing", "cache"),
        (
            {"adapter": "qlora", "quantization_bits": 8, "bnb_4bit_quant_type": "fp4"},
            "bnb_4bit_quant_type",
            "quantization_bits = 4",
        ),
        ({"adapter": "lora", "freeze_trainable_layers": 4}, "freeze_trainable_layers", "freeze"),
        ({"adapter": "lora", "lora_target_modules": "q_proj,lm_head"}, "lora_target_modules", ""),
        ({"adapter": "ia3", "ia3_target_modules": "lm_head"}, "ia3_target_modules", "lm_head"),
        (
            {"adapter": "ia3", "ia3_feedforward_modules": "gate_proj"},
            "ia3_feedforward_modules",
            "gate_proj",
        ),
        (
            {"adapter": "prefix", "encoder_hidden_size": 32},
            "encoder_hidden_size",
            "prefix_projection",
        ),
        ({"adapter": "prompt", "prompt_tuning_init": "text"}, "prompt_tuning_init_text", "text"),
        (
            {"adapter": "prompt", "prompt_tuning_init_text": "Hi:"},
            "prompt_tuning_init_text",
            "prompt_tuning_init = text",
        ),
        ({"adapter": "full", "lora_r": 4}, "lora_r", "full"),
    ],
)
def test_combinations_that_cannot_work_are_refused(values: dict, field: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(field)) as info:
        TrainingSpec(**values)
    (error,) = info.value.errors()
    conflicts = error["ctx"]["error"]
    assert isinstance(conflicts, SpecConflicts)
    assert field in [f for f, _ in conflicts.problems]
    assert reason in dict(conflicts.problems)[field]


def test_a_stored_spec_validates_again() -> None:
    for adapter in ADAPTERS:
        dumped = TrainingSpec(adapter=adapter).model_dump(mode="json")
        assert TrainingSpec.model_validate(dumped).adapter == adapter


def test_the_form_sends_only_what_applies() -> None:
    values = {
        "adapter": "qlora",
        "quantization_bits": "8",
        "lora_r": "8",
        "freeze_trainable_layers": "3",  # a hidden field: ignored
        "learning_rate": "0.001",
    }
    hyper = hyperparameters_from_form(values)
    assert hyper["lora_r"] == "8" and hyper["quantization_bits"] == "8"
    assert "freeze_trainable_layers" not in hyper
    assert "bnb_4bit_use_double_quant" not in hyper  # 4-bit only: an unticked box is not False
    assert hyper["use_rslora"] is False
    spec = build_spec("sft", "qlora", hyper)
    assert spec.quantization_bits == 8 and spec.bnb_4bit_use_double_quant


def test_every_adapter_applies_some_knob_or_none() -> None:
    for adapter in ADAPTERS:
        applying = {n for n in HYPERPARAMETER_FIELDS if field_applies(n, {"adapter": adapter})}
        assert "learning_rate" in applying
        assert ("lora_r" in applying) == (adapter in ("lora", "dora", "qlora"))
