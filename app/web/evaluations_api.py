"""REST routes for evaluations: request one (a checkpoint or a base model on a dataset), read
its results, and a run's table with its best checkpoint by a metric."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy.orm import Session

from app import broker
from app.access import get_owned
from app.evaluation.metrics import LOWER_IS_BETTER, MetricsError
from app.evaluation.service import (
    EvaluationRequestError,
    RunEvaluations,
    create_evaluation,
    model_label,
    run_evaluations,
)
from app.models import Checkpoint, Evaluation, Job
from app.web.deps import CurrentUser, SessionDep

router = APIRouter(prefix="/api", tags=["evaluations"])


class EvaluationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checkpoint_id: int | None = None
    base_model: int | str | None = None  # a base model's name or id
    dataset_id: int
    metrics: list[str] | None = None  # left out: every metric the dataset's kind allows


def evaluation_json(
    session: Session, evaluation: Evaluation, *, samples: bool = True
) -> dict[str, Any]:
    results = dict(evaluation.results or {})
    if not samples:
        results.pop("samples", None)
    checkpoint = (
        session.get(Checkpoint, evaluation.checkpoint_id) if evaluation.checkpoint_id else None
    )
    return {
        "id": evaluation.id,
        "status": evaluation.status.value,
        "model": model_label(session, evaluation),
        "checkpoint_id": evaluation.checkpoint_id,
        "job_id": checkpoint.job_id if checkpoint else None,
        "step": checkpoint.step if checkpoint else None,
        "base_model_id": evaluation.base_model_id,
        "dataset_id": evaluation.dataset_id,
        "metrics": evaluation.metrics,
        "results": results if evaluation.results is not None else None,
        "error": evaluation.error,
        "created_at": evaluation.created_at.isoformat(),
        "finished_at": evaluation.finished_at.isoformat() if evaluation.finished_at else None,
    }


def run_table_json(session: Session, table: RunEvaluations) -> dict[str, Any]:
    def entry(ranked: Any) -> dict[str, Any]:
        evaluation: Evaluation = ranked.key
        checkpoint = session.get(Checkpoint, evaluation.checkpoint_id)
        return {
            "evaluation_id": evaluation.id,
            "checkpoint_id": evaluation.checkpoint_id,
            "step": checkpoint.step if checkpoint else None,
            "value": ranked.value,
        }

    ranking = [entry(r) for r in table.ranking]
    return {
        "job_id": table.job.id,
        "dataset_id": table.dataset_id,
        "metric": table.metric,
        "lower_is_better": table.metric in LOWER_IS_BETTER if table.metric else None,
        "best": ranking[0] if ranking else None,
        "ranking": ranking,
        "evaluations": [evaluation_json(session, e, samples=False) for e in table.evaluations],
    }


@router.post("/evaluations", status_code=201)
def post_evaluation(body: EvaluationIn, session: SessionDep, user: CurrentUser) -> Any:
    try:
        evaluation = create_evaluation(session, user, **body.model_dump())
    except EvaluationRequestError as exc:
        return JSONResponse({"detail": exc.errors}, status_code=422)
    session.commit()
    broker.enqueue_evaluation(evaluation.id)
    return evaluation_json(session, evaluation)


@router.get("/evaluations/{evaluation_id}")
def get_evaluation(evaluation_id: int, session: SessionDep, user: CurrentUser) -> dict:
    """The evaluation's status and results (each generated answer under ``results.samples``)."""
    return evaluation_json(session, get_owned(session, Evaluation, evaluation_id, user))


@router.get("/jobs/{job_id}/evaluations")
def get_job_evaluations(
    job_id: int,
    session: SessionDep,
    user: CurrentUser,
    metric: str | None = None,
    dataset_id: int | None = None,
) -> dict:
    """The run's evaluations (its checkpoints' and its base model's) and its checkpoints ranked
    by ``metric`` on ``dataset_id`` (lowest first for eval_loss and perplexity); ``best`` is
    the first of the ranking."""
    job = get_owned(session, Job, job_id, user)
    try:
        table = run_evaluations(session, user, job, metric=metric, dataset_id=dataset_id)
    except MetricsError as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    return run_table_json(session, table)
