"""Creating, enqueueing and cancelling jobs, and the job state machine.

Every transition is a conditional UPDATE on (status, attempt), so a stale worker can never
overwrite the state written by a newer attempt or by a cancel.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.access import NotFound, get_owned
from app.architecture import check_against_model
from app.models import TERMINAL_STATUSES, BaseModel, Dataset, Job, JobStatus, User, utcnow
from app.spec import METHOD_DATASET_KINDS, SPEC_VERSION, SpecConflicts, TrainingSpec


class JobRequestError(Exception):
    """A job request that cannot be accepted; ``errors`` name the offending fields."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))
        self.errors = errors


class JobAlreadyEnded(Exception):
    pass


def find_base_model(session: Session, ref: int | str) -> BaseModel | None:
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        return session.get(BaseModel, int(ref))
    return session.scalar(select(BaseModel).where(BaseModel.name == ref))


def build_spec(method: str, adapter: str, hyperparameters: dict[str, Any]) -> TrainingSpec:
    try:
        return TrainingSpec.model_validate(
            {**hyperparameters, "method": method, "adapter": adapter}
        )
    except ValidationError as exc:
        errors: list[dict[str, Any]] = []
        for e in exc.errors():
            conflicts = (e.get("ctx") or {}).get("error")
            if isinstance(conflicts, SpecConflicts):  # name the fields that cannot work together
                errors += [
                    {"loc": _spec_loc([field]), "msg": reason, "type": "conflict"}
                    for field, reason in conflicts.problems
                ]
            else:
                errors.append({"loc": _spec_loc(e["loc"]), "msg": e["msg"], "type": e["type"]})
        raise JobRequestError(errors) from exc


def _spec_loc(loc: Iterable[Any]) -> list[str]:
    parts = [str(part) for part in loc]
    if not parts:
        return ["hyperparameters"]
    return parts if parts[0] in ("method", "adapter") else ["hyperparameters", *parts]


def create_job(
    session: Session,
    owner: User,
    *,
    base_model: int | str,
    dataset_id: int,
    method: str = "sft",
    adapter: str = "lora",
    hyperparameters: dict[str, Any] | None = None,
    eval_dataset_id: int | None = None,
    name: str | None = None,
) -> Job:
    spec, model, dataset = validate_request(
        session,
        owner,
        base_model=base_model,
        dataset_id=dataset_id,
        method=method,
        adapter=adapter,
        hyperparameters=hyperparameters,
        eval_dataset_id=eval_dataset_id,
    )
    job = Job(
        owner_id=owner.id,
        name=(name or f"{spec.method}-{spec.adapter} on {dataset.name}")[:200],
        method=spec.method,
        adapter=spec.adapter,
        base_model_id=model.id,
        dataset_id=dataset.id,
        eval_dataset_id=eval_dataset_id,
        spec=spec.model_dump(mode="json"),
        spec_version=SPEC_VERSION,
        chat_template=model.chat_template,
        max_steps=spec.max_steps if spec.max_steps > 0 else None,
    )
    session.add(job)
    session.flush()
    return job


def validate_request(
    session: Session,
    owner: User,
    *,
    base_model: int | str,
    dataset_id: int,
    method: str = "sft",
    adapter: str = "lora",
    hyperparameters: dict[str, Any] | None = None,
    eval_dataset_id: int | None = None,
    **_: Any,
) -> tuple[TrainingSpec, BaseModel, Dataset]:
    """The spec, base model and dataset of a job request, or JobRequestError naming the fields:
    the spec's own rules, then what this particular model cannot take."""
    spec = build_spec(method, adapter, hyperparameters or {})
    model = find_base_model(session, base_model)
    if model is None:
        raise JobRequestError(
            [{"loc": ["base_model"], "msg": f"no base model '{base_model}'", "type": "not_found"}]
        )
    dataset = _owned_dataset(session, owner, dataset_id, "dataset_id")
    datasets = {"dataset_id": dataset}
    if eval_dataset_id is not None:
        datasets["eval_dataset_id"] = _owned_dataset(
            session, owner, eval_dataset_id, "eval_dataset_id"
        )
    if errors := _dataset_kind_errors(spec.method, datasets):
        raise JobRequestError(errors)
    if errors := check_against_model(spec, Path(model.path)):
        raise JobRequestError(errors)
    return spec, model, dataset


