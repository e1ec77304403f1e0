"""The job page's evaluation panel: an "Evaluate" form per checkpoint (and for the base model)
and the run's results table with its best checkpoint marked. The job page loads it with HTMX
(``templates/_job_evaluations.html``); without HTMX it is a page of its own."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.routing import APIRouter

from app import broker
from app.access import get_owned
from app.evaluation.metrics import HELP, KIND_METRICS, LOWER_IS_BETTER, METRICS, MetricsError
from app.evaluation.service import EvaluationRequestError, create_evaluation, run_evaluations
from app.models import Dataset, Job, JobStatus, User
from app.queries import job_checkpoints, list_datasets
from app.web.deps import PageUser, SessionDep
from app.web.evaluations_api import evaluation_json
from app.web.rendering import is_htmx, render

router = APIRouter(include_in_schema=False)


def _datasets(session: SessionDep, user: User, job: Job) -> list[Dataset]:
    kinds = ("preference",) if job.method == "reward" else tuple(KIND_METRICS)
    return [d for d in list_datasets(session, user) if d.kind in kinds and d.num_rows]


def _targets(session: SessionDep, job: Job) -> list[tuple[str, str]]:
    """What the panel offers to evaluate: the base model (not for a reward model, whose
    starting point has no score head), then each checkpoint."""
    checkpoints = [
        (f"checkpoint:{c.id}", f"{'final model' if c.is_final else 'checkpoint'} step {c.step}")
        for c in job_checkpoints(session, job.id)
    ]
    base = [] if job.method == "reward" else [("base", f"base model {job.base_model.name}")]
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


@router.get("/jobs/{job_id:int}/evaluations")
def evaluations_panel(
    request: Request,
    job_id: int,
    session: SessionDep,
    user: PageUser,
    metric: str = "",
    dataset_id: str = "",
) -> Response:
    job = get_owned(session, Job, job_id, user)
    chosen_dataset = int(dataset_id) if dataset_id.isdigit() else None
    return _panel(request, session, user, job, metric=metric or None, dataset_id=chosen_dataset)


@router.post("/jobs/{job_id:int}/evaluations")
def evaluate_from_page(
    request: Request,
    job_id: int,
    session: SessionDep,
    user: PageUser,
    model: Annotated[str, Form()],
    dataset_id: Annotated[int, Form()],
) -> Response:
    """Evaluate ``model`` (``checkpoint:<id>`` of this run, or ``base``) on a dataset."""
    job = get_owned(session, Job, job_id, user)
    kind, _, ident = model.partition(":")
    target: dict[str, int | str | None] = {"checkpoint_id": None, "base_model": None}
    if kind == "checkpoint" and ident.isdigit():
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
    broker.enqueue_evaluation(evaluation.id)
    if is_htmx(request):
        return _panel(request, session, user, job)
    return RedirectResponse(f"/jobs/{job.id}/evaluations", status_code=303)
