"""A decoder model's shape from its ``config.json``, and exact trainable-parameter counts.

Plain arithmetic (read with ``json``: the web process never imports torch, transformers or peft).
Counts are exact for the families in ``FAMILIES`` and follow peft's own construction of each
adapter (see the ``*_parameters`` functions).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.spec import TrainingSpec, module_list

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}

# Per family: which projections carry a bias (True/False, or the config key that says so),
# norm vectors per block, and per-head q/k norms (Qwen3).
FAMILIES: dict[str, dict[str, Any]] = {
    "llama": {"qkv_bias": "attention_bias", "o_bias": "attention_bias", "mlp_bias": "mlp_bias"},
    "mistral": {},
    "qwen2": {"qkv_bias": True},
    "qwen3": {"qkv_bias": "attention_bias", "o_bias": "attention_bias", "qk_norm": True},
    "gemma": {"qkv_bias": "attention_bias", "o_bias": "attention_bias", "tied": True},
    "gemma2": {
        "qkv_bias": "attention_bias",
        "o_bias": "attention_bias",
        "norms": 4,
        "tied": True,
    },
}


class EstimateUnavailable(ValueError):
    """The model's config cannot be read or describes an architecture this module does not know."""


@dataclass(frozen=True)
class Linear:
    name: str  # inside one block, e.g. "self_attn.q_proj"; "lm_head" for the head
    d_in: int
    d_out: int
    bias: bool = False

    @property
    def params(self) -> int:
        return self.d_in * self.d_out + (self.d_out if self.bias else 0)


@dataclass(frozen=True)
class Architecture:
    model_type: str
    hidden_size: int
    num_layers: int
    vocab_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    tied: bool
    dtype: str
    linears: tuple[Linear, ...]  # one block's
    block_norm_params: int
    block_prefix: str = "model.layers"

    @property
    def kv_dim(self) -> int:
        return self.head_dim * self.num_key_value_heads

    @property
    def block_params(self) -> int:
        return sum(linear.params for linear in self.linears) + self.block_norm_params

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def head(self) -> Linear:
        return Linear("lm_head", self.hidden_size, self.vocab_size)

    @property
    def total_params(self) -> int:
        head = 0 if self.tied else self.head.params
        final_norm = self.hidden_size
        return self.embedding_params + self.num_layers * self.block_params + final_norm + head

    def modules(self) -> list[tuple[str, Linear]]:
        """Every linear layer by its full module name, as peft matches target_modules."""
        named = [
            (f"{self.block_prefix}.{i}.{linear.name}", linear)
            for i in range(self.num_layers)
            for linear in self.linears
        ]
        return [*named, ("lm_head", self.head)]


def read_config(model_dir: Path) -> dict[str, Any]:
    path = Path(model_dir) / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EstimateUnavailable(f"cannot read the model's config.json ({exc})") from exc
    if not isinstance(config, dict):
        raise EstimateUnavailable("the model's config.json is not an object")
    return config.get("text_config") or config


def _flag(config: dict[str, Any], rule: Any) -> bool:
    return bool(config.get(rule, False)) if isinstance(rule, str) else bool(rule)


