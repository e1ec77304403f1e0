"""The estimate's parameter counts (pure arithmetic on config.json) equal what torch and peft
build: the model's own parameter count, and peft's get_nb_trainable_parameters() for every
adapter (requires_grad parameters for freeze)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from peft import get_peft_model
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    PretrainedConfig,
)

from app.architecture import architecture, count_parameters
from app.spec import TrainingSpec
from worker.training.adapters import apply_freeze, freeze_plan, peft_config

SMALL = {
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 300,
    "max_position_embeddings": 128,
}
CONFIGS: dict[str, dict[str, Any]] = {
    "llama-tied": {"model_type": "llama", "tie_word_embeddings": True},
    "llama-untied-biases": {
        "model_type": "llama",
        "tie_word_embeddings": False,
        "attention_bias": True,
        "mlp_bias": True,
    },
    "llama-head-dim": {"model_type": "llama", "head_dim": 24, "tie_word_embeddings": False},
    "mistral": {"model_type": "mistral", "tie_word_embeddings": False},
    "qwen2": {"model_type": "qwen2", "tie_word_embeddings": True},
    "qwen3": {"model_type": "qwen3", "tie_word_embeddings": False, "head_dim": 16},
    "gemma": {"model_type": "gemma", "head_dim": 16},
    "gemma2": {"model_type": "gemma2", "head_dim": 16},
}


def _config_json(name: str) -> dict[str, Any]:
    overrides = dict(CONFIGS[name])
    model_type = overrides.pop("model_type")
    config: PretrainedConfig = AutoConfig.for_model(model_type, **SMALL, **overrides)
    # What the estimate reads: the config.json that save_pretrained writes.
    return json.loads(config.to_json_string())


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    config = AutoConfig.for_model(**_config_json(name))
    return AutoModelForCausalLM.from_config(config)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_total_parameters_match_the_model(name: str) -> None:
    arch = architecture(_config_json(name))
    model = _model(name)
    assert arch.total_params == sum(p.numel() for p in model.parameters())
    head, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    assert arch.tied == (head.weight is embeddings.weight)


ADAPTER_SPECS: dict[str, dict[str, Any]] = {
    "lora": {"adapter": "lora", "lora_r": 4},
    "lora-qv-rslora": {
        "adapter": "lora",
        "lora_r": 8,
        "lora_target_modules": "q_proj, v_proj",
        "use_rslora": True,
    },
    "lora-full-names": {"adapter": "lora", "lora_r": 2, "lora_target_modules": "mlp.down_proj"},
    "dora": {"adapter": "dora", "lora_r": 4},
    "dora-attention": {"adapter": "dora", "lora_r": 2, "lora_target_modules": "k_proj,o_proj"},
    "ia3": {"adapter": "ia3"},
    "ia3-all-linear": {"adapter": "ia3", "ia3_target_modules": "all-linear"},
    "ia3-no-feedforward": {
        "adapter": "ia3",
        "ia3_target_modules": "q_proj,up_proj",
        "ia3_feedforward_modules": "",
    },
    "prefix": {"adapter": "prefix", "num_virtual_tokens": 5},
    "prefix-projection": {"adapter": "prefix", "num_virtual_tokens": 3, "prefix_projection": True},
    "prefix-projection-encoder": {
        "adapter": "prefix",
        "num_virtual_tokens": 3,
        "prefix_projection": True,
        "encoder_hidden_size": 40,
    },
    "prompt": {"adapter": "prompt", "num_virtual_tokens": 7},
    "ptuning": {"adapter": "ptuning", "num_virtual_tokens": 6},
    "ptuning-encoder": {"adapter": "ptuning", "num_virtual_tokens": 6, "encoder_hidden_size": 24},
}


@pytest.mark.parametrize("name", ["llama-tied", "llama-untied-biases", "qwen2", "qwen3"])
@pytest.mark.parametrize("case", sorted(ADAPTER_SPECS))
def test_adapter_counts_equal_peft(name: str, case: str) -> None:
    spec = TrainingSpec(**ADAPTER_SPECS[case])
    arch = architecture(_config_json(name))
    model = get_peft_model(_model(name), peft_config(spec))
    trainable, total = model.get_nb_trainable_parameters()
    count = count_parameters(arch, spec)
    assert (count.trainable, count.total) == (trainable, total)
    assert trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)


FREEZE_SPECS = {
    "last-block": {"freeze_trainable_layers": 1},
    "all-blocks": {"freeze_trainable_layers": 3},
    "with-embeddings-and-head": {
        "freeze_trainable_layers": 2,
        "freeze_train_embeddings": True,
        "freeze_train_lm_head": True,
    },
}


@pytest.mark.parametrize("name", ["llama-tied", "llama-untied-biases", "qwen3"])
@pytest.mark.parametrize("case", sorted(FREEZE_SPECS))
def test_freeze_counts_equal_requires_grad(name: str, case: str) -> None:
    spec = TrainingSpec(adapter="freeze", **FREEZE_SPECS[case])
    arch = architecture(_config_json(name))
    model = _model(name)
    apply_freeze(model, freeze_plan(spec, arch.num_layers))
    count = count_parameters(arch, spec)
    assert count.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert count.total == sum(p.numel() for p in model.parameters())


def test_freeze_untied_head_alone() -> None:
    spec = TrainingSpec(adapter="freeze", freeze_trainable_layers=1, freeze_train_lm_head=True)
    arch = architecture(_config_json("llama-untied-biases"))
    model = _model("llama-untied-biases")
    trained = apply_freeze(model, freeze_plan(spec, arch.num_layers))
    assert "lm_head.weight" in trained and "model.embed_tokens.weight" not in trained
    assert {n.split(".")[2] for n in trained if n.startswith("model.layers.")} == {"2"}
    assert count_parameters(arch, spec).trainable == sum(
        p.numel() for p in model.parameters() if p.requires_grad
    )


def test_full_trains_everything() -> None:
    arch = architecture(_config_json("llama-tied"))
    count = count_parameters(arch, TrainingSpec(adapter="full"))
    everything = sum(p.numel() for p in _model("llama-tied").parameters())
    assert count.trainable == count.total == everything


@pytest.mark.parametrize("bits", [4, 8])
def test_qlora_counts_equal_peft_on_a_quantized_model(bits: int, tmp_path) -> None:
    from peft import prepare_model_for_kbit_training

    from worker.training.adapters import quantization_config

    _model("llama-untied-biases").save_pretrained(tmp_path)
    spec = TrainingSpec(adapter="qlora", lora_r=4, quantization_bits=bits)
    model = AutoModelForCausalLM.from_pretrained(
        tmp_path, dtype=torch.float32, quantization_config=quantization_config(spec)
    )
    model = get_peft_model(prepare_model_for_kbit_training(model), peft_config(spec))
    arch = architecture(json.loads((tmp_path / "config.json").read_text()))
    count = count_parameters(arch, spec)
    assert (count.trainable, count.total) == model.get_nb_trainable_parameters()
