"""Write a merged Llama-family model directory as one GGUF file (F16 or Q8_0) with the `gguf`
package, the way llama.cpp's convert_hf_to_gguf.py lays out a Llama:

- tensors renamed with gguf's own name map (``model.layers.0.self_attn.q_proj`` ->
  ``blk.0.attn_q``); q and k projections permuted from Hugging Face's rotary layout (halves)
  back to llama.cpp's (interleaved pairs); a tied ``lm_head`` is left out (llama.cpp reuses
  ``token_embd``);
- 1-D tensors (norms) stay F32; matrices become F16, or Q8_0 when their rows split into whole
  32-value blocks (F16 otherwise, as llama.cpp falls back);
- hyperparameters under ``llama.*``; the tokenizer as llama.cpp's "gpt2" byte-level BPE
  (tokens, types, merges, special ids) with the chat template the directory's tokenizer carries
  (the run's locked one).

Everything but ``write_gguf`` is a pure mapping, tested on its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from safetensors import safe_open

QUANTIZATION_TYPES = {
    "f16": (gguf.LlamaFileType.MOSTLY_F16, gguf.GGMLQuantizationType.F16),
    "q8_0": (gguf.LlamaFileType.MOSTLY_Q8_0, gguf.GGMLQuantizationType.Q8_0),
}
# Hugging Face model types written as llama.cpp's "llama" architecture.
LLAMA_MODEL_TYPES = ("llama",)
# tokenizer.json pre-tokenizers llama.cpp knows by name (see its llama-vocab.cpp pre types).
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


class GgufUnsupported(ValueError):
    """The model cannot be written as GGUF; the message says why."""


def check_architecture(config: dict[str, Any]) -> None:
    architectures = config.get("architectures") or []
    if config.get("model_type") not in LLAMA_MODEL_TYPES:
        raise GgufUnsupported(
            "GGUF export supports Llama-family models; this one is a "
            f"{config.get('model_type') or 'model of unknown type'}"
        )
    if any(not a.endswith("ForCausalLM") for a in architectures):
        raise GgufUnsupported(
            f"GGUF export needs a language-model head; this model is {', '.join(architectures)}"
        )


def head_dim(config: dict[str, Any]) -> int:
    return config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]


def rope_theta(config: dict[str, Any]) -> float:
    parameters = config.get("rope_parameters") or {}
    return float(parameters.get("rope_theta") or config.get("rope_theta") or 10000.0)


def rope_scaling(config: dict[str, Any]) -> tuple[str, float | None]:
    """("none" | "linear", factor); other rope types are refused (llama.cpp needs more for
    them than the config says, e.g. a frequency-factor tensor for Llama 3.1's)."""
    parameters = config.get("rope_parameters") or config.get("rope_scaling") or {}
    rope_type = parameters.get("rope_type") or parameters.get("type") or "default"
    if rope_type == "default":
        return "none", None
    if rope_type == "linear":
        return "linear", float(parameters["factor"])
    raise GgufUnsupported(f"GGUF export does not support '{rope_type}' rope scaling yet")


def permute_rotary(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's LlamaModel.permute: within each head, rows in halves -> interleaved pairs."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def gguf_tensor_name(name_map: gguf.TensorNameMap, hf_name: str) -> str:
    base, dot, suffix = hf_name.rpartition(".")
    mapped = name_map.get_name(base) if suffix in ("weight", "bias") else None
    if mapped is None:
        raise GgufUnsupported(f"no GGUF name for tensor {hf_name}")
    return f"{mapped}{dot}{suffix}"


def prepare_tensor(hf_name: str, data: np.ndarray, config: dict[str, Any]) -> np.ndarray:
    """The tensor as llama.cpp stores it: q and k projections permuted, others unchanged."""
    heads = config["num_attention_heads"]
    if ".self_attn.q_proj." in hf_name:
        return permute_rotary(data, heads)
    if ".self_attn.k_proj." in hf_name:
        return permute_rotary(data, config.get("num_key_value_heads") or heads)
    return data


def tensor_qtype(
    gguf_name: str, shape: tuple[int, ...], quantization: str
) -> gguf.GGMLQuantizationType:
    if len(shape) < 2 or gguf_name.endswith("_norm.weight"):
        return gguf.GGMLQuantizationType.F32
    qtype = QUANTIZATION_TYPES[quantization][1]
    block_size, _ = gguf.GGML_QUANT_SIZES[qtype]
    return qtype if shape[-1] % block_size == 0 else gguf.GGMLQuantizationType.F16


def encode_tensor(data: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    return gguf.quants.quantize(data.astype(np.float32, copy=False), qtype)


def skip_tensor(hf_name: str, config: dict[str, Any]) -> bool:
    tied = config.get("tie_word_embeddings", False)
    return hf_name.endswith("rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight")


def pre_tokenizer_name(pre_tokenizer: dict[str, Any] | None) -> str:
    """llama.cpp's name for a tokenizer.json byte-level pre-tokenizer."""
    steps = (pre_tokenizer or {}).get("pretokenizers") or [pre_tokenizer or {}]
    kinds = [step.get("type") for step in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and steps[0].get("pattern", {}).get("Regex") == LLAMA3_SPLIT:
        return "llama-bpe"
    raise GgufUnsupported(f"GGUF export does not know this tokenizer's pre-tokenizer ({kinds})")


def check_byte_level(tokenizer_json: dict[str, Any]) -> None:
    model, decoder = tokenizer_json.get("model") or {}, tokenizer_json.get("decoder") or {}
    byte_level = decoder.get("type") == "ByteLevel" and not model.get("byte_fallback")
    if model.get("type") != "BPE" or not byte_level:
        raise GgufUnsupported(
            "GGUF export supports byte-level BPE tokenizers (GPT-2 style, as SmolLM and Llama 3 "
            f"use); this tokenizer is {model.get('type')} with a {decoder.get('type')} decoder"
        )


def vocab_entries(tokenizer_json: dict[str, Any], vocab_size: int) -> tuple[list[str], list[int]]:
    """Token texts and llama.cpp token types, one per embedding row (as get_vocab_base does):
    added special tokens are CONTROL, other added ones USER_DEFINED, rows no token uses
    ``[PAD<id>]`` (UNUSED)."""
    texts = {index: token for token, index in tokenizer_json["model"]["vocab"].items()}
    added = {t["id"]: t for t in tokenizer_json.get("added_tokens") or []}
    texts |= {index: t["content"] for index, t in added.items()}
    if texts and max(texts) >= vocab_size:
        raise GgufUnsupported(
            f"the tokenizer has token id {max(texts)} but the model only {vocab_size} embeddings"
        )
    tokens, types = [], []
    for index in range(vocab_size):
        if index not in texts:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
        elif index in added:
            tokens.append(texts[index])
            special = added[index].get("special")
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(texts[index])
            types.append(gguf.TokenType.NORMAL)
    return tokens, [int(t) for t in types]


def _add_hyperparameters(
    writer: gguf.GGUFWriter, config: dict[str, Any], quantization: str, name: str
) -> None:
    writer.add_name(name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config.get("num_key_value_heads") or config["num_attention_heads"])
    writer.add_rope_freq_base(rope_theta(config))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])
    writer.add_rope_dimension_count(head_dim(config))
    scaling, factor = rope_scaling(config)
    if factor is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType(scaling))
        writer.add_rope_scaling_factor(factor)
    writer.add_file_type(QUANTIZATION_TYPES[quantization][0])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _add_tokenizer(writer: gguf.GGUFWriter, model_dir: Path, vocab_size: int) -> None:
    tokenizer_json = json.loads((model_dir / "tokenizer.json").read_text())
    check_byte_level(tokenizer_json)
    tokens, types = vocab_entries(tokenizer_json, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(tokenizer_json.get("pre_tokenizer")))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    # merges, bos/eos/unk/pad ids, add_bos/add_eos and the chat template (chat_template.jinja)
    gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size).add_to_gguf(
        writer, quiet=True
    )


