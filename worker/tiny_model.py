"""A tiny random Llama sharing a real tokenizer: training steps take milliseconds (for tests)."""

from __future__ import annotations

import pathlib
import tempfile

from worker.bundled_model import COMPLETE_MARKER, publish_dir


def build_tiny_llama(
    tokenizer_source: pathlib.Path, out_dir: pathlib.Path, seed: int = 0
) -> pathlib.Path:
    """Build (once) a 2-layer, hidden-64 random Llama with ``tokenizer_source``'s tokenizer."""
    out_dir = pathlib.Path(out_dir)
    if (out_dir / COMPLETE_MARKER).exists():
        return out_dir

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    tokenizer.model_max_length = config.max_position_embeddings

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.") as tmp:
        staging = pathlib.Path(tmp) / "out"
        model.save_pretrained(staging)  # safetensors (the only format in transformers 5)
        tokenizer.save_pretrained(staging)  # carries the chat template
        publish_dir(staging, out_dir)
    return out_dir
