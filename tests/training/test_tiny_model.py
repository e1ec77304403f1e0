"""The tiny random Llama used by fast training tests."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from worker.bundled_model import ensure_bundled_model
from worker.tiny_model import build_tiny_llama

ROOT = Path(__file__).resolve().parents[2]


def _bundled_dir() -> Path:
    if env := os.environ.get("FTSTUDIO_BUNDLED_MODEL_DIR"):
        return Path(env)
    return ensure_bundled_model(ROOT / ".data" / "models")  # instant once converted


def test_build_tiny_llama(tmp_path: Path) -> None:
    out = build_tiny_llama(_bundled_dir(), tmp_path / "tiny")
    assert out == tmp_path / "tiny"
    assert (out / "model.safetensors").is_file() and (out / ".complete").is_file()
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_llama(_bundled_dir(), out) == out  # idempotent: not rebuilt
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime

    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.num_hidden_layers == 2 and len(model.model.layers) == 2
    assert model.dtype == torch.float32
    assert model.config.vocab_size == len(tokenizer)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template

    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi there"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    input_ids = tokenizer(text, return_tensors="pt")["input_ids"]
    n = input_ids.shape[1]
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits
    assert logits.shape == (1, n, len(tokenizer))
    assert torch.isfinite(logits).all()


def test_tiny_llama_is_seeded(tmp_path: Path) -> None:
    a = AutoModelForCausalLM.from_pretrained(build_tiny_llama(_bundled_dir(), tmp_path / "a"))
    b = AutoModelForCausalLM.from_pretrained(build_tiny_llama(_bundled_dir(), tmp_path / "b"))
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
