"""The export process: ``python -m worker.training.export EXPORT_ID ERROR_FILE``.

Merges a LoRA checkpoint into its base model and writes a tar archive of a Hugging Face
model directory (safetensors weights, config, tokenizer carrying the locked chat template).
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import tarfile
import traceback
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from app.db import session_scope
from app.models import Export
from app.settings import get_settings


def merge_checkpoint(
    base_path: Path, checkpoint_dir: Path, out_dir: Path, chat_template: str | None
) -> None:
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype="auto")
    merged = PeftModel.from_pretrained(base, checkpoint_dir).merge_and_unload()
    merged.save_pretrained(out_dir)  # always safetensors in transformers 5
    tokenizer = AutoTokenizer.from_pretrained(checkpoint_dir)
    if chat_template:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(out_dir)


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
        merge_checkpoint(base_path, checkpoint_dir, model_dir, chat_template)
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
