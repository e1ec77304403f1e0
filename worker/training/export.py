"""The export process: ``python -m worker.training.export EXPORT_ID ERROR_FILE``.

Merges an adapter checkpoint (LoRA, DoRA, QLoRA, IA3) into its base model, or copies a full
model checkpoint (full and freeze runs), and writes a tar archive of a Hugging Face model
directory (safetensors weights, config, tokenizer carrying the locked chat template). Prompt
learning adapters (prefix, prompt, p-tuning) add virtual tokens, not weight updates: they
cannot be merged, and are refused with that reason.
"""

from __future__ import annotations

import hashlib
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
from app.models import Export
from app.settings import get_settings

# peft types whose adapter is extra virtual tokens rather than a weight update.
NOT_MERGEABLE = {
    "PREFIX_TUNING": "prefix tuning",
    "PROMPT_TUNING": "prompt tuning",
    "P_TUNING": "p-tuning",
}
# What a full-model checkpoint holds besides the tokenizer (weights are *.safetensors).
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors.index.json")


class NotMergeable(ValueError):
    pass


def _save_tokenizer(source: Path, out_dir: Path, chat_template: str | None) -> None:
    tokenizer = AutoTokenizer.from_pretrained(source)
    if chat_template:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(out_dir)


def merge_checkpoint(
    base_path: Path, checkpoint_dir: Path, out_dir: Path, chat_template: str | None
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
    merged.save_pretrained(out_dir)  # always safetensors in transformers 5
    _save_tokenizer(checkpoint_dir, out_dir, chat_template)


def copy_full_checkpoint(
    base_path: Path, checkpoint_dir: Path, out_dir: Path, chat_template: str | None
) -> None:
    """A full or freeze run's checkpoint already is a whole model: copy its weights and config
    (not the optimizer state an intermediate checkpoint carries)."""
    weights = sorted(checkpoint_dir.glob("*.safetensors"))
    if not weights:
        raise FileNotFoundError(f"no safetensors weights in checkpoint {checkpoint_dir.name}")
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in weights + [checkpoint_dir / name for name in MODEL_FILES]:
        if path.is_file():
            shutil.copy2(path, out_dir / path.name)
    has_tokenizer = (checkpoint_dir / "tokenizer_config.json").is_file()
    _save_tokenizer(checkpoint_dir if has_tokenizer else base_path, out_dir, chat_template)


def export_model_dir(
    base_path: Path, checkpoint_dir: Path, out_dir: Path, chat_template: str | None
) -> None:
    if (checkpoint_dir / "adapter_config.json").is_file():
        merge_checkpoint(base_path, checkpoint_dir, out_dir, chat_template)
    else:
        copy_full_checkpoint(base_path, checkpoint_dir, out_dir, chat_template)


def write_archive(model_dir: Path, archive: Path, root_name: str) -> str:
    """Tar ``model_dir`` (uncompressed: safetensors barely compress) and return its sha256."""
    tmp = archive.with_suffix(".part")
    with tarfile.open(tmp, "w") as tar:
        tar.add(model_dir, arcname=root_name)
    digest = hashlib.sha256()
    with tmp.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    tmp.replace(archive)
    return digest.hexdigest()


def export(export_id: int) -> None:
    settings = get_settings()
    with session_scope() as session:
        record = session.get(Export, export_id)
        assert record is not None, f"export {export_id} does not exist"
        job = record.checkpoint.job
        checkpoint_dir = settings.jobs_dir / record.checkpoint.path
        base_path = Path(job.base_model.path)
        chat_template = job.chat_template
        root_name = f"job{job.id}-step{record.checkpoint.step}-merged"

    work_dir = settings.exports_dir / str(export_id)
    model_dir = work_dir / "model"
    shutil.rmtree(model_dir, ignore_errors=True)
    with torch.no_grad():
        export_model_dir(base_path, checkpoint_dir, model_dir, chat_template)
    archive = work_dir / "model.tar"
    sha256 = write_archive(model_dir, archive, root_name)
    shutil.rmtree(model_dir)
    with session_scope() as session:
        record = session.get(Export, export_id)
        assert record is not None
        record.path = str(archive.resolve().relative_to(settings.exports_dir.resolve()))
        record.size_bytes = archive.stat().st_size
        record.sha256 = sha256


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
