"""The checkpoints a chained run builds on, and the checkpoint a resumed run continues from.

The parent may itself have been started from a checkpoint (SFT -> DPO -> KTO): its lineage is
every ancestor, oldest first, each with the method that trained it; ``worker.checkpoints``
folds them into the weights the run starts from.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy import update
from sqlalchemy.orm import Session

from app.chaining import TRAINER_STATE, is_complete, lineage
from app.models import Checkpoint, Job
from worker.checkpoints import Stage

START_DIR = "start-model"  # in the job's directory, rebuilt for every attempt


def lineage_stages(session: Session, job: Job, jobs_dir: Path) -> list[Stage]:
    """The checkpoints a run of ``job`` builds on, oldest first (none: the base)."""
    if job.parent_checkpoint_id is None:
        return []
    parent = session.get(Checkpoint, job.parent_checkpoint_id)
    if parent is None:
        raise FileNotFoundError(f"the parent checkpoint {job.parent_checkpoint_id} was deleted")
    return [checkpoint_stage(c, jobs_dir) for c in lineage(session, parent)]


def checkpoint_stage(checkpoint: Checkpoint, jobs_dir: Path) -> Stage:
    return Stage(jobs_dir / checkpoint.path, checkpoint.job.method)


def resume_dir(session: Session, job: Job, jobs_dir: Path) -> Path | None:
    """The checkpoint a resumed job continues from (its trainer state included), or None. Every
    rank of a run reads it; rank 0 then forgets it (``forget_resume_checkpoint``)."""
    if job.resume_checkpoint_id is None:
        return None
    checkpoint = session.get(Checkpoint, job.resume_checkpoint_id)
    if checkpoint is None or checkpoint.job_id != job.id or not is_complete(checkpoint, jobs_dir):
        raise FileNotFoundError(
            f"checkpoint {job.resume_checkpoint_id} to resume from is gone or incomplete"
        )
    return jobs_dir / checkpoint.path


def forget_resume_checkpoint(session: Session, job_id: int, attempt: int) -> None:
    """Clear ``Job.resume_checkpoint_id`` once every rank has read it: it is an instruction to
    this attempt, and once the run saves newer checkpoints, save_total_limit may delete that one
    (a row still referenced would refuse to go). The job's "resumed" event keeps the record."""
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.attempt == attempt)
        .values(resume_checkpoint_id=None)
    )


def discard_incomplete_checkpoints(output_dir: Path) -> list[Path]:
    """Remove the checkpoint folders a stopped run left half-written (no trainer state, which
    the trainer writes last): never recorded, nothing resumes from them, and after a full disk
    they hold the space the resume needs. Call once none of the attempt's processes is left."""
    partial = [
        folder
        for folder in output_dir.glob("checkpoint-*")
        if folder.is_dir() and not (folder / TRAINER_STATE).is_file()
    ]
    for folder in partial:
        shutil.rmtree(folder, ignore_errors=True)
    return partial
