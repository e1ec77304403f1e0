"""GGUF export: a merged tiny Llama written as F16 and Q8_0 loads back with transformers
(``gguf_file=``) and predicts the next token like the merged safetensors model, within each
format's rounding; the tokenizer and the locked chat template travel in the file. Also the
pure mappings the writer is made of, and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.support.exports import LOCKED, PROMPT, adapter_checkpoint, next_token_logits, tiny_base
from worker.export.gguf import (
    LLAMA3_SPLIT,
    GgufUnsupported,
    check_architecture,
    permute_rotary,
    pre_tokenizer_name,
    rope_scaling,
    tensor_qtype,
    vocab_entries,
    write_gguf,
)
from worker.export.merged import export_model_dir

# Largest next-token logit error allowed, relative to the largest logit.
TOLERANCE = {"f16": 3e-3, "q8_0": 4e-2}  # measured: about 8e-4 and 1.5e-2


@pytest.fixture(scope="module")
def merged_dir(tmp_path_factory, bundled_model_dir: Path) -> Path:
    """A LoRA merged into an untied tiny Llama (the worker test exports a tied one)."""
    root = tmp_path_factory.mktemp("gguf")
    base = tiny_base(root / "base", bundled_model_dir, tied=False)
    checkpoint = adapter_checkpoint(base, root / "ckpt", adapter="lora", lora_r=4)
    export_model_dir(base, checkpoint, root / "merged", LOCKED)
    for quantization in TOLERANCE:
        write_gguf(
            root / "merged", root / "merged" / f"model-{quantization}.gguf", quantization, "t"
        )
    return root / "merged"


@pytest.mark.parametrize("quantization", ["f16", "q8_0"])
def test_gguf_logits_match_the_merged_model(merged_dir: Path, quantization: str) -> None:
    name = f"model-{quantization}.gguf"
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, local_files_only=True)
    loaded = AutoModelForCausalLM.from_pretrained(merged_dir, gguf_file=name)  # ~25 s: metadata
    expected = next_token_logits(merged, merged_dir)
    actual = next_token_logits(loaded, merged_dir)

    error = (actual - expected).abs().max() / expected.abs().max()
    assert error < TOLERANCE[quantization], f"{quantization}: relative error {error:.2e}"
    assert actual.argmax() == expected.argmax()
    assert loaded.config.tie_word_embeddings == merged.config.tie_word_embeddings


def test_gguf_carries_the_tokenizer_and_the_locked_template(merged_dir: Path) -> None:
    reader = gguf.GGUFReader(merged_dir / "model-q8_0.gguf")
    assert reader.fields["tokenizer.chat_template"].contents() == LOCKED
    assert reader.fields["general.architecture"].contents() == "llama"
    assert reader.fields["llama.rope.freq_base"].contents() == 50000.0
    assert reader.fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_Q8_0
    assert "output.weight" in {t.name for t in reader.tensors}  # untied: its own lm_head

    tokenizer = AutoTokenizer.from_pretrained(merged_dir, gguf_file="model-q8_0.gguf")
    original = AutoTokenizer.from_pretrained(merged_dir, local_files_only=True)
    text = f"{PROMPT} <|im_start|>user\nhi<|im_end|>"
    assert tokenizer(text).input_ids == original(text).input_ids

    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32
    assert types["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.Q8_0
    assert types["token_embd.weight"] == gguf.GGMLQuantizationType.Q8_0


def test_rotary_permutation_is_what_transformers_undoes() -> None:
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    weights = np.arange(8 * 16 * 3, dtype=np.float32).reshape(8 * 16, 3)
    permuted = permute_rotary(weights, 8)
    assert not np.array_equal(permuted, weights)
    undone = LlamaTensorProcessor()._reverse_permute_weights(permuted, 8, 8)
    assert np.array_equal(undone, weights)


def test_matrices_quantize_only_in_whole_blocks() -> None:
    q8, f16, f32 = (
        gguf.GGMLQuantizationType.Q8_0,
        gguf.GGMLQuantizationType.F16,
        gguf.GGMLQuantizationType.F32,
    )
    assert tensor_qtype("blk.0.attn_q.weight", (64, 64), "q8_0") == q8
    assert tensor_qtype("blk.0.attn_q.weight", (64, 48), "q8_0") == f16  # 48 % 32 != 0
    assert tensor_qtype("blk.0.attn_q.weight", (64, 64), "f16") == f16
    assert tensor_qtype("output_norm.weight", (64,), "q8_0") == f32


def test_vocab_entries_type_every_embedding_row() -> None:
    tokenizer_json = {
        "model": {"vocab": {"a": 0, "b": 1, "<s>": 2}},
        "added_tokens": [
            {"id": 2, "content": "<s>", "special": True},
            {"id": 3, "content": "<think>", "special": False},
        ],
    }
    tokens, types = vocab_entries(tokenizer_json, 6)
    assert tokens == ["a", "b", "<s>", "<think>", "[PAD4]", "[PAD5]"]
    T = gguf.TokenType
    assert types == [T.NORMAL, T.NORMAL, T.CONTROL, T.USER_DEFINED, T.UNUSED, T.UNUSED]
    with pytest.raises(GgufUnsupported, match="token id 3"):
        vocab_entries(tokenizer_json, 3)


def test_pre_tokenizers_get_llama_cpp_names() -> None:
    assert pre_tokenizer_name({"type": "ByteLevel", "use_regex": True}) == "gpt-2"
    smollm = {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "use_regex": True},
        ],
    }
    assert pre_tokenizer_name(smollm) == "smollm"
    llama3 = {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}},
            {"type": "ByteLevel", "use_regex": False},
        ],
    }
    assert pre_tokenizer_name(llama3) == "llama-bpe"
    with pytest.raises(GgufUnsupported, match="pre-tokenizer"):
        pre_tokenizer_name({"type": "Metaspace"})


def test_other_architectures_and_rope_types_are_refused() -> None:
    with pytest.raises(GgufUnsupported, match="qwen2"):
        check_architecture({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]})
    with pytest.raises(GgufUnsupported, match="language-model head"):
        check_architecture(
            {"model_type": "llama", "architectures": ["LlamaForSequenceClassification"]}
        )
    assert rope_scaling({"rope_parameters": {"rope_type": "default"}}) == ("none", None)
    assert rope_scaling({"rope_parameters": {"rope_type": "linear", "factor": 2.0}}) == (
        "linear",
        2.0,
    )
    with pytest.raises(GgufUnsupported, match="'llama3' rope"):
        rope_scaling({"rope_parameters": {"rope_type": "llama3", "factor": 8.0}})


def test_a_non_llama_model_dir_is_refused_before_writing(merged_dir: Path, tmp_path) -> None:
    config = json.loads((merged_dir / "config.json").read_text())
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({**config, "model_type": "mistral"}))
    with pytest.raises(GgufUnsupported, match="mistral"):
        write_gguf(other, tmp_path / "x.gguf", "f16", "x")
    assert not (tmp_path / "x.gguf").exists()


def test_logits_tolerance_is_meaningful(merged_dir: Path) -> None:
    """The check above would catch a wrong tensor: the untrained base differs far more."""
    base = AutoModelForCausalLM.from_pretrained(merged_dir.parent / "base")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    expected = next_token_logits(merged, merged_dir)
    error = (next_token_logits(base, merged_dir) - expected).abs().max() / expected.abs().max()
    assert error > 5 * TOLERANCE["q8_0"]
