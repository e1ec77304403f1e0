"""Tiny models, adapter checkpoints and export archives for the export tests (milliseconds)."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import torch
from peft import get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

from app.spec import TrainingSpec
from worker.training.adapters import peft_config

LOCKED = "{% for m in messages %}<|im_start|>{{ m.content }}<|im_end|>{% endfor %}"
PROMPT = "The quick brown fox jumps over the lazy dog. 12345"


def tiny_base(path: Path, tokenizer_dir: Path, *, tied: bool = False) -> Path:
    """A 2-layer random Llama (GQA, a non-default rope base) with the bundled tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        rope_theta=50000.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=tied,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def adapter_checkpoint(base_dir: Path, out: Path, **spec: object) -> Path:
    """A peft checkpoint whose weights moved off their init (a stand-in for training)."""
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base_dir), peft_config(TrainingSpec(**spec))
    )
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn_like(param) + 0.02)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out)
    return out


def next_token_logits(model: torch.nn.Module, tokenizer_dir: Path) -> torch.Tensor:
    ids = AutoTokenizer.from_pretrained(tokenizer_dir)(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits[0, -1].float()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def extract(archive: bytes, out: Path) -> Path:
    """Unpack an export archive; returns its one root directory."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(out, filter="data")
    (root,) = out.iterdir()
    return root
