"""Requesting exports of a checkpoint, and which export kinds a run allows.

Kinds: ``adapter`` (the PEFT adapter directory as trained), ``merged`` (a Hugging Face model
directory with the update folded into the weights) and ``gguf`` (one llama.cpp file, F16 or
Q8_0, for Llama-family language models). The worker builds them (worker.export); this
module only decides what may be asked for and records the request.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from app.architecture import EstimateUnavailable, read_config
from app.methods import is_reward_model
from app.models import Checkpoint, Export, Job, User
from app.spec import MERGEABLE_ADAPTERS

EXPORT_KINDS = ("adapter", "merged", "gguf")
KIND_LABELS = {"adapter": "Adapter", "merged": "Merged model", "gguf": "GGUF"}
GGUF_QUANTIZATIONS = ("f16", "q8_0")
# Hugging Face model types the GGUF writer maps (llama.cpp's "llama" architecture).
GGUF_MODEL_TYPES = ("llama",)
WHOLE_MODEL_ADAPTERS = ("full", "freeze")


class ExportRequestError(ValueError):
    pass


@dataclass(frozen=True)
class ExportOption:
    """One export kind as the job page offers it: ``refusal`` says why it is not offered."""

    kind: str
    label: str
    refusal: str | None


def _merge_refusal(adapter: str) -> str | None:
    if adapter in MERGEABLE_ADAPTERS:
        return None
    return (
        f"a {adapter} adapter adds learned virtual tokens, not a weight update: it cannot be "
        f"merged into the base model (adapters that merge: {', '.join(MERGEABLE_ADAPTERS)})"
    )


def _adapter_refusal(adapter: str) -> str | None:
    if adapter not in WHOLE_MODEL_ADAPTERS:
        return None
    return (
        f"a {adapter} run updates the model's own weights: there is no adapter to separate "
        "from it; export the merged model instead"
    )


def _gguf_refusal(job_method: str, adapter: str, config: dict[str, Any] | None) -> str | None:
    if refusal := _merge_refusal(adapter):
        return f"GGUF holds plain weights, and {refusal}"
    if is_reward_model(job_method):
        return (
            "a reward model ends in a score head, not a language-model head: GGUF runtimes "
            "generate text, so export the merged model instead"
        )
    if config is None:
        return "the base model's config.json cannot be read, so its architecture is unknown"
    model_type = config.get("model_type")
    if model_type not in GGUF_MODEL_TYPES:
        return (
            f"GGUF export supports Llama-family models ({', '.join(GGUF_MODEL_TYPES)}); this "
            f"base model is a {model_type or 'model of unknown type'}"
        )
    return None


def base_config(job: Job) -> dict[str, Any] | None:
    """The job's base model config.json (its text part), or None when it cannot be read."""
    try:
        return read_config(Path(job.base_model.path))
    except EstimateUnavailable:
        return None


def export_refusal(
    job: Job, kind: str, quantization: str | None, config: dict[str, Any] | None
) -> str | None:
    """Why ``kind`` (with ``quantization`` for GGUF) cannot be exported from ``job``'s
    checkpoints; None when it can. ``config`` is the base model's config.json."""
    if kind not in EXPORT_KINDS:
        return f"export kind '{kind}' is not supported (supported: {', '.join(EXPORT_KINDS)})"
    if kind != "gguf" and quantization is not None:
        return f"quantization applies to GGUF exports only, not to '{kind}'"
    if kind == "gguf" and quantization not in GGUF_QUANTIZATIONS:
        return (
            f"GGUF quantization '{quantization}' is not supported "
            f"(supported: {', '.join(GGUF_QUANTIZATIONS)})"
        )
    if kind == "adapter":
        return _adapter_refusal(job.adapter)
    if kind == "merged":
        return _merge_refusal(job.adapter)
    return _gguf_refusal(job.method, job.adapter, config)


def export_options(job: Job) -> list[ExportOption]:
    """Every export kind for ``job``'s checkpoints, with the reason when it is not allowed."""
    config = base_config(job)
    probe = {"gguf": GGUF_QUANTIZATIONS[0]}
    return [
        ExportOption(kind, KIND_LABELS[kind], export_refusal(job, kind, probe.get(kind), config))
        for kind in EXPORT_KINDS
    ]


def create_export(
    session: Session,
    user: User,
    checkpoint: Checkpoint,
    kind: str,
    quantization: str | None = None,
) -> Export:
    """Record an export request (queued); ExportRequestError says why it cannot be made.
    The request's options live in ``manifest`` until the worker writes the full one."""
    if kind == "gguf" and quantization is None:
        quantization = GGUF_QUANTIZATIONS[0]
    job = checkpoint.job
    config = base_config(job) if kind == "gguf" else None
    if refusal := export_refusal(job, kind, quantization, config):
        raise ExportRequestError(refusal)
    export = Export(
        owner_id=user.id,
        checkpoint_id=checkpoint.id,
        kind=kind,
        manifest={"kind": kind, "quantization": quantization},
    )
    session.add(export)
    session.flush()
    return export


def export_quantization(export: Export) -> str | None:
    return (export.manifest or {}).get("quantization")


def download_filename(export: Export) -> str:
    quantization = export_quantization(export)
    suffix = f"-{quantization}" if quantization else ""
    return f"ftstudio-export-{export.id}-{export.kind}{suffix}.tar"
