"""Chaining and resume, the parts that need no torch.

Chaining: a job may start from another job's checkpoint (``Job.parent_checkpoint_id``), e.g.
SFT -> DPO. The worker rebuilds the starting weights from the lineage (the base model, then
every ancestor's checkpoint, oldest first; see worker.training.chaining), so a parent must be
a checkpoint of the same base model whose update can be folded into the weights.

Resume: a failed or cancelled job continues from its own last *complete* checkpoint, one the
trainer finished writing with its optimizer, scheduler and step (``trainer_state.json``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.access import NotFound, get_owned_checkpoint, owned
from app.methods import get_method, is_reward_model, next_stage_methods
from app.models import BaseModel, Checkpoint, Dataset, Job, JobEvent, JobStatus, User
from app.spec import PROMPT_LEARNING_ADAPTERS, TrainingSpec

TRAINER_STATE = "trainer_state.json"  # written last by the trainer when it saves a checkpoint
MAX_LINEAGE = 32
RESUMABLE_STATUSES = (JobStatus.failed, JobStatus.cancelled)
RESUMED_EVENT = "resumed"  # JobEvent kind, one per resume


def _error(msg: str, type_: str) -> dict[str, Any]:
    return {"loc": ["parent_checkpoint_id"], "msg": msg, "type": type_}


def find_parent(
    session: Session, owner: User, checkpoint_id: int, jobs_dir: Path
) -> tuple[Checkpoint | None, list[dict[str, Any]]]:
    """The owner's checkpoint ``checkpoint_id``, or the errors saying why it cannot be used."""
    try:
        checkpoint = get_owned_checkpoint(session, checkpoint_id, owner)
    except NotFound:
        return None, [_error(f"no checkpoint {checkpoint_id}", "not_found")]
    if not (jobs_dir / checkpoint.path).is_dir():
        msg = f"the files of checkpoint {checkpoint_id} are gone; choose another checkpoint"
        return None, [_error(msg, "not_found")]
    if not checkpoint.job.status.is_terminal:
        msg = (
            f"job {checkpoint.job_id} is still {checkpoint.job.status.value}, and its "
            "save_total_limit may yet delete this checkpoint: start from it once the job ends"
        )
        return None, [_error(msg, "not_ended")]
    return checkpoint, []


def parent_errors(spec: TrainingSpec, model: BaseModel, parent: Checkpoint) -> list[dict[str, Any]]:
    """Why a run of ``spec`` on ``model`` cannot start from ``parent`` (none when it can)."""
    job = parent.job
    errors = []
    if job.base_model_id != model.id:
        errors.append(
            _error(
                f"checkpoint {parent.id} was trained from base model {job.base_model.name}; a "
                f"run from it must use that base model, not {model.name} (or leave base_model out)",
                "incompatible",
            )
        )
    if job.adapter in PROMPT_LEARNING_ADAPTERS:
        errors.append(
            _error(
                f"checkpoint {parent.id} is a {job.adapter} adapter: learned virtual tokens, not "
                "a weight update, so it cannot be folded into the weights another run starts "
                "from. Chain from a full, freeze, LoRA, DoRA, QLoRA or IA3 run",
                "incompatible",
            )
        )
    if is_reward_model(job.method) and not is_reward_model(spec.method):
        errors.append(
            _error(
                f"checkpoint {parent.id} is a reward model (a score head instead of the language "
                f"model head), so a {spec.method} run cannot start from it; only another reward "
                "run can",
                "incompatible",
            )
        )
    return errors


def lineage(session: Session, checkpoint: Checkpoint) -> list[Checkpoint]:
    """The checkpoints a run from ``checkpoint`` builds on: the oldest ancestor's first,
    ``checkpoint`` last (a job started from a checkpoint trained on another job's weights)."""
    chain = [checkpoint]
    while (parent_id := chain[0].job.parent_checkpoint_id) is not None:
        if len(chain) >= MAX_LINEAGE:
            raise ValueError(f"checkpoint {checkpoint.id}: lineage deeper than {MAX_LINEAGE}")
        parent = session.get(Checkpoint, parent_id)
        if parent is None:
            raise ValueError(
                f"checkpoint {parent_id} in the lineage of job {chain[0].job_id} is gone"
            )
        chain.insert(0, parent)
    return chain


