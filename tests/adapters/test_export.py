"""Exports by adapter: LoRA-family and IA3 checkpoints merge into the base weights, full/freeze
checkpoints are copied as they are, prompt-learning adapters are refused with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

from app.spec import TrainingSpec
from worker.export.merged import NotMergeable, export_model_dir
from worker.training.adapters import peft_config


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, bundled_model_dir: Path) -> Path:
    path = tmp_path_factory.mktemp("base")
    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(AutoTokenizer.from_pretrained(bundled_model_dir)),
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(bundled_model_dir).save_pretrained(path)
    return path


def _adapter_checkpoint(base_dir: Path, out: Path, **spec: object) -> Path:
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base_dir), peft_config(TrainingSpec(**spec))
    )
    with torch.no_grad():  # stand-in for training: move every adapter weight off its init
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn_like(param) + 0.1)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out)
    return out


@pytest.mark.parametrize(
    "spec",
    [
        {"adapter": "lora", "lora_r": 2},
        {"adapter": "dora", "lora_r": 2},
        {"adapter": "qlora", "lora_r": 2},
        {"adapter": "ia3"},
    ],
    ids=["lora", "dora", "qlora", "ia3"],
)
def test_weight_adapters_merge(base_dir: Path, tmp_path: Path, spec: dict) -> None:
    checkpoint = _adapter_checkpoint(base_dir, tmp_path / "ckpt", **spec)
    export_model_dir(base_dir, checkpoint, tmp_path / "out", "{{ 'locked' }}")
    base = load_file(base_dir / "model.safetensors")
    merged = load_file(tmp_path / "out" / "model.safetensors")
    assert set(merged) == set(base)
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert changed and all(".layers." in k for k in changed)
    assert AutoTokenizer.from_pretrained(tmp_path / "out").chat_template == "{{ 'locked' }}"


@pytest.mark.parametrize("adapter", ["prefix", "prompt", "ptuning"])
def test_prompt_learning_is_refused(base_dir: Path, tmp_path: Path, adapter: str) -> None:
    checkpoint = _adapter_checkpoint(base_dir, tmp_path / "ckpt", adapter=adapter)
    with pytest.raises(NotMergeable, match="virtual tokens"):
        export_model_dir(base_dir, checkpoint, tmp_path / "out", None)


def test_full_checkpoint_is_copied_without_optimizer_state(base_dir: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint-3"
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight.add_(1.0)
    model.save_pretrained(checkpoint)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(checkpoint)
    torch.save({"state": {}}, checkpoint / "optimizer.pt")
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 3}))

    export_model_dir(base_dir, checkpoint, tmp_path / "out", "{{ 'locked' }}")
    out = tmp_path / "out"
    assert (
        load_file(out / "model.safetensors").keys()
        == load_file(checkpoint / "model.safetensors").keys()
    )
    assert not (out / "optimizer.pt").exists() and not (out / "trainer_state.json").exists()
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert torch.equal(
        reloaded.model.layers[1].mlp.up_proj.weight, model.model.layers[1].mlp.up_proj.weight
    )
    assert AutoTokenizer.from_pretrained(out).chat_template == "{{ 'locked' }}"
