"""JSON shapes of the REST contract (shared by the API and the pages' data attributes)."""

from __future__ import annotations

import json
import math
from typing import Any

from app.models import BaseModel, Checkpoint, Dataset, Export, Job, JobEvent, Metric


def json_bytes(value: Any) -> bytes:
    """A JSON body as FastAPI's JSONResponse writes it (UTF-8, compact, no NaN)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def model_json(model: BaseModel) -> dict[str, Any]:
    return {"id": model.id, "name": model.name, "source": model.source}


def dataset_json(dataset: Dataset) -> dict[str, Any]:
    return {
        "id": dataset.id,
        "name": dataset.name,
        "kind": dataset.kind,
        "format": dataset.format,
        "num_rows": dataset.num_rows,
        "status": dataset.status,
        "detection": dataset.detection,
        "parent_id": dataset.parent_id,
        "operation": dataset.operation,
        "content_hash": dataset.content_hash,
        "created_at": dataset.created_at.isoformat(),
    }


def job_json(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "name": job.name,
        "status": job.status.value,
        "method": job.method,
        "adapter": job.adapter,
        "base_model": job.base_model_id,
        "dataset_id": job.dataset_id,
        "eval_dataset_id": job.eval_dataset_id,
        "hyperparameters": job.spec,
        "device_class": job.device_class,
        "spec_version": job.spec_version,
        "chat_template": job.chat_template,
        "chat_template_version_id": job.chat_template_version_id,
        "stop_check": job.stop_check,
        "parent_checkpoint_id": job.parent_checkpoint_id,
        "resume_checkpoint_id": job.resume_checkpoint_id,
        "attempt": job.attempt,
        "worker": job.worker,
        "error": job.error,
        "progress": {"step": job.step, "max_steps": job.max_steps},
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def job_event_json(event: JobEvent) -> dict[str, Any]:
    """A job event: a health alarm (with ``advice`` and, for loss alarms, the batch's dataset
    ``rows`` in ``details``), early stopping, or a resume."""
    return {
        "id": event.id,
        "step": event.step,
        "kind": event.kind,
        "severity": event.severity,
        "message": event.message,
        "details": event.details or {},
        "created_at": event.created_at.isoformat(),
    }


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf; a non-finite number is sent as null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def metric_json(metric: Metric) -> dict[str, Any]:
    data = {
        "id": metric.id,
        "step": metric.step,
        "epoch": metric.epoch,
        "loss": metric.loss,
        "learning_rate": metric.learning_rate,
        "grad_norm": metric.grad_norm,
        "num_tokens": metric.num_tokens,
        **(metric.values or {}),
    }
    return {key: _finite(value) for key, value in data.items()}


def checkpoint_json(checkpoint: Checkpoint) -> dict[str, Any]:
    return {
        "id": checkpoint.id,
        "job_id": checkpoint.job_id,
        "step": checkpoint.step,
        "is_final": checkpoint.is_final,
        "stop_check": checkpoint.stop_check,
        "created_at": checkpoint.created_at.isoformat(),
    }


def export_json(export: Export) -> dict[str, Any]:
    return {
        "id": export.id,
        "checkpoint_id": export.checkpoint_id,
        "kind": export.kind,
        "quantization": (export.manifest or {}).get("quantization"),
        "status": export.status.value,
        "error": export.error,
        "size_bytes": export.size_bytes,
        "sha256": export.sha256,
        "download_url": f"/api/exports/{export.id}/download" if export.path else None,
        "manifest": export.manifest if export.path else None,
    }
