"""Creating, enqueueing and cancelling jobs, and the job state machine.

Every transition is a conditional UPDATE on (status, attempt), so a stale worker can never
overwrite the state written by a newer attempt or by a cancel.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any, Required, TypedDict, Unpack

from pydantic import ValidationError
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from app import chaining, routing, states
from app.access import NotFound, get_owned, get_owned_checkpoint
from app.architecture import check_against_model
from app.chat import library as chat_library
from app.methods import get_method, is_reward_model
from app.models import (
    TERMINAL_STATUSES,
    BaseModel,
    ChatTemplateVersion,
    Checkpoint,
    Dataset,
    Job,
    JobEvent,
    JobStatus,
    Metric,
    User,
    utcnow,
)
from app.settings import get_settings
from app.spec import SPEC_VERSION, SpecConflicts, TrainingSpec


class JobRequestError(Exception):
    """A job request that cannot be accepted; ``errors`` name the offending fields."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))
        self.errors = errors


class JobAlreadyEnded(Exception):
    pass


class ResumeRefused(Exception):
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


class JobRequest(TypedDict, total=False):
    """What a job is asked for (API body, form, tests): the keyword arguments of create_job and
    validate_request."""

    base_model: Required[int | str | None]
    dataset_id: Required[int]
    method: str
    adapter: str
    hyperparameters: dict[str, Any] | None
    eval_dataset_id: int | None
    parent_checkpoint_id: int | None
    chat_template_id: int | None
    device_class: str | None


def create_job(
    session: Session, owner: User, *, name: str | None = None, **request: Unpack[JobRequest]
) -> Job:
    spec, model, dataset = validate_request(session, owner, **request)
    eval_dataset_id = request.get("eval_dataset_id")
    parent_checkpoint_id = request.get("parent_checkpoint_id")
    chat_template_id = request.get("chat_template_id")
    template = pinned_template(session, owner, model, chat_template_id, parent_checkpoint_id)
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
        chat_template=template.source,  # the template lock: the worker trains with this text
        chat_template_version_id=template.id,
        max_steps=spec.max_steps if spec.max_steps > 0 else None,
        parent_checkpoint_id=parent_checkpoint_id,
        device_class=request.get("device_class") or None,
    )
    session.add(job)
    session.flush()
    return job


def validate_request(
    session: Session,
    owner: User,
    *,
    base_model: int | str | None,
    dataset_id: int,
    method: str = "sft",
    adapter: str = "lora",
    hyperparameters: dict[str, Any] | None = None,
    eval_dataset_id: int | None = None,
    parent_checkpoint_id: int | None = None,
    chat_template_id: int | None = None,
    device_class: str | None = None,
    **_: Any,
) -> tuple[TrainingSpec, BaseModel, Dataset]:
    """The spec, base model and dataset of a job request, or JobRequestError naming the fields:
    the spec's own rules, the parent checkpoint (chaining), then what this model cannot take.
    Without ``base_model``, a run from a parent checkpoint uses the parent's base model."""
    spec = build_spec(method, adapter, hyperparameters or {})
    parent = None
    if parent_checkpoint_id is not None:
        jobs_dir = get_settings().jobs_dir
        parent, errors = chaining.find_parent(session, owner, parent_checkpoint_id, jobs_dir)
        if errors:
            raise JobRequestError(errors)
    if base_model in (None, "") and parent is not None:
        base_model = parent.job.base_model_id
    model = find_base_model(session, base_model) if base_model not in (None, "") else None
    if model is None:
        msg = f"no base model '{base_model}'" if base_model else "choose a base model"
        raise JobRequestError([{"loc": ["base_model"], "msg": msg, "type": "not_found"}])
    if parent is not None and (errors := chaining.parent_errors(spec, model, parent)):
        raise JobRequestError(errors)
    dataset = _owned_dataset(session, owner, dataset_id, "dataset_id")
    datasets = {"dataset_id": dataset}
    if eval_dataset_id is not None:
        datasets["eval_dataset_id"] = _owned_dataset(
            session, owner, eval_dataset_id, "eval_dataset_id"
        )
    if errors := _dataset_kind_errors(spec.method, datasets):
        raise JobRequestError(errors)
    if spec.early_stopping_patience and eval_dataset_id is None:
        msg = "early stopping watches the eval loss: choose an eval dataset, or set it to 0"
        error = {"loc": _spec_loc(["early_stopping_patience"]), "msg": msg, "type": "needs_eval"}
        raise JobRequestError([error])
    if errors := check_against_model(spec, Path(model.path)):
        raise JobRequestError(errors)
    if errors := _reward_errors(session, owner, spec, model):
        raise JobRequestError(errors)
    if chat_template_id is not None:
        pinned_template(session, owner, model, chat_template_id, None)
    placement = (device_class or None, spec.num_devices, spec.distributed_strategy)
    if errors := routing.placement_errors(session, *placement):
        raise JobRequestError(errors)
    return spec, model, dataset