def is_complete(checkpoint: Checkpoint, jobs_dir: Path) -> bool:
    """A checkpoint the trainer can resume from: an intermediate one with its trainer state."""
    return not checkpoint.is_final and (jobs_dir / checkpoint.path / TRAINER_STATE).is_file()


def resumable_checkpoint(session: Session, job: Job, jobs_dir: Path) -> Checkpoint | None:
    """The job's last complete checkpoint (the final model has no optimizer state)."""
    checkpoints = session.scalars(
        select(Checkpoint)
        .where(Checkpoint.job_id == job.id, ~Checkpoint.is_final)
        .order_by(Checkpoint.step.desc(), Checkpoint.id.desc())
    )
    return next((c for c in checkpoints if is_complete(c, jobs_dir)), None)


def resume_refusal(session: Session, job: Job, jobs_dir: Path) -> str | None:
    """Why ``job`` cannot be resumed now; None when it can."""
    if job.status not in RESUMABLE_STATUSES:
        return f"job {job.id} is {job.status.value}: only a failed or cancelled job can resume"
    if resumable_checkpoint(session, job, jobs_dir) is None:
        return (
            f"job {job.id} has no complete checkpoint to resume from (it stopped before its "
            "first save); start a new run, with a smaller save_steps to save earlier"
        )
    if child := _child_of_intermediate(session, job):
        return (
            f"job {child.id} starts from an intermediate checkpoint of job {job.id}, which the "
            "resumed run's save_total_limit could delete; chain from a finished run instead, "
            "or start a new run from that checkpoint"
        )
    return None


def _child_of_intermediate(session: Session, job: Job) -> Job | None:
    """A job started from one of ``job``'s intermediate checkpoints (they rotate while it runs)."""
    intermediate = select(Checkpoint.id).where(Checkpoint.job_id == job.id, ~Checkpoint.is_final)
    return session.scalar(select(Job).where(Job.parent_checkpoint_id.in_(intermediate)).limit(1))


def chaining_context(session: Session, job: Job, user: User, jobs_dir: Path) -> dict[str, Any]:
    """What the job page shows about lineage, resume and the next stage."""
    parent = session.get(Checkpoint, job.parent_checkpoint_id) if job.parent_checkpoint_id else None
    resumed = session.scalar(
        select(JobEvent)
        .where(JobEvent.job_id == job.id, JobEvent.kind == RESUMED_EVENT)
        .order_by(JobEvent.id.desc())
        .limit(1)
    )
    own = select(Checkpoint.id).where(Checkpoint.job_id == job.id)
    children = session.scalars(
        owned(Job, user).where(Job.parent_checkpoint_id.in_(own)).order_by(Job.id)
    ).all()
    final = session.scalar(
        select(Checkpoint).where(Checkpoint.job_id == job.id, Checkpoint.is_final).limit(1)
    )
    next_stage = None
    if job.status == JobStatus.succeeded and final and job.adapter not in PROMPT_LEARNING_ADAPTERS:
        next_stage = {"checkpoint": final, "methods": next_stage_methods(job.method)}
    resume_from = None
    if job.status in RESUMABLE_STATUSES:
        resume_from = resumable_checkpoint(session, job, jobs_dir)
    return {
        "lineage": lineage(session, parent) if parent else [],
        "resumed_from": resumed,
        "children": children,
        "next_stage": next_stage,
        "resume_from": resume_from,
        "chainable": job.adapter not in PROMPT_LEARNING_ADAPTERS,
    }


def next_stage_values(
    session: Session, user: User, checkpoint_id: int, method: str | None
) -> dict[str, Any]:
    """Job form values for a run from the user's checkpoint: its base model, ``method`` (or the
    usual next stage) and the newest dataset of the kind that method trains on."""
    checkpoint = get_owned_checkpoint(session, checkpoint_id, user)
    methods = next_stage_methods(checkpoint.job.method)
    chosen = method if method in methods else methods[0]
    kind = get_method(chosen).dataset_kind
    dataset = session.scalar(
        owned(Dataset, user).where(Dataset.kind == kind).order_by(Dataset.id.desc()).limit(1)
    )
    values: dict[str, Any] = {
        "parent_checkpoint_id": checkpoint.id,
        "base_model": checkpoint.job.base_model_id,
        "method": chosen,
    }
    if dataset is not None:
        values["dataset_id"] = dataset.id
    return values
