"""What an export archive says about itself: ``manifest.json`` and the model card ``README.md``.

The manifest lists every file of the archive (but itself) with its sha256 and size, and records
where the weights came from: base model, lineage, the run's spec, the locked chat template's
version and the metrics at the checkpoint's step. It is stored in ``Export.manifest`` too. Pure
functions apart from hashing files; no torch.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from app.models import Metric

MANIFEST_NAME = "manifest.json"
CARD_NAME = "README.md"
MANIFEST_FORMAT = "ftstudio-export/1"
METRIC_COLUMNS = ("loss", "learning_rate", "grad_norm", "num_tokens", "epoch")

LOADING = {
    "adapter": (
        "from peft import PeftModel\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        'base = AutoModelForCausalLM.from_pretrained("{base}")\n'
        'model = PeftModel.from_pretrained(base, "{root}")\n'
        'tokenizer = AutoTokenizer.from_pretrained("{root}")'
    ),
    "merged": (
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        'model = AutoModelForCausalLM.from_pretrained("{root}")\n'
        'tokenizer = AutoTokenizer.from_pretrained("{root}")'
    ),
    "gguf": (
        "# llama.cpp\n"
        "llama-cli -m {root}/{gguf} -cnv\n\n"
        "# transformers (de-quantizes to full precision)\n"
        'AutoModelForCausalLM.from_pretrained("{root}", gguf_file="{gguf}")'
    ),
}


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def file_entries(root: Path) -> list[dict[str, Any]]:
    """Every file under ``root`` (but the manifest) with its sha256 and size, sorted by path."""
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
    return [
        {"path": p.relative_to(root).as_posix(), "sha256": sha256_file(p), "size": p.stat().st_size}
        for p in paths
    ]


def metric_row(metric: Metric) -> dict[str, Any]:
    row = {column: getattr(metric, column) for column in METRIC_COLUMNS}
    return {**row, **(metric.values or {}), "step": metric.step}


def _recordable(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and not math.isfinite(value))


def metrics_at(rows: Iterable[dict[str, Any]], step: int) -> dict[str, Any]:
    """The last value of every metric logged at or before ``step`` (rows: metric_point-like
    dicts with ``step`` and metric keys), and the step it was logged at."""
    values: dict[str, Any] = {}
    steps: dict[str, int] = {}
    for row in sorted(rows, key=lambda r: r["step"]):
        if row["step"] > step:
            break
        for key, value in row.items():
            if key != "step" and _recordable(value):
                values[key], steps[key] = value, row["step"]
    return {"step": max(steps.values(), default=None), "values": values}


def build_manifest(
    *,
    export: dict[str, Any],
    job: dict[str, Any],
    checkpoint: dict[str, Any],
    base_model: dict[str, Any],
    lineage: list[int],
    spec: dict[str, Any],
    chat_template: dict[str, Any] | None,
    metrics: dict[str, Any],
    files: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "format": MANIFEST_FORMAT,
        "export": export,
        "kind": export["kind"],
        "quantization": export.get("quantization"),
        "job": job,
        "checkpoint": checkpoint,
        "base_model": base_model,
        "lineage": lineage,
        "spec": spec,
        "chat_template": chat_template,
        "metrics": metrics,
        "files": files,
    }


def template_entry(
    source: str | None, name: str | None, version: int | None, template_id: int | None
) -> dict[str, Any] | None:
    """The locked chat template as the manifest records it (its text is in the tokenizer)."""
    if source is None:
        return None
    return {
        "name": name or "the base model's own template",
        "template_id": template_id,
        "version": version,
        "sha256": hashlib.sha256(source.encode()).hexdigest(),
    }


def _metric_lines(metrics: dict[str, Any]) -> list[str]:
    values = metrics.get("values") or {}
    if not values:
        return ["No metrics were logged before this checkpoint."]
    lines = [f"At step {metrics.get('step')}:", "", "| metric | value |", "| --- | --- |"]
    return lines + [f"| {key} | {_number(value)} |" for key, value in sorted(values.items())]


def _number(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _lineage_line(manifest: dict[str, Any]) -> str:
    ancestors = manifest["lineage"][:-1]
    if not ancestors:
        return ""
    chain = " -> ".join(f"checkpoint {c}" for c in ancestors)
    note = (
        " The adapter applies to the base model with those checkpoints merged in, not to the "
        "base model alone."
        if manifest["kind"] == "adapter"
        else ""
    )
    return f"\nThis run started from {chain} (oldest first).{note}\n"


def model_card(manifest: dict[str, Any], root_name: str, gguf_name: str | None = None) -> str:
    """The archive's README.md: what the weights are and how to load them."""
    job, base = manifest["job"], manifest["base_model"]
    kind = manifest["kind"] + (f" ({manifest['quantization']})" if manifest["quantization"] else "")
    template = manifest["chat_template"]
    template_line = (
        f"{template['name']}"
        + (f", version {template['version']}" if template["version"] else "")
        + f" (sha256 {template['sha256'][:12]})"
        if template
        else "none recorded"
    )
    loading = LOADING[manifest["kind"]].format(
        root=root_name, base=base["name"], gguf=gguf_name or ""
    )
    lines = [
        f"# {job['name']}: step {manifest['checkpoint']['step']}",
        "",
        f"Fine-tuned from **{base['name']}** with ftstudio: {job['method']} + {job['adapter']}.",
        "",
        f"- Export: {kind}",
        f"- Checkpoint: {manifest['checkpoint']['id']} (job {job['id']}, step "
        f"{manifest['checkpoint']['step']})",
        f"- Chat template: {template_line}",
        _lineage_line(manifest),
        "## Metrics",
        "",
        *_metric_lines(manifest["metrics"]),
        "",
        "## Loading",
        "",
        "```",
        loading,
        "```",
        "",
        "## Training configuration",
        "",
        "```json",
        json.dumps(manifest["spec"], indent=2, sort_keys=True),
        "```",
        "",
        f"Every file's sha256 and size is in `{MANIFEST_NAME}`.",
        "",
    ]
    return "\n".join(lines)


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    (root / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
