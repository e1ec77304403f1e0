"""What an export process needs from the database, read once: the files to build from and the
manifest's facts (everything but its file list, which the build adds)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from app.chaining import lineage
from app.export_manifest import build_manifest, metric_row, metrics_at, template_entry
from app.exports import base_config
from app.models import ChatTemplateVersion, Export
from app.queries import job_metrics
from worker.checkpoints import Stage
from worker.training.chaining import lineage_stages


@dataclass
class ExportPlan:
    kind: str
    quantization: str | None
    checkpoint_dir: Path
    base_path: Path
    base_name: str
    method: str  # the run's: says whether the checkpoint is a reward model
    chain: list[Stage]  # a chained job's starting weights, oldest first
    chat_template: str | None
    root_name: str
    manifest: dict[str, Any]


def root_name(job_id: int, step: int, kind: str, quantization: str | None) -> str:
    return f"job{job_id}-step{step}-{kind}" + (f"-{quantization}" if quantization else "")


def _template(session: Session, source: str | None, version_id: int | None) -> Any:
    version = session.get(ChatTemplateVersion, version_id) if version_id else None
    if version is None:
        return template_entry(source, None, None, None)
    return template_entry(source, version.template.name, version.version, version.template_id)


def load_plan(session: Session, record: Export, jobs_dir: Path) -> ExportPlan:
    checkpoint, job = record.checkpoint, record.checkpoint.job
    requested = (record.manifest or {}).get("quantization")
    quantization = (requested or "f16") if record.kind == "gguf" else None
    config = base_config(job)
    manifest = build_manifest(
        export={"id": record.id, "kind": record.kind, "quantization": quantization},
        job={
            "id": job.id,
            "name": job.name,
            "method": job.method,
            "adapter": job.adapter,
            "spec_version": job.spec_version,
        },
        checkpoint={"id": checkpoint.id, "step": checkpoint.step, "is_final": checkpoint.is_final},
        base_model={"name": job.base_model.name, "model_type": (config or {}).get("model_type")},
        lineage=[c.id for c in lineage(session, checkpoint)],
        spec=job.spec,
        chat_template=_template(session, job.chat_template, job.chat_template_version_id),
        metrics=metrics_at([metric_row(m) for m in job_metrics(session, job.id)], checkpoint.step),
        files=[],
    )
    return ExportPlan(
        kind=record.kind,
        quantization=quantization,
        checkpoint_dir=jobs_dir / checkpoint.path,
        base_path=Path(job.base_model.path),
        base_name=job.base_model.name,
        method=job.method,
        chain=lineage_stages(session, job, jobs_dir),
        chat_template=job.chat_template,
        root_name=root_name(job.id, checkpoint.step, record.kind, quantization),
        manifest=manifest,
    )
