"""The export process: ``python -m worker.training.export EXPORT_ID ERROR_FILE``.

Merges an adapter checkpoint (LoRA, DoRA, QLoRA, IA3) into the weights it was trained on (the
base model, with a chained job's ancestors folded in first), or copies a full
model checkpoint (full and freeze runs), and writes a tar archive of a Hugging Face model
directory (safetensors weights, sharded past ``export_max_shard_bytes``, config, tokenizer
carrying the locked chat template). Prompt learning adapters (prefix, prompt, p-tuning) add
virtual tokens, not weight updates: they cannot be merged, and are refused with that reason.

The other kinds: ``adapter`` archives the PEFT adapter as trained with the tokenizer;
``gguf`` writes the merged weights as one llama.cpp file (worker.training.gguf_export). Every
archive carries a model card (README.md) and manifest.json (app.export_manifest).
"""

from __future__ import annotations

import json
import shutil
import sys
import tarfile
import traceback
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from app.db import session_scope
from app.export_manifest import (
    CARD_NAME,
    file_entries,
    model_card,
    sha256_file,
    write_manifest,
)
from app.models import Export
from app.settings import get_settings
from worker.training.chaining import materialize_start
from worker.training.export_plan import ExportPlan, load_plan
from worker.training.gguf_export import check_architecture, write_gguf

# peft types whose adapter is extra virtual tokens rather than a weight update.
NOT_MERGEABLE = {
    "PREFIX_TUNING": "prefix tuning",
    "PROMPT_TUNING": "prompt tuning",
    "P_TUNING": "p-tuning",
}
# What a full-model checkpoint holds besides the tokenizer (weights are *.safetensors).
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors.index.json")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
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
) -> None:
    adapter_config = json.loads((checkpoint_dir / "adapter_config.json").read_text())
    peft_type = adapter_config.get("peft_type")
    if peft_type in NOT_MERGEABLE:
        raise NotMergeable(
            f"a {NOT_MERGEABLE[peft_type]} adapter adds learned virtual tokens, not a weight "
            "update: it cannot be merged into the base model; load the adapter with peft instead"
        )
    if adapter_config.get("task_type") == "SEQ_CLS":  # a reward model: the body + its score head
        base = AutoModelForSequenceClassification.from_pretrained(
            base_path, dtype="auto", num_labels=1
        )
        tokenizer = AutoTokenizer.from_pretrained(checkpoint_dir)
        base.config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
    else:
        base = AutoModelForCausalLM.from_pretrained(base_path, dtype="auto")
    merged = PeftModel.from_pretrained(base, checkpoint_dir).merge_and_unload()
    merged.save_pretrained(out_dir, max_shard_size=max_shard_size)  # always safetensors
    _save_tokenizer(checkpoint_dir, out_dir, chat_template)


def _shard_bytes(max_shard_size: int | str) -> int | None:
    return max_shard_size if isinstance(max_shard_size, int) else None


def _reshard(checkpoint_dir: Path, out_dir: Path, max_shard_size: int | str) -> None:
    architectures = json.loads((checkpoint_dir / "config.json").read_text()).get("architectures")
    scores = any(a.endswith("ForSequenceClassification") for a in architectures or [])
    loader = AutoModelForSequenceClassification if scores else AutoModelForCausalLM
    model = loader.from_pretrained(checkpoint_dir, dtype="auto")
    model.save_pretrained(out_dir, max_shard_size=max_shard_size)


def copy_full_checkpoint(
    base_path: Path,
    checkpoint_dir: Path,
    out_dir: Path,
    chat_template: str | None,
    max_shard_size: int | str = DEFAULT_SHARD_SIZE,
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
        _reshard(checkpoint_dir, out_dir, max_shard_size)
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
) -> None:
    if (checkpoint_dir / "adapter_config.json").is_file():
        merge_checkpoint(base_path, checkpoint_dir, out_dir, chat_template, max_shard_size)
    else:
        copy_full_checkpoint(base_path, checkpoint_dir, out_dir, chat_template, max_shard_size)