def architecture(config: dict[str, Any]) -> Architecture:
    model_type = str(config.get("model_type", ""))
    family = FAMILIES.get(model_type)
    if family is None:
        known = ", ".join(sorted(FAMILIES))
        raise EstimateUnavailable(
            f"no parameter count for model type '{model_type}' (known: {known})"
        )
    try:
        h = int(config["hidden_size"])
        heads = int(config["num_attention_heads"])
        kv_heads = int(config.get("num_key_value_heads") or heads)
        head_dim = int(config.get("head_dim") or h // heads)
        inter = int(config["intermediate_size"])
        layers = int(config["num_hidden_layers"])
        vocab = int(config["vocab_size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise EstimateUnavailable(f"the model's config.json lacks {exc}") from exc
    qkv_bias = _flag(config, family.get("qkv_bias", False))
    o_bias = _flag(config, family.get("o_bias", False))
    mlp_bias = _flag(config, family.get("mlp_bias", False))
    linears = (
        Linear("self_attn.q_proj", h, heads * head_dim, qkv_bias),
        Linear("self_attn.k_proj", h, kv_heads * head_dim, qkv_bias),
        Linear("self_attn.v_proj", h, kv_heads * head_dim, qkv_bias),
        Linear("self_attn.o_proj", heads * head_dim, h, o_bias),
        Linear("mlp.gate_proj", h, inter, mlp_bias),
        Linear("mlp.up_proj", h, inter, mlp_bias),
        Linear("mlp.down_proj", inter, h, mlp_bias),
    )
    norms = family.get("norms", 2) * h + (2 * head_dim if family.get("qk_norm") else 0)
    dtype = str(config.get("dtype") or config.get("torch_dtype") or "float32")
    return Architecture(
        model_type=model_type,
        hidden_size=h,
        num_layers=layers,
        vocab_size=vocab,
        intermediate_size=inter,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        tied=bool(config.get("tie_word_embeddings", family.get("tied", False))),
        dtype=dtype if dtype in DTYPE_BYTES else "float32",
        linears=linears,
        block_norm_params=norms,
    )


# --- which modules an adapter touches (peft's matching rules) --------------------------------


def _matches(name: str, keys: list[str]) -> bool:
    return any(name == key or name.endswith(f".{key}") for key in keys)


def targeted(arch: Architecture, value: str) -> list[Linear]:
    """The linear layers ``target_modules`` selects. all-linear: every linear in the blocks
    (peft leaves out the output layer)."""
    if value == "all-linear":
        return [linear for name, linear in arch.modules() if name != "lm_head"]
    keys = module_list(value)
    return [linear for name, linear in arch.modules() if _matches(name, keys)]


def unmatched_targets(arch: Architecture, value: str) -> list[str]:
    if value == "all-linear":
        return []
    names = [name for name, _ in arch.modules()]
    return [key for key in module_list(value) if not any(_matches(n, [key]) for n in names)]


# --- trainable parameters, as peft builds each adapter ----------------------------------------


def lora_parameters(arch: Architecture, spec: TrainingSpec) -> int:
    """A (r x d_in) + B (d_out x r) per targeted matrix; DoRA adds a magnitude (d_out)."""
    total = 0
    for linear in targeted(arch, spec.lora_target_modules):
        total += spec.lora_r * (linear.d_in + linear.d_out)
        if spec.adapter == "dora":
            total += linear.d_out
    return total


def ia3_parameters(arch: Architecture, spec: TrainingSpec) -> int:
    """One vector per targeted matrix: d_in for feed-forward layers, d_out otherwise."""
    feedforward = module_list(spec.ia3_feedforward_modules)
    if spec.ia3_target_modules == "all-linear":
        names = [(n, lin) for n, lin in arch.modules() if n != "lm_head"]
    else:
        keys = module_list(spec.ia3_target_modules)
        names = [(n, lin) for n, lin in arch.modules() if _matches(n, keys)]
    return sum(lin.d_in if _matches(n, feedforward) else lin.d_out for n, lin in names)


def prefix_parameters(arch: Architecture, spec: TrainingSpec) -> int:
    """peft's PrefixEncoder: a key and a value per layer per virtual token. With grouped-query
    attention peft sizes it to the key/value width (head_dim x kv heads), not hidden_size."""
    width = arch.kv_dim
    out = arch.num_layers * 2 * width
    tokens = spec.num_virtual_tokens
    if not spec.prefix_projection:
        return tokens * out
    enc = spec.encoder_hidden_size or width
    return tokens * width + (width * enc + enc) + (enc * out + out)


def prompt_parameters(arch: Architecture, spec: TrainingSpec) -> int:
    """peft's PromptEmbedding: one hidden-size embedding per virtual token."""
    return spec.num_virtual_tokens * arch.hidden_size


def ptuning_parameters(arch: Architecture, spec: TrainingSpec) -> int:
    """peft's PromptEncoder (MLP): embedding + Linear(h, e) + Linear(e, e) + Linear(e, h)."""
    h = arch.hidden_size
    e = spec.encoder_hidden_size or h
    return spec.num_virtual_tokens * h + (h * e + e) + (e * e + e) + (e * h + h)


def freeze_parameters(arch: Architecture, spec: TrainingSpec) -> int:
    layers = min(spec.freeze_trainable_layers, arch.num_layers)
    total = layers * arch.block_params
    if spec.freeze_train_embeddings:
        total += arch.embedding_params
    if spec.freeze_train_lm_head and not (arch.tied and spec.freeze_train_embeddings):
        total += arch.head.params  # tied: the same tensor as the embeddings
    return total


ADAPTER_PARAMETERS = {
    "lora": lora_parameters,
    "dora": lora_parameters,
    "qlora": lora_parameters,
    "ia3": ia3_parameters,
    "prefix": prefix_parameters,
    "prompt": prompt_parameters,
    "ptuning": ptuning_parameters,
}


@dataclass(frozen=True)
class ParameterCount:
    trainable: int
    total: int  # base model + adapter, as peft's get_nb_trainable_parameters() counts
    adapter: int  # parameters the adapter adds (0 for full and freeze)


def count_parameters(arch: Architecture, spec: TrainingSpec) -> ParameterCount:
    base = arch.total_params
    if spec.adapter == "full":
        return ParameterCount(base, base, 0)
    if spec.adapter == "freeze":
        return ParameterCount(freeze_parameters(arch, spec), base, 0)
    added = ADAPTER_PARAMETERS[spec.adapter](arch, spec)
    return ParameterCount(added, base + added, added)


# --- conflicts a spec has with one particular model -------------------------------------------


def _short_names(arch: Architecture) -> list[str]:
    return [linear.name.rsplit(".", 1)[-1] for linear in arch.linears]


def model_conflicts(spec: TrainingSpec, arch: Architecture) -> list[tuple[str, str]]:
    """[(field, reason)] for knob values this model cannot take."""
    problems: list[tuple[str, str]] = []
    if spec.adapter == "freeze":
        if spec.freeze_trainable_layers > arch.num_layers:
            problems.append(
                (
                    "freeze_trainable_layers",
                    f"the model has {arch.num_layers} blocks; train at most {arch.num_layers} "
                    "(or use full fine-tuning)",
                )
            )
        if arch.tied and spec.freeze_train_embeddings != spec.freeze_train_lm_head:
            problems.append(
                (
                    "freeze_train_lm_head",
                    "this model ties its output head to its input embeddings (one tensor): "
                    "train both or neither",
                )
            )
    for field, adapters in (
        ("lora_target_modules", ("lora", "dora", "qlora")),
        ("ia3_target_modules", ("ia3",)),
    ):
        if spec.adapter in adapters and (missing := unmatched_targets(arch, getattr(spec, field))):
            problems.append(
                (
                    field,
                    f"no linear layer named {', '.join(missing)} in this {arch.model_type} "
                    f"model (it has: {', '.join(_short_names(arch))})",
                )
            )
    return problems


# --- memory --------------------------------------------------------------------------------


def check_against_model(spec: TrainingSpec, model_dir: Path) -> list[dict[str, Any]]:
    """Errors (as JobRequestError entries) for knobs the model cannot take; none when the
    architecture is unknown (the worker then reports what peft says)."""
    try:
        arch = architecture(read_config(model_dir))
    except EstimateUnavailable:
        return []
    return [
        {"loc": ["hyperparameters", field], "msg": reason, "type": "conflict"}
        for field, reason in model_conflicts(spec, arch)
    ]
