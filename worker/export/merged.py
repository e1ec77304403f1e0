"""An export's model files: an adapter checkpoint (LoRA, DoRA, QLoRA, IA3) merged into the
weights it was trained on, a full checkpoint (full and freeze runs) copied, or the PEFT adapter
as trained; each with the tokenizer carrying the locked chat template. Weights are safetensors,
sharded past ``max_shard_size``. Prompt learning adapters (prefix, prompt, p-tuning) add
virtual tokens, not weight updates: they cannot be merged, and are refused with that reason.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from transformers import AutoTokenizer

from app.methods import is_reward_model
from worker.checkpoints import ADAPTER_CONFIG, is_adapter, load_weights, merge_adapter

# peft types whose adapter is extra virtual tokens rather than a weight update.
NOT_MERGEABLE = {
    "PREFIX_TUNING": "prefix tuning",
    "PROMPT_TUNING": "prompt tuning",
    "P_TUNING": "p-tuning",
}
# What a full-model checkpoint holds besides the tokenizer (weights are *.safetensors).
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors.index.json")
ADAPTER_FILES = (ADAPTER_CONFIG, "adapter_model.safetensors")
DEFAULT_SHARD_SIZE = "5GB"


class NotMergeable(ValueError):
    pass


def _save_tokenizer(source: Path, out_dir: Path, chat_template: str | None) -> None:
    tokenizer = AutoTokenizer.from_pretrained(source)
    if chat_template:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(out_dir)


def merge_checkpoint(
    base_path: Path,
    checkpoint_dir: Path,
    out_dir: Path,
    chat_template: str | None,
    max_shard_size: int | str = DEFAULT_SHARD_SIZE,
    *,
    method: str | None = None,
) -> None:
    """``method`` trained the checkpoint: a reward model's adapter goes on the body with its
    score head."""
    peft_type = json.loads((checkpoint_dir / ADAPTER_CONFIG).read_text()).get("peft_type")
    if peft_type in NOT_MERGEABLE:
        raise NotMergeable(
            f"a {NOT_MERGEABLE[peft_type]} adapter adds learned virtual tokens, not a weight "
            "update: it cannot be merged into the base model; load the adapter with peft instead"
        )
    base = load_weights(base_path, scores=is_reward_model(method))
    if is_reward_model(method):
        tokenizer = AutoTokenizer.from_pretrained(checkpoint_dir)
        base.config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
    merged = merge_adapter(base, checkpoint_dir)
    merged.save_pretrained(out_dir, max_shard_size=max_shard_size)  # always safetensors
    _save_tokenizer(checkpoint_dir, out_dir, chat_template)


def _shard_bytes(max_shard_size: int | str) -> int | None:
    return max_shard_size if isinstance(max_shard_size, int) else None


def _reshard(
    checkpoint_dir: Path, out_dir: Path, max_shard_size: int | str, method: str | None
) -> None:
    model = load_weights(checkpoint_dir, scores=is_reward_model(method))
    model.save_pretrained(out_dir, max_shard_size=max_shard_size)


def copy_full_checkpoint(
    base_path: Path,
    checkpoint_dir: Path,
    out_dir: Path,
    chat_template: str | None,
    max_shard_size: int | str = DEFAULT_SHARD_SIZE,
    *,
    method: str | None = None,
) -> None:
    """A full or freeze run's checkpoint already is a whole model: copy its weights and config
    (not the optimizer state an intermediate checkpoint carries); re-save it in smaller shards
    when a file is larger than ``max_shard_size`` bytes."""
    weights = sorted(checkpoint_dir.glob("*.safetensors"))
    if not weights:
        raise FileNotFoundError(f"no safetensors weights in checkpoint {checkpoint_dir.name}")
    out_dir.mkdir(parents=True, exist_ok=True)
    limit = _shard_bytes(max_shard_size)
    if limit is not None and any(path.stat().st_size > limit for path in weights):
        _reshard(checkpoint_dir, out_dir, max_shard_size, method)
    else:
        for path in weights + [checkpoint_dir / name for name in MODEL_FILES]:
            if path.is_file():
                shutil.copy2(path, out_dir / path.name)
    has_tokenizer = (checkpoint_dir / "tokenizer_config.json").is_file()
    _save_tokenizer(checkpoint_dir if has_tokenizer else base_path, out_dir, chat_template)


def export_model_dir(
    base_path: Path,
    checkpoint_dir: Path,
    out_dir: Path,
    chat_template: str | None,
    max_shard_size: int | str = DEFAULT_SHARD_SIZE,
    *,
    method: str | None = None,
) -> None:
    """The whole model a checkpoint of a ``method`` run stands for (None: a language model)."""
    build = merge_checkpoint if is_adapter(checkpoint_dir) else copy_full_checkpoint
    build(base_path, checkpoint_dir, out_dir, chat_template, max_shard_size, method=method)


def export_adapter_dir(
    checkpoint_dir: Path, base_path: Path, out_dir: Path, chat_template: str | None, base_name: str
) -> None:
    """The PEFT adapter as trained (config + weights, no optimizer state) and the tokenizer; the
    config names the base model by its studio name instead of a path on the worker."""
    if not is_adapter(checkpoint_dir):
        raise NotMergeable(
            f"checkpoint {checkpoint_dir.name} holds a whole model, not an adapter: there is "
            "nothing to separate; export the merged model instead"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ADAPTER_FILES:
        shutil.copy2(checkpoint_dir / name, out_dir / name)
    config = json.loads((out_dir / ADAPTER_CONFIG).read_text())
    config["base_model_name_or_path"] = base_name
    (out_dir / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))
    has_tokenizer = (checkpoint_dir / "tokenizer_config.json").is_file()
    _save_tokenizer(checkpoint_dir if has_tokenizer else base_path, out_dir, chat_template)