def pinned_template(
    session: Session,
    owner: User,
    model: BaseModel,
    chat_template_id: int | None,
    parent_checkpoint_id: int | None,
) -> ChatTemplateVersion:
    """The chat template version a job pins (see app.chat.library.for_job)."""
    parent = session.get(Checkpoint, parent_checkpoint_id) if parent_checkpoint_id else None
    parent_version = parent.job.chat_template_version_id if parent is not None else None
    try:
        return chat_library.for_job(session, owner, model, chat_template_id, parent_version)
    except NotFound:
        msg = f"no chat template {chat_template_id}"
        error = {"loc": ["chat_template_id"], "msg": msg, "type": "not_found"}
        raise JobRequestError([error]) from None


def _dataset_kind_errors(method: str, datasets: dict[str, Dataset]) -> list[dict[str, Any]]:
    """Each method trains on one kind of rows (the method table's ``dataset_kind``)."""
    kind = get_method(method).dataset_kind
    return [
        {
            "loc": [field],
            "msg": f"{method} trains on {kind} datasets; dataset {dataset.id} "
            f"holds {dataset.kind} rows: upload it as {kind} or choose another method",
            "type": "wrong_kind",
        }
        for field, dataset in datasets.items()
        if dataset.kind != kind
    ]


def _reward_errors(
    session: Session, owner: User, spec: TrainingSpec, model: BaseModel
) -> list[dict[str, Any]]:
    """PPO / GRPO score answers with a reward run's checkpoint (the user's own, from a reward
    run on the same base model, so it reads the policy's tokens) or a registered model."""
    loc = ["hyperparameters", "reward_checkpoint_id"]
    if spec.reward_checkpoint_id is not None:
        try:
            checkpoint = get_owned_checkpoint(session, spec.reward_checkpoint_id, owner)
        except NotFound:
            return [
                {
                    "loc": loc,
                    "msg": f"no checkpoint {spec.reward_checkpoint_id}",
                    "type": "not_found",
                }
            ]
        if not is_reward_model(checkpoint.job.method):
            method = checkpoint.job.method
            msg = f"checkpoint {checkpoint.id} is from a {method} run, not a reward model"
            return [{"loc": loc, "msg": msg, "type": "wrong_kind"}]
        if checkpoint.job.base_model_id != model.id:
            msg = "the reward model must share the policy's base model (and so its tokenizer)"
            return [{"loc": loc, "msg": msg, "type": "mismatch"}]
    if spec.reward_model is not None and session.get(BaseModel, spec.reward_model) is None:
        loc = ["hyperparameters", "reward_model"]
        return [{"loc": loc, "msg": f"no base model {spec.reward_model}", "type": "not_found"}]
    return []


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
    """Move a job to ``to`` if it is still in one of ``from_`` (and at ``attempt``): the job's
    name for ``states.move``. ``attempt_`` sets a new attempt number. The caller commits."""
    return states.move(session, Job, job_id, to=to, from_=from_, attempt=attempt, **values)


def request_cancel(session: Session, job: Job) -> Job:
    """Cancel a queued job at once; ask a running one to stop (its worker finishes the move)."""
    if job.status in TERMINAL_STATUSES:
        raise JobAlreadyEnded(f"job {job.id} has already {job.status.value}")
    session.execute(update(Job).where(Job.id == job.id).values(cancel_requested=True))
    transition(session, job.id, to=JobStatus.cancelled, from_=[JobStatus.queued])
    # Committed here, not by the request: the caller answers at once, and the worker polling the
    # flag (and a client reading the job right after) must already see the cancel.
    session.commit()
    session.refresh(job)
    return job


