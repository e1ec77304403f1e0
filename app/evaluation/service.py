"""Requesting evaluations and reading them back per run: who may evaluate what, on which
dataset, and the run's table with its best checkpoint by a metric."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from app.access import NotFound, get_owned, get_owned_checkpoint
from app.evaluation.metrics import METRICS, MetricsError, Ranked, choose_metrics, rank
from app.jobs import find_base_model
from app.methods import is_reward_model
from app.models import BaseModel, Checkpoint, Dataset, DatasetRow, Evaluation, Job, JobStatus, User

# How much of a dataset one evaluation reads (the first rows, in order); the worker uses these.
LOSS_ROWS = 2000
PREFERENCE_PAIRS = 1000
GENERATION_PROMPTS = 64
GENERATION_MAX_NEW_TOKENS = 128


class EvaluationRequestError(Exception):
    """An evaluation that cannot be accepted; ``errors`` name the offending fields."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))
        self.errors = errors


def _refuse(field: str, message: str) -> EvaluationRequestError:
    return EvaluationRequestError([{"loc": [field], "msg": message, "type": "value_error"}])


@dataclass(frozen=True)
class Target:
    """What is evaluated: a checkpoint or a base model."""

    checkpoint: Checkpoint | None
    base_model: BaseModel | None

    @property
    def is_reward_model(self) -> bool:
        return self.checkpoint is not None and is_reward_model(self.checkpoint.job.method)


def _target(
    session: Session, user: User, checkpoint_id: int | None, base_model: int | str | None
) -> Target:
    if (checkpoint_id is None) == (base_model is None):
        raise _refuse("checkpoint_id", "give either checkpoint_id or base_model, not both")
    if checkpoint_id is not None:
        try:
            return Target(get_owned_checkpoint(session, checkpoint_id, user), None)
        except NotFound as exc:
            raise _refuse("checkpoint_id", f"checkpoint {checkpoint_id} not found") from exc
    assert base_model is not None
    model = find_base_model(session, base_model)
    if model is None:
        raise _refuse("base_model", f"no base model named '{base_model}'")
    return Target(None, model)


def _has_references(session: Session, dataset: Dataset) -> bool:
    """Whether the rows generation reads carry an answer to compare with."""
    if dataset.kind == "sft":
        return True
    if dataset.kind != "prompt":
        return False
    rows = session.scalars(
        select(DatasetRow.data)
        .where(DatasetRow.dataset_id == dataset.id)
        .order_by(DatasetRow.index)
        .limit(GENERATION_PROMPTS)
    )
    return any(isinstance(row.get("reference"), str) and row["reference"] for row in rows)


def create_evaluation(
    session: Session,
    user: User,
    *,
    dataset_id: int,
    checkpoint_id: int | None = None,
    base_model: int | str | None = None,
    metrics: Sequence[str] | None = None,
) -> Evaluation:
    """A queued evaluation of a checkpoint (or a base model) on one of the user's datasets."""
    target = _target(session, user, checkpoint_id, base_model)
    try:
        dataset = get_owned(session, Dataset, dataset_id, user)
    except NotFound as exc:
        raise _refuse("dataset_id", f"dataset {dataset_id} not found") from exc
    if dataset.num_rows == 0:
        raise _refuse("dataset_id", f"dataset {dataset.id} has no rows")
    try:
        chosen = choose_metrics(
            metrics,
            dataset.kind,
            reward_model=target.is_reward_model,
            has_references=_has_references(session, dataset),
        )
    except MetricsError as exc:
        raise _refuse("metrics", str(exc)) from exc
    evaluation = Evaluation(
        owner_id=user.id,
        checkpoint_id=target.checkpoint.id if target.checkpoint else None,
        base_model_id=target.base_model.id if target.base_model else None,
        dataset_id=dataset.id,
        metrics=chosen,
    )
    session.add(evaluation)
    session.flush()
    return evaluation


def model_label(session: Session, evaluation: Evaluation) -> str:
    if evaluation.checkpoint_id is not None:
        checkpoint = session.get(Checkpoint, evaluation.checkpoint_id)
        if checkpoint is not None:
            kind = "final" if checkpoint.is_final else "checkpoint"
            return f"{checkpoint.job.name} · {kind} step {checkpoint.step}"
    if evaluation.base_model_id is not None:
        model = session.get(BaseModel, evaluation.base_model_id)
        return f"base model {model.name}" if model else "base model"
    return "deleted model"


# The run's table ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunEvaluations:
    job: Job
    evaluations: list[Evaluation]  # the run's checkpoints' and its base model's, newest first
    dataset_id: int | None  # the dataset the ranking is on
    metric: str | None  # the metric it ranks by
    ranking: list[Ranked]  # checkpoints' latest succeeded evaluations, best first

    @property
    def best(self) -> Evaluation | None:
        return self.ranking[0].key if self.ranking else None  # type: ignore[return-value]

    def metrics_shown(self) -> list[str]:
        """The table's columns: every metric one of the evaluations asked for."""
        asked = {m for e in self.evaluations for m in e.metrics}
        return [m for m in METRICS if m in asked]


def run_evaluations(
    session: Session,
    user: User,
    job: Job,
    *,
    metric: str | None = None,
    dataset_id: int | None = None,
) -> RunEvaluations:
    """The run's evaluations (its checkpoints', and its base model's by this user) and the
    ranking of its checkpoints by ``metric`` on ``dataset_id``. Left out, the dataset is the
    latest succeeded checkpoint evaluation's, and the metric eval_loss when measured, else the first
    metric that was."""
    if metric is not None and metric not in METRICS:
        raise MetricsError(f"unknown metric '{metric}' (known: {', '.join(METRICS)})")
    checkpoint_ids = select(Checkpoint.id).where(Checkpoint.job_id == job.id)
    evaluations = list(
        session.scalars(
            select(Evaluation)
            .where(
                Evaluation.owner_id == user.id,
                or_(
                    Evaluation.checkpoint_id.in_(checkpoint_ids),
                    Evaluation.base_model_id == job.base_model_id,
                ),
            )
            .order_by(Evaluation.id.desc())
        )
    )
    done = [e for e in evaluations if e.status == JobStatus.succeeded and e.results]
    if dataset_id is None:  # the checkpoints are ranked: their latest evaluation's dataset
        latest_done = [e for e in done if e.checkpoint_id is not None] or done
        dataset_id = latest_done[0].dataset_id if latest_done else None
    on_dataset = [e for e in done if e.dataset_id == dataset_id and e.checkpoint_id is not None]
    if metric is None:
        measured = [m for m in METRICS if any(m in (e.results or {}) for e in on_dataset)]
        metric = measured[0] if measured else None
    latest: dict[int, Evaluation] = {}
    for evaluation in on_dataset:  # newest first: the first one seen per checkpoint wins
        latest.setdefault(evaluation.checkpoint_id, evaluation)  # type: ignore[arg-type]
    by_step = sorted(latest.values(), key=lambda e: _step(session, e))
    ranking = rank((((e.results or {}).get(metric), e) for e in by_step), metric) if metric else []
    return RunEvaluations(job, evaluations, dataset_id, metric, ranking)


def _step(session: Session, evaluation: Evaluation) -> int:
    checkpoint = session.get(Checkpoint, evaluation.checkpoint_id)
    return checkpoint.step if checkpoint else 0
