"""One evaluation, start to end: load the record, the rows and the model, measure what was
asked, store the results. The supervising Celery task (``worker.tasks.run_evaluation``) owns
the status; this process reports failure through the error file and its exit code."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from app.chat.encoding import loss_on
from app.chat.rows import RowEncoder, encode_rows
from app.db import session_scope
from app.evaluation.metrics import (
    GENERATION_METRICS,
    LOSS_METRICS,
    PREFERENCE_METRICS,
    STOP_METRICS,
)
from app.evaluation.service import (
    GENERATION_MAX_NEW_TOKENS,
    GENERATION_PROMPTS,
    LOSS_ROWS,
    PREFERENCE_PAIRS,
    model_label,
)
from app.models import Checkpoint, Dataset, DatasetRow, Evaluation, JobStatus
from app.spec import TrainingSpec
from app.states import move
from worker.child import run_child_main
from worker.evaluation import measures
from worker.inference import (
    Decoding,
    LoadedModel,
    ModelSource,
    loaded,
    loaded_scorer,
    model_source,
)


@dataclass(frozen=True)
class Plan:
    """Everything the measuring needs, read from the database up front."""

    evaluation_id: int
    metrics: list[str]
    source: ModelSource
    label: str
    dataset_kind: str
    rows: list[dict[str, Any]]
    spec: TrainingSpec  # the run's (its max_length and loss mask); the defaults for a base model
    method: str | None  # the run's method; None for a base model

    def wants(self, group: tuple[str, ...]) -> list[str]:
        return [m for m in self.metrics if m in group]


def load_plan(evaluation_id: int) -> Plan:
    with session_scope() as session:
        record = session.get(Evaluation, evaluation_id)
        assert record is not None, f"evaluation {evaluation_id} does not exist"
        dataset = session.get(Dataset, record.dataset_id)
        assert dataset is not None
        spec, method = TrainingSpec(), None
        if record.checkpoint_id is not None:
            checkpoint = session.get(Checkpoint, record.checkpoint_id)
            if checkpoint is None:
                raise FileNotFoundError(f"checkpoint {record.checkpoint_id} was deleted")
            spec, method = (
                TrainingSpec.from_stored(checkpoint.job.spec, checkpoint.job.spec_version),
                checkpoint.job.method,
            )
            key = f"checkpoint:{checkpoint.id}"
        else:
            key = f"base:{record.base_model_id}"
        rows = list(
            session.scalars(
                select(DatasetRow.data)
                .where(DatasetRow.dataset_id == dataset.id)
                .order_by(DatasetRow.index)
                .limit(max(LOSS_ROWS, PREFERENCE_PAIRS, GENERATION_PROMPTS))
            )
        )
        return Plan(
            evaluation_id,
            list(record.metrics),
            model_source(session, key),
            model_label(session, record),
            dataset.kind,
            rows,
            spec,
            method,
        )


def encoder_for(plan: Plan, loaded_model: LoadedModel) -> RowEncoder:
    """The model's encoder (its locked template) with the run's max_length and loss mask."""
    spec = plan.spec
    return dataclasses.replace(
        loaded_model.encoder,
        max_length=spec.max_length,
        loss_on=loss_on(spec.assistant_only_loss, spec.completion_only_loss),
    )


def measure_language_model(plan: Plan) -> tuple[dict[str, Any], measures.AnswerScores | None]:
    """Every metric the policy itself answers; the preference scores still to be compared."""
    results: dict[str, Any] = {}
    scores = None
    with loaded(plan.source) as model:
        encoder = encoder_for(plan, model)
        results["encoding"] = {"max_length": encoder.max_length, "loss_on": encoder.loss_on}
        if plan.wants(LOSS_METRICS):
            encode = encoder.text if plan.dataset_kind == "text" else encoder.conversation
            encodings = encode_rows(plan.rows[:LOSS_ROWS], encode)
            results.update(measures.loss_metrics(model.model, encodings))
        if wanted := plan.wants(GENERATION_METRICS + STOP_METRICS):
            decoding = Decoding(max_new_tokens=GENERATION_MAX_NEW_TOKENS)
            samples = measures.generate_samples(model, plan.rows, decoding, GENERATION_PROMPTS)
            results.update(measures.generation_metrics(samples, wanted))
            results["generation"] = {
                "prompts": len(samples),
                "with_reference": sum(s.reference is not None for s in samples),
                "max_new_tokens": decoding.max_new_tokens,
                "decoding": "greedy",
            }
            results["samples"] = [s.as_dict() for s in samples]
        if plan.wants(PREFERENCE_METRICS):
            pairs = encode_rows(plan.rows[:PREFERENCE_PAIRS], encoder.preference)
            normalised = measures.preference_mode(plan.method) == "normalised_likelihood"
            scores = measures.likelihood_scores(model.model, pairs, normalised=normalised)
    return results, scores


def reference_scores(plan: Plan) -> measures.AnswerScores:
    """The answers' log-likelihoods under the run's starting model (a DPO-family reference)."""
    start = dataclasses.replace(plan.source, checkpoint_dir=None)
    with loaded(start) as model:
        pairs = encode_rows(plan.rows[:PREFERENCE_PAIRS], encoder_for(plan, model).preference)
        return measures.likelihood_scores(model.model, pairs)


def measure_reward_model(plan: Plan) -> dict[str, Any]:
    with loaded_scorer(plan.source) as model:
        pairs = encode_rows(plan.rows[:PREFERENCE_PAIRS], encoder_for(plan, model).preference)
        return measures.preference_metrics(measures.reward_scores(model.model, pairs), "score")


def measure(plan: Plan) -> dict[str, Any]:
    mode = measures.preference_mode(plan.method)
    if mode == "score":
        return measure_reward_model(plan)
    results, scores = measure_language_model(plan)
    if scores is not None:
        reference = reference_scores(plan) if mode == "implicit_reward" else None
        results.update(
            measures.preference_metrics(scores, mode, beta=plan.spec.beta, reference=reference)
        )
    return results


def evaluate(evaluation_id: int) -> dict[str, Any]:
    plan = load_plan(evaluation_id)
    print(f"evaluating {plan.label} on {len(plan.rows)} rows: {', '.join(plan.metrics)}")
    results = {"model": plan.label, "dataset_kind": plan.dataset_kind, **measure(plan)}
    with session_scope() as session:  # only while it runs: a failed evaluation stays failed
        move(session, Evaluation, evaluation_id, to=None, from_=JobStatus.running, results=results)
    summary = {m: results[m] for m in plan.metrics if m in results}
    print(f"results: {summary}", flush=True)
    return results


def main() -> None:
    run_child_main(lambda evaluation_id: evaluate(int(evaluation_id)))