def resume_job(session: Session, job: Job, jobs_dir: Path) -> Job:
    """Queue a failed or cancelled job again, to continue from its last complete checkpoint.

    A new attempt (attempt + 1, as when the reaper requeues a lost worker's job): the same
    conditional transition, so of two concurrent resumes only one wins. Metrics the stopped run
    logged after that checkpoint are dropped: the resumed run logs those steps again. The move
    is committed on return; the caller enqueues the job."""
    if refusal := chaining.resume_refusal(session, job, jobs_dir):
        raise ResumeRefused(refusal)
    checkpoint = chaining.resumable_checkpoint(session, job, jobs_dir)
    assert checkpoint is not None
    moved = transition(
        session,
        job.id,
        to=JobStatus.queued,
        from_=chaining.RESUMABLE_STATUSES,
        attempt=job.attempt,
        attempt_=job.attempt + 1,
        resume_checkpoint_id=checkpoint.id,
        cancel_requested=False,
        error=None,
        step=checkpoint.step,
        finished_at=None,
        heartbeat_at=None,
    )
    if not moved:
        session.refresh(job)
        raise ResumeRefused(f"job {job.id} changed meanwhile: it is {job.status.value}")
    _rewind(session, job.id, checkpoint)
    # Committed here, not by the request: the caller enqueues the job next, and the worker
    # that takes it must find it queued.
    session.commit()
    session.refresh(job)
    return job


def _rewind(session: Session, job_id: int, checkpoint: Checkpoint | None) -> None:
    """After a requeue: forget the metrics logged past ``checkpoint`` (all of them without one),
    since the next attempt logs those steps again, and record the resume on the timeline."""
    step = checkpoint.step if checkpoint else 0
    session.execute(delete(Metric).where(Metric.job_id == job_id, Metric.step > step))
    if checkpoint is not None:
        session.add(
            JobEvent(
                job_id=job_id,
                step=step,
                kind=chaining.RESUMED_EVENT,
                severity="info",
                message=f"resumed from the checkpoint at step {step}",
                details={"checkpoint_id": checkpoint.id},
            )
        )


def cancel_requested(session: Session, job_id: int) -> bool:
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


MAX_ATTEMPTS = 3


def stale_jobs(session: Session, stale_after: timedelta) -> list[tuple[int, int]]:
    """(id, attempt) of the running jobs whose worker stopped heartbeating."""
    cutoff = utcnow() - stale_after
    rows = session.execute(
        select(Job.id, Job.attempt).where(
            Job.status == JobStatus.running,
            (Job.heartbeat_at < cutoff) | (Job.heartbeat_at.is_(None)),
        )
    ).all()
    return [(job_id, attempt) for job_id, attempt in rows]


LOST = "the worker was lost (no heartbeat)"
PREEMPTED = "the worker shut down during the run"


def reap_job(
    session: Session, job_id: int, attempt: int, cause: str = LOST
) -> dict[int, JobStatus]:
    """Requeue a job whose attempt ended with its worker (attempt + 1), or fail it once
    MAX_ATTEMPTS is reached, saying ``cause``. Returns {job_id: new status} (empty when it had
    moved on); the caller commits, then enqueues a requeued id. The worker reaps each job in
    its own transaction, so one job's failure leaves the others reaped."""
    if attempt < MAX_ATTEMPTS:
        return _requeue_lost(session, job_id, attempt)
    error = f"{cause} on each of its {attempt} attempts; giving up"
    moved = transition(
        session,
        job_id,
        to=JobStatus.failed,
        from_=[JobStatus.running],
        attempt=attempt,
        error=error,
    )
    return {job_id: JobStatus.failed} if moved else {}


def reap_stale_jobs(session: Session, stale_after: timedelta) -> dict[int, JobStatus]:
    """``reap_job`` for every stale job, in one transaction."""
    moved: dict[int, JobStatus] = {}
    for job_id, attempt in stale_jobs(session, stale_after):
        moved |= reap_job(session, job_id, attempt)
    return moved


def _requeue_lost(session: Session, job_id: int, attempt: int) -> dict[int, JobStatus]:
    """Queue a lost worker's job again, to resume from its last complete checkpoint."""
    job = session.get(Job, job_id)
    assert job is not None
    checkpoint = chaining.resumable_checkpoint(session, job, get_settings().jobs_dir)
    if not transition(
        session,
        job_id,
        to=JobStatus.queued,
        from_=[JobStatus.running],
        attempt=attempt,
        attempt_=attempt + 1,
        resume_checkpoint_id=checkpoint.id if checkpoint else None,
        step=checkpoint.step if checkpoint else 0,
    ):
        return {}
    _rewind(session, job_id, checkpoint)
    return {job_id: JobStatus.queued}
