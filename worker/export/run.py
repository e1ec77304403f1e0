"""The export process: ``python -m worker.export EXPORT_ID ERROR_FILE``.

It builds the export's directory (``merged``: the model files; ``gguf``: the merged weights as
one llama.cpp file; ``adapter``: the PEFT adapter as trained), adds a model card (README.md) and
manifest.json (app.export_manifest), and writes it as a tar archive.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import torch

from app.db import session_scope
from app.export_manifest import CARD_NAME, file_entries, model_card, sha256_file, write_manifest
from app.models import Export, ExportStatus
from app.settings import get_settings
from app.states import move
from worker.checkpoints import materialize_start
from worker.child import run_child_main
from worker.export.gguf import check_architecture, write_gguf
from worker.export.merged import DEFAULT_SHARD_SIZE, export_adapter_dir, export_model_dir
from worker.export.plan import ExportPlan, load_plan

PARTIAL_OUTPUTS = ("model", "model.tar.part", "start-model", "merged")  # in the export's folder


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


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
            start_path,
            plan.checkpoint_dir,
            out_dir,
            plan.chat_template,
            max_shard_size,
            method=plan.method,
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
    archive = work_dir / "model.tar"
    try:
        shutil.rmtree(model_dir, ignore_errors=True)
        build_export_dir(plan, work_dir, model_dir, settings.export_max_shard_bytes)
        sha256 = write_archive(model_dir, archive, plan.root_name)
    except BaseException:
        # A failed export (a full disk, most often) leaves nothing half-written behind to hold
        # the space a retry needs.
        for partial in PARTIAL_OUTPUTS:
            remove(work_dir / partial)
        raise
    shutil.rmtree(model_dir)
    with session_scope() as session:
        move(
            session,
            Export,
            export_id,
            to=None,
            from_=ExportStatus.running,
            path=str(archive.resolve().relative_to(settings.exports_dir.resolve())),
            size_bytes=archive.stat().st_size,
            sha256=sha256,
            manifest=plan.manifest,
        )


def main() -> None:
    run_child_main(lambda export_id: export(int(export_id)))
