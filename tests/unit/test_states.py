"""One guarded status mover (app.states.move) for jobs, exports, evaluations, comparisons and
generations: a stale attempt, a second delivery or a late child can never overwrite a newer
state, and every worker path that ends an item goes through it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.db import session_scope
from app.jobs import create_job
from app.models import (
    BaseModel,
    Checkpoint,
    Comparison,
    Dataset,
    Evaluation,
    Export,
    ExportStatus,
    Generation,
    Job,
    JobStatus,
    User,
)
from app.states import ACTIVE, move
from worker.supervise import ChildResult

ROOT = Path(__file__).resolve().parents[2]
KINDS = ["job", "export", "evaluation", "comparison", "generation"]


@pytest.fixture
def items(alice, tiny_model: str) -> Iterator[dict[str, tuple[type, int]]]:
    """One queued item of each kind, owned by alice; the job ends with the test (a running
    one would be another test's lost job)."""
    with session_scope() as session:
        owner = session.get(User, alice.user_id)
        dataset = Dataset(owner_id=owner.id, name="d", kind="sft", format="alpaca")
        session.add(dataset)
        session.flush()
        job = create_job(session, owner, base_model=tiny_model, dataset_id=dataset.id)
        checkpoint = Checkpoint(job_id=job.id, step=1, path="checkpoint-1")
        session.add(checkpoint)
        session.flush()
        base = session.query(BaseModel).filter_by(name=tiny_model).one()
        export = Export(owner_id=owner.id, checkpoint_id=checkpoint.id, kind="merged")
        evaluation = Evaluation(
            owner_id=owner.id, base_model_id=base.id, dataset_id=dataset.id, metrics=[]
        )
        comparison = Comparison(owner_id=owner.id, models=[], prompts=[])
        session.add_all([export, evaluation, comparison])
        session.flush()
        generation = Generation(
            owner_id=owner.id, comparison_id=comparison.id, model_key=f"base:{base.id}", messages=[]
        )
        session.add(generation)
        session.flush()
        job_id = job.id
        made = {
            "job": (Job, job.id),
            "export": (Export, export.id),
            "evaluation": (Evaluation, evaluation.id),
            "comparison": (Comparison, comparison.id),
            "generation": (Generation, generation.id),
        }
    yield made
    with session_scope() as session:
        move(session, Job, job_id, to=JobStatus.cancelled, from_=ACTIVE)


def _status(model: type, name: str) -> JobStatus | ExportStatus:
    return ExportStatus(name) if model is Export else JobStatus(name)


def _row(model: type, ident: int):
    with session_scope() as session:
        return session.get(model, ident)


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_moves_once_and_a_late_writer_cannot_undo_its_end(items, kind: str) -> None:
    model, ident = items[kind]
    queued, running = _status(model, "queued"), _status(model, "running")
    failed, succeeded = _status(model, "failed"), _status(model, "succeeded")
    with session_scope() as session:
        assert move(session, model, ident, to=running, from_=queued)
        assert not move(session, model, ident, to=running, from_=queued)  # a second delivery
    with session_scope() as session:
        assert move(session, model, ident, to=failed, from_=running, error="lost")
    with session_scope() as session:  # the zombie finishes late: both its writes are refused
        assert not move(session, model, ident, to=succeeded, from_=running, error=None)
        assert not move(session, model, ident, to=None, from_=running, error="late")
    row = _row(model, ident)
    assert (row.status, row.error) == (failed, "lost")
    if hasattr(model, "finished_at"):
        assert row.finished_at is not None


def test_a_stale_attempt_cannot_overwrite_a_newer_one(items) -> None:
    _, job_id = items["job"]
    running, queued = JobStatus.running, JobStatus.queued
    with session_scope() as session:
        assert move(session, Job, job_id, to=running, from_=queued, attempt=1)
        assert move(session, Job, job_id, to=queued, from_=running, attempt=1, attempt_=2)
        assert move(session, Job, job_id, to=running, from_=queued, attempt=2)
    with session_scope() as session:  # attempt 1's worker still beats and then finishes
        assert not move(session, Job, job_id, to=None, from_=running, attempt=1, error="stale")
        assert not move(session, Job, job_id, to=JobStatus.succeeded, from_=running, attempt=1)
    job = _row(Job, job_id)
    assert (job.status, job.attempt, job.error) == (running, 2, None)


def _child_that_sees(model: type, ident: int, newer: str):
    """A child process during which a newer writer ends the item (``newer``) first."""

    def run_unattended(module, args, work_dir, log_name) -> ChildResult:
        with session_scope() as session:
            to, running = _status(model, newer), _status(model, "running")
            assert move(session, model, ident, to=to, from_=running, error="newer")
        return ChildResult(0, False, None)

    return run_unattended


@pytest.mark.parametrize("kind", ["export", "evaluation", "comparison", "generation"])
def test_worker_tasks_take_an_item_once_and_never_overwrite_a_newer_end(
    items, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import worker.evaluation.supervise as evaluation_supervisor
    import worker.tasks as tasks

    model, ident = items[kind]
    task = {
        "export": tasks.run_export,
        "evaluation": tasks.run_evaluation,
        "comparison": tasks.run_comparison,
        "generation": tasks.run_generation,
    }[kind]
    fake = _child_that_sees(model, ident, "failed")
    monkeypatch.setattr(tasks, "run_unattended", fake)
    monkeypatch.setattr(evaluation_supervisor, "run_unattended", fake)
    task(ident)  # the child "succeeds", but the item had already failed meanwhile
    row = _row(model, ident)
    assert (row.status.value, row.error) == ("failed", "newer")
    assert task(ident) == "skipped"  # a second delivery takes nothing


def test_job_heartbeats_are_guarded_by_attempt(items) -> None:
    from worker.tasks import _heartbeat

    _, job_id = items["job"]
    with session_scope() as session:
        move(session, Job, job_id, to=JobStatus.running, from_=JobStatus.queued, attempt_=2)
    _heartbeat(job_id, attempt=1)
    assert _row(Job, job_id).heartbeat_at is None
    _heartbeat(job_id, attempt=2)
    assert _row(Job, job_id).heartbeat_at is not None


def test_no_status_is_written_around_the_mover() -> None:
    """Every status write of a work item goes through app.states (grep-level guard)."""
    items = "Job|Export|Evaluation|Comparison|Generation"
    offenders = []
    for path in [*(ROOT / "app").rglob("*.py"), *(ROOT / "worker").rglob("*.py")]:
        if path == ROOT / "app" / "states.py":
            continue
        text = path.read_text()
        for found in re.finditer(rf"update\(({items})\)", text):
            statement = text[found.start() : text.find("\n\n", found.start())]
            if re.search(r"\bstatus\s*=", statement):
                offenders.append(f"{path.relative_to(ROOT)}: {found.group(0)}")
        for found in re.finditer(
            r"\b(job|export|evaluation|comparison|generation)\.status = ", text
        ):
            offenders.append(f"{path.relative_to(ROOT)}: {found.group(0)}")
    assert offenders == []
