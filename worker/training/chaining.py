"""The weights a chained run starts from, and the checkpoint a resumed run continues from.

A parent checkpoint that holds a LoRA-family or IA3 adapter is merged into the weights it was
trained on, and the new run trains a fresh adapter of its own on top. That is TRL's documented
way to run DPO on an SFT model trained with peft ("option 1: merge the adapter layers into the
base model", DPO trainer docs), and it is the only one that gives preference methods the right
reference: DPO/KTO with a peft adapter use the model with its adapter disabled as reference,
which after the merge is the SFT policy, as the papers require. Continuing the parent's adapter
instead would make the untouched base the reference, and would pin the new run to the parent's
adapter type and rank. A full or freeze checkpoint already is a whole model and is loaded as is.

The parent may itself have been started from a checkpoint (SFT -> DPO -> KTO): every ancestor
is folded in, oldest first; a whole-model checkpoint in the chain replaces what came before it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from peft import PeftModel
from sqlalchemy.orm import Session
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from app.chaining import is_complete, lineage
from app.models import Checkpoint, Job

ADAPTER_CONFIG = "adapter_config.json"
START_DIR = "start-model"  # in the job's directory, rebuilt for every attempt


def lineage_dirs(session: Session, job: Job, jobs_dir: Path) -> list[Path]:
    """The checkpoint directories a run of ``job`` builds on, oldest first (none: the base)."""
    if job.parent_checkpoint_id is None:
        return []
    parent = session.get(Checkpoint, job.parent_checkpoint_id)
    if parent is None:
        raise FileNotFoundError(f"the parent checkpoint {job.parent_checkpoint_id} was deleted")
    return [jobs_dir / checkpoint.path for checkpoint in lineage(session, parent)]


def take_resume_dir(session: Session, job: Job, jobs_dir: Path) -> Path | None:
    """The checkpoint a resumed job continues from (its trainer state included), or None.

    Taking it clears ``Job.resume_checkpoint_id`` (committed with the caller's session): it is
    an instruction to this attempt, and once the run saves newer checkpoints, save_total_limit
    may delete that one (a row still referenced would refuse to go). The job's "resumed" event
    keeps the record."""
    if job.resume_checkpoint_id is None:
        return None
    checkpoint = session.get(Checkpoint, job.resume_checkpoint_id)
    if checkpoint is None or checkpoint.job_id != job.id or not is_complete(checkpoint, jobs_dir):
        raise FileNotFoundError(
            f"checkpoint {job.resume_checkpoint_id} to resume from is gone or incomplete"
        )
    job.resume_checkpoint_id = None
    return jobs_dir / checkpoint.path


def _is_adapter(path: Path) -> bool:
    return (path / ADAPTER_CONFIG).is_file()


def _scores(path: Path) -> bool:
    """Whether an adapter checkpoint belongs to a reward model (a score head, no LM head)."""
    return json.loads((path / ADAPTER_CONFIG).read_text()).get("task_type") == "SEQ_CLS"


def _load(source: Path, scores: bool, dtype: torch.dtype | str) -> torch.nn.Module:
    if scores:
        return AutoModelForSequenceClassification.from_pretrained(source, dtype=dtype, num_labels=1)
    return AutoModelForCausalLM.from_pretrained(source, dtype=dtype)


def materialize_start(
    base_path: Path, chain: list[Path], out_dir: Path, *, dtype: torch.dtype | str = "auto"
) -> Path:
    """A model directory holding the base with every checkpoint of ``chain`` folded in; the
    base itself (no chain), or the last whole-model checkpoint when no adapter follows it."""
    start, adapters = base_path, []
    for path in chain:
        if _is_adapter(path):
            adapters.append(path)
        else:
            start, adapters = path, []  # a whole model: what came before is already in it
    if not adapters:
        return start
    shutil.rmtree(out_dir, ignore_errors=True)
    model, scores = None, False
    with torch.no_grad():
        for i, path in enumerate(adapters):
            if model is None or (_scores(path) and not scores):  # first, or LM -> reward model
                stage = out_dir.with_name(f"{out_dir.name}-stage{i}")
                source = start if model is None else _save(model, stage)
                scores = _scores(path)
                model = _load(source, scores, dtype)
            model = PeftModel.from_pretrained(model, path).merge_and_unload()
        assert model is not None
        model.save_pretrained(out_dir)  # safetensors
    for stage in out_dir.parent.glob(f"{out_dir.name}-stage*"):
        shutil.rmtree(stage, ignore_errors=True)
    return out_dir


def _save(model: torch.nn.Module, path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    model.save_pretrained(path)
    return path
