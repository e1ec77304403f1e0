"""Evaluations: request one (a checkpoint or a base model on a dataset), read its results, and a
run's table with its best checkpoint by a metric; the job page's evaluation panel (an
"Evaluate" form per checkpoint and the results table, loaded with HTMX, or a page of its own)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, ConfigDict
from sqlalchemy.orm import Session

from app import broker
from app.access import get_owned
from app.evaluation.metrics import HELP, KIND_METRICS, LOWER_IS_BETTER, METRICS, MetricsError
from app.evaluation.service import (
    EvaluationRequestError,
    RunEvaluations,
    create_evaluation,
    model_label,
    run_evaluations,
)
from app.methods import is_reward_model
from app.models import Checkpoint, Dataset, Evaluation, Job, JobStatus, User
from app.queries import job_checkpoints, list_datasets
from app.web.deps import CurrentUser, PageUser, SessionDep
from app.web.errors import invalid_fields
from app.web.params import FormId, IdField, IdQuery, ObjectId, RefField, RefQuery
from app.web.rendering import is_htmx, json_response, render

api = APIRouter(prefix="/api", tags=["evaluations"])
pages = APIRouter(include_in_schema=False)


class EvaluationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checkpoint_id: IdField | None = None
    base_model: RefField | None = None  # a base model's name or id
    dataset_id: IdField
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


@api.post("/evaluations", status_code=201)
def post_evaluation(body: EvaluationIn, session: SessionDep, user: CurrentUser) -> Any:
    try:
        evaluation = create_evaluation(session, user, **body.model_dump())
    except EvaluationRequestError as exc:
        return invalid_fields(exc.errors)
    session.commit()
    broker.enqueue_evaluation(evaluation.id, fail_unsent=True)
    return evaluation_json(session, evaluation)


@api.get("/evaluations/{evaluation_id}", response_model=dict[str, Any])
def get_evaluation(evaluation_id: ObjectId, session: SessionDep, user: CurrentUser) -> Response:
    """The evaluation's status and results (each generated answer under ``results.samples``)."""
    evaluation = get_owned(session, Evaluation, evaluation_id, user)
    return json_response(evaluation_json(session, evaluation))  # samples: off the event loop


@api.get("/jobs/{job_id}/evaluations", response_model=dict[str, Any])
def get_job_evaluations(
    job_id: ObjectId,
    session: SessionDep,
    user: CurrentUser,
    metric: str | None = None,
    dataset_id: IdQuery = None,
) -> Response:
    """The run's evaluations (its checkpoints' and its base model's) and its checkpoints ranked
    by ``metric`` on ``dataset_id`` (lowest first for eval_loss and perplexity); ``best`` is
    the first of the ranking."""
    job = get_owned(session, Job, job_id, user)
    try:
        table = run_evaluations(session, user, job, metric=metric, dataset_id=dataset_id)
    except MetricsError as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    return json_response(run_table_json(session, table))


# -- the job page's panel ----------------------------------------------------------------------


def _datasets(session: SessionDep, user: User, job: Job) -> list[Dataset]:
    kinds = ("preference",) if is_reward_model(job.method) else tuple(KIND_METRICS)
    return [d for d in list_datasets(session, user) if d.kind in kinds and d.num_rows]


def _targets(session: SessionDep, job: Job) -> list[tuple[str, str]]:
    """What the panel offers to evaluate: the base model (not for a reward model, whose
    starting point has no score head), then each checkpoint."""
    checkpoints = [
        (f"checkpoint:{c.id}", f"{'final model' if c.is_final else 'checkpoint'} step {c.step}")
        for c in job_checkpoints(session, job.id)
    ]
    base = [] if is_reward_model(job.method) else [("base", f"base model {job.base_model.name}")]
    return base + checkpoints


def _panel(
    request: Request,
    session: SessionDep,
    user: User,
    job: Job,
    *,
    metric: str | None = None,
    dataset_id: int | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    try:
        table = run_evaluations(session, user, job, metric=metric, dataset_id=dataset_id)
    except MetricsError as exc:
        table, error = run_evaluations(session, user, job), str(exc)
    evaluations = [evaluation_json(session, e, samples=False) for e in table.evaluations]
    names = {d.id: d.name for d in list_datasets(session, user)}
    evaluated = dict.fromkeys(e["dataset_id"] for e in evaluations)
    context = {
        "user": user,
        "job": job,
        "targets": _targets(session, job),
        "datasets": _datasets(session, user, job),
        "dataset_names": names,
        "evaluated_datasets": [(i, names.get(i, f"dataset {i}")) for i in evaluated],
        "evaluations": evaluations,
        "columns": table.metrics_shown(),
        "metric_help": HELP,
        "metrics": METRICS,
        "ranked_metric": table.metric,
        "ranked_dataset": table.dataset_id,
        "lower_is_better": table.metric in LOWER_IS_BETTER,
        "best_id": table.best.id if table.best else None,
        "ranked_ids": [r.key.id for r in table.ranking],  # type: ignore[attr-defined]
        "pending": any(not JobStatus(e["status"]).is_terminal for e in evaluations),
        "error": error,
    }
    return render(
        request, "job_evaluations.html", context, block="evaluations", status_code=status_code
    )


@pages.get("/jobs/{job_id:int}/evaluations")
def evaluations_panel(
    request: Request,
    job_id: ObjectId,
    session: SessionDep,
    user: PageUser,
    metric: str = "",
    dataset_id: RefQuery = "",
) -> Response:
    job = get_owned(session, Job, job_id, user)
    chosen_dataset = int(dataset_id) if dataset_id.isdigit() else None
    return _panel(request, session, user, job, metric=metric or None, dataset_id=chosen_dataset)


@pages.post("/jobs/{job_id:int}/evaluations")
def evaluate_from_page(
    request: Request,
    job_id: ObjectId,
    session: SessionDep,
    user: PageUser,
    model: Annotated[str, Form()],
    dataset_id: FormId,
) -> Response:
    """Evaluate ``model`` (``checkpoint:<id>`` of this run, or ``base``) on a dataset."""
    job = get_owned(session, Job, job_id, user)
    kind, _, ident = model.partition(":")
    target: dict[str, int | str | None] = {"checkpoint_id": None, "base_model": None}
    if kind == "checkpoint" and ident.isascii() and ident.isdigit():
        if int(ident) not in {c.id for c in job_checkpoints(session, job.id)}:
            return _panel(request, session, user, job, error="not a checkpoint of this run")
        target["checkpoint_id"] = int(ident)
    else:
        target["base_model"] = job.base_model_id
    try:
        evaluation = create_evaluation(session, user, dataset_id=dataset_id, **target)  # type: ignore[arg-type]
    except EvaluationRequestError as exc:
        message = "; ".join(e["msg"] for e in exc.errors)
        return _panel(request, session, user, job, error=message, status_code=422)
    session.commit()
    broker.enqueue_evaluation(evaluation.id, fail_unsent=True)
    if is_htmx(request):
        return _panel(request, session, user, job)
    return RedirectResponse(f"/jobs/{job.id}/evaluations", status_code=303)


router = APIRouter()
router.include_router(api)
router.include_router(pages)