def _dataset_kind_errors(method: str, datasets: dict[str, Dataset]) -> list[dict[str, Any]]:
    """Each method trains on one kind of rows (``METHOD_DATASET_KINDS``)."""
    kinds = METHOD_DATASET_KINDS[method]
    return [
        {
            "loc": [field],
            "msg": f"{method} trains on {' or '.join(kinds)} datasets; dataset {dataset.id} "
            f"holds {dataset.kind} rows: upload it as {kinds[0]} or choose another method",
            "type": "wrong_kind",
        }
        for field, dataset in datasets.items()
        if dataset.kind not in kinds
    ]


def _owned_dataset(session: Session, owner: User, dataset_id: int, field: str) -> Dataset:
    try:
        return get_owned(session, Dataset, dataset_id, owner)
    except NotFound:
        raise JobRequestError(
            [{"loc": [field], "msg": f"no dataset {dataset_id}", "type": "not_found"}]
        ) from None


def transition(
    session: Session,
    job_id: int,
    *,
    to: JobStatus,
    from_: Iterable[JobStatus],
    attempt: int | None = None,
    **values: Any,
) -> bool:
    """Move a job to ``to`` if it is still in one of ``from_`` (and at ``attempt``)."""
    if "attempt_" in values:
        values["attempt"] = values.pop("attempt_")
    if to == JobStatus.running:
        values.setdefault("started_at", utcnow())
    if to in TERMINAL_STATUSES:
        values.setdefault("finished_at", utcnow())
    stmt = update(Job).where(Job.id == job_id, Job.status.in_(list(from_)))
    if attempt is not None:
        stmt = stmt.where(Job.attempt == attempt)
    result = session.execute(
        stmt.values(status=to, **values).execution_options(synchronize_session=False)
    )
    session.commit()
    return result.rowcount == 1


def request_cancel(session: Session, job: Job) -> Job:
    """Cancel a queued job at once; ask a running one to stop (its worker finishes the move)."""
    if job.status in TERMINAL_STATUSES:
        raise JobAlreadyEnded(f"job {job.id} has already {job.status.value}")
    session.execute(update(Job).where(Job.id == job.id).values(cancel_requested=True))
    session.commit()
    transition(session, job.id, to=JobStatus.cancelled, from_=[JobStatus.queued])
    session.refresh(job)
    return job


def cancel_requested(session: Session, job_id: int) -> bool:
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


MAX_ATTEMPTS = 3


def reap_stale_jobs(session: Session, stale_after: timedelta) -> dict[int, JobStatus]:
    """Running jobs whose worker stopped heartbeating: requeue them (attempt + 1), or fail them
    once MAX_ATTEMPTS is reached. Returns {job_id: new status}; the caller enqueues requeued ids.
    """
    cutoff = utcnow() - stale_after
    stale = session.execute(
        select(Job.id, Job.attempt).where(
            Job.status == JobStatus.running,
            (Job.heartbeat_at < cutoff) | (Job.heartbeat_at.is_(None)),
        )
    ).all()
    moved: dict[int, JobStatus] = {}
    for job_id, attempt in stale:
        if attempt >= MAX_ATTEMPTS:
            error = f"the worker was lost {attempt} times (no heartbeat); giving up"
            if transition(
                session,
                job_id,
                to=JobStatus.failed,
                from_=[JobStatus.running],
                attempt=attempt,
                error=error,
            ):
                moved[job_id] = JobStatus.failed
        elif transition(
            session,
            job_id,
            to=JobStatus.queued,
            from_=[JobStatus.running],
            attempt=attempt,
            attempt_=attempt + 1,
        ):
            moved[job_id] = JobStatus.queued
    return moved