def export_adapter_dir(
    checkpoint_dir: Path, base_path: Path, out_dir: Path, chat_template: str | None, base_name: str
) -> None:
    """The PEFT adapter as trained (config + weights, no optimizer state) and the tokenizer; the
    config names the base model by its studio name instead of a path on the worker."""
    if not (checkpoint_dir / "adapter_config.json").is_file():
        raise NotMergeable(
            f"checkpoint {checkpoint_dir.name} holds a whole model, not an adapter: there is "
            "nothing to separate; export the merged model instead"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ADAPTER_FILES:
        shutil.copy2(checkpoint_dir / name, out_dir / name)
    config = json.loads((out_dir / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base_name
    (out_dir / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    has_tokenizer = (checkpoint_dir / "tokenizer_config.json").is_file()
    _save_tokenizer(checkpoint_dir if has_tokenizer else base_path, out_dir, chat_template)


def write_archive(model_dir: Path, archive: Path, root_name: str) -> str:
    """Tar ``model_dir`` (uncompressed: safetensors barely compress) and return its sha256."""
    tmp = archive.with_suffix(".part")
    with tarfile.open(tmp, "w") as tar:
        tar.add(model_dir, arcname=root_name)
    tmp.replace(archive)
    return sha256_file(archive)


def build_merged(
    plan: ExportPlan, work_dir: Path, out_dir: Path, max_shard_size: int | str
) -> None:
    start_dir = work_dir / "start-model"
    with torch.no_grad():
        start_path = materialize_start(plan.base_path, plan.chain, start_dir)
        export_model_dir(
            start_path, plan.checkpoint_dir, out_dir, plan.chat_template, max_shard_size
        )
    shutil.rmtree(start_dir, ignore_errors=True)


def build_gguf(plan: ExportPlan, work_dir: Path, out_dir: Path) -> str:
    """The merged model as ``model-<quantization>.gguf`` in ``out_dir``; returns its name."""
    check_architecture(json.loads((plan.base_path / "config.json").read_text()))
    merged = work_dir / "merged"
    shutil.rmtree(merged, ignore_errors=True)
    build_merged(plan, work_dir, merged, DEFAULT_SHARD_SIZE)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"model-{plan.quantization}.gguf"
    write_gguf(merged, out_dir / name, plan.quantization or "f16", plan.root_name)
    shutil.rmtree(merged)
    return name


def build_export_dir(plan: ExportPlan, work_dir: Path, out_dir: Path, max_shard_size: int) -> None:
    """The archive's contents: the kind's files, the model card and the manifest."""
    gguf_name = None
    if plan.kind == "adapter":
        export_adapter_dir(
            plan.checkpoint_dir, plan.base_path, out_dir, plan.chat_template, plan.base_name
        )
    elif plan.kind == "gguf":
        gguf_name = build_gguf(plan, work_dir, out_dir)
    else:
        build_merged(plan, work_dir, out_dir, max_shard_size)
    (out_dir / CARD_NAME).write_text(model_card(plan.manifest, plan.root_name, gguf_name))
    plan.manifest["files"] = file_entries(out_dir)
    write_manifest(out_dir, plan.manifest)


def export(export_id: int) -> None:
    settings = get_settings()
    with session_scope() as session:
        record = session.get(Export, export_id)
        assert record is not None, f"export {export_id} does not exist"
        plan = load_plan(session, record, settings.jobs_dir)

    work_dir = settings.exports_dir / str(export_id)
    model_dir = work_dir / "model"
    shutil.rmtree(model_dir, ignore_errors=True)
    build_export_dir(plan, work_dir, model_dir, settings.export_max_shard_bytes)
    archive = work_dir / "model.tar"
    sha256 = write_archive(model_dir, archive, plan.root_name)
    shutil.rmtree(model_dir)
    with session_scope() as session:
        record = session.get(Export, export_id)
        assert record is not None
        record.path = str(archive.resolve().relative_to(settings.exports_dir.resolve()))
        record.size_bytes = archive.stat().st_size
        record.sha256 = sha256
        record.manifest = plan.manifest


def main() -> None:
    export_id, error_file = int(sys.argv[1]), Path(sys.argv[2])
    try:
        export(export_id)
    except Exception as exc:
        error_file.write_text(f"{type(exc).__name__}: {exc}")
        traceback.print_exc()
        sys.exit(1)


if __name__ == "__main__":
    main()
