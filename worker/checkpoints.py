"""The one place the worker loads models: a base model, a checkpoint (whole model or peft
adapter), a reward or value model (score head), and a chain of checkpoints folded into plain
weights. Whether a checkpoint has a score head is its method's (``app.methods``), never guessed
from its files.

Folding a chain: a parent checkpoint that holds a LoRA-family or IA3 adapter is merged into the
weights it was trained on, and a new run trains a fresh adapter of its own on top. That is
TRL's documented way to run DPO on an SFT model trained with peft ("option 1: merge the adapter
layers into the base model", DPO trainer docs), and it gives preference methods the right
reference: DPO/KTO with a peft adapter use the model with its adapter disabled as reference,
which after the merge is the SFT policy. A full or freeze checkpoint already is a whole model
and is loaded as is; every ancestor is folded in, oldest first, and a whole-model checkpoint in
the chain replaces what came before it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from app.methods import is_reward_model

ADAPTER_CONFIG = "adapter_config.json"
Dtype = torch.dtype | str


@dataclass(frozen=True)
class Stage:
    """A checkpoint directory in a lineage and the method that trained it (its head)."""

    path: Path
    method: str

    @property
    def scores(self) -> bool:
        return is_reward_model(self.method)


def is_adapter(path: Path) -> bool:
    return (path / ADAPTER_CONFIG).is_file()


def training_dtype(
    use_cpu: bool, precision: str | None = None, *, full_weights: bool = False
) -> Dtype:
    """The dtype weights are loaded in to train (and merged in for a chained start): float32 on
    CPU or for fp32 runs; bfloat16 for bf16 runs; for fp16 runs float16 for a frozen base under
    an adapter, float32 for weights trained whole (fp16 mixed precision keeps fp32 master weights
    and scales the loss). Without a precision: the weights' own dtype on a GPU."""
    if use_cpu or precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float32 if full_weights else torch.float16
    return "auto"


def inference_placement() -> tuple[str, torch.dtype]:
    """Generation and evaluation: the GPU in bf16 (fp16 where unsupported), else CPU float32."""
    if torch.cuda.is_available():
        return "cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return "cpu", torch.float32


def load_weights(
    path: Path,
    *,
    scores: bool = False,
    dtype: Dtype | None = "auto",
    pad_token_id: int | None = None,
    **kwargs: Any,
) -> Any:
    """A model directory as a causal LM, or (``scores``) the same body with a one-output score
    head, which scores the last non-pad token: ``pad_token_id`` fills a config that has none."""
    if dtype is not None:
        kwargs["dtype"] = dtype
    if not scores:
        return AutoModelForCausalLM.from_pretrained(path, **kwargs)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, **kwargs)
    if pad_token_id is not None and model.config.pad_token_id is None:
        model.config.pad_token_id = pad_token_id
    return model


def load_gguf(gguf_path: Path) -> Any:
    """A llama.cpp file as a causal LM, de-quantized to float32 (it refuses save_pretrained)."""
    return AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)


def load_scorer(path: Path, pad_token_id: int | None, dtype: Dtype | None = None) -> Any:
    """A reward (or value) model: whole weights with a score head."""
    return load_weights(path, scores=True, dtype=dtype, pad_token_id=pad_token_id)


def attach_adapter(model: Any, adapter_dir: Path) -> Any:
    """The model with a trained peft adapter on top (any kind: prompt learning too)."""
    return PeftModel.from_pretrained(model, adapter_dir)


def merge_adapter(model: Any, adapter_dir: Path) -> Any:
    """The model with a LoRA-family or IA3 adapter folded into its weights."""
    return attach_adapter(model, adapter_dir).merge_and_unload()


def _save(model: torch.nn.Module, path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    model.save_pretrained(path)
    return path


def _pending_adapters(base_path: Path, chain: list[Stage]) -> tuple[Path, list[Stage]]:
    """The last whole model in the chain (or the base) and the adapters that follow it."""
    start, adapters = base_path, []
    for stage in chain:
        if is_adapter(stage.path):
            adapters.append(stage)
        else:
            start, adapters = stage.path, []  # a whole model: what came before is already in it
    return start, adapters


def materialize_start(
    base_path: Path,
    chain: list[Stage],
    out_dir: Path,
    *,
    dtype: Dtype = "auto",
    write: bool = True,
) -> Path:
    """A model directory holding the base with every checkpoint of ``chain`` folded in; the
    base itself (no chain), or the last whole-model checkpoint when no adapter follows it.
    ``write=False`` only says where it is (the other ranks of a run, once rank 0 wrote it)."""
    start, adapters = _pending_adapters(base_path, chain)
    if not adapters:
        return start
    if not write:
        return out_dir
    shutil.rmtree(out_dir, ignore_errors=True)
    model, scores = None, False
    with torch.no_grad():
        for i, stage in enumerate(adapters):
            if model is None or (stage.scores and not scores):  # first, or LM -> reward model
                source = start
                if model is not None:
                    source = _save(model, out_dir.with_name(f"{out_dir.name}-stage{i}"))
                scores = stage.scores
                model = load_weights(source, scores=scores, dtype=dtype)
            model = merge_adapter(model, stage.path)
        assert model is not None
        model.save_pretrained(out_dir)  # safetensors
    for stage_dir in out_dir.parent.glob(f"{out_dir.name}-stage*"):
        shutil.rmtree(stage_dir, ignore_errors=True)
    return out_dir


@contextmanager
def opened(
    base_path: Path,
    chain: list[Stage],
    checkpoint_dir: Path | None,
    *,
    scores: bool = False,
) -> Iterator[Any]:
    """A base model or checkpoint ready to run (eval mode, on the GPU when there is one), its
    ancestors folded in; an adapter checkpoint stays a peft model (no merge needed to run it).
    Temporary merges are cleaned up on exit."""
    device, dtype = inference_placement()
    with tempfile.TemporaryDirectory(prefix="ftstudio-start-") as tmp:
        start = materialize_start(base_path, chain, Path(tmp) / "start", dtype=dtype)
        adapter = checkpoint_dir is not None and is_adapter(checkpoint_dir)
        weights = start if checkpoint_dir is None or adapter else checkpoint_dir
        model = load_weights(weights, scores=scores, dtype=dtype)
        if adapter:
            assert checkpoint_dir is not None
            model = attach_adapter(model, checkpoint_dir)
        model.to(device).eval()
        try:
            yield model
        finally:
            del model