def _weights(model_dir: Path) -> Iterator[tuple[str, np.ndarray]]:
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(path, framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                yield name, f.get_tensor(name).float().numpy()


def check_model_dir(model_dir: Path) -> dict[str, Any]:
    """The directory's config, once it is known to be writable as GGUF."""
    config = json.loads((model_dir / "config.json").read_text())
    check_architecture(config)
    rope_scaling(config)
    check_byte_level(json.loads((model_dir / "tokenizer.json").read_text()))
    return config


def write_gguf(model_dir: Path, out_path: Path, quantization: str, name: str) -> None:
    """Write the Hugging Face model in ``model_dir`` (safetensors, config, tokenizer) as GGUF."""
    config = check_model_dir(model_dir)
    if quantization not in QUANTIZATION_TYPES:
        raise GgufUnsupported(f"unknown GGUF quantization '{quantization}'")
    arch = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA]
    writer = gguf.GGUFWriter(out_path, arch, use_temp_file=True)  # spills to disk past 256 MB
    try:
        _add_hyperparameters(writer, config, quantization, name)
        _add_tokenizer(writer, model_dir, config["vocab_size"])
        name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
        for hf_name, data in _weights(model_dir):
            if skip_tensor(hf_name, config):
                continue
            gguf_name = gguf_tensor_name(name_map, hf_name)
            data = prepare_tensor(hf_name, data, config)
            qtype = tensor_qtype(gguf_name, data.shape, quantization)
            writer.add_tensor(gguf_name, encode_tensor(data, qtype), raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
