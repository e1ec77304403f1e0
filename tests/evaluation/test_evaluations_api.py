"""Requesting evaluations: what is refused and why, ownership, and a run's table with its best
checkpoint (results written directly: the worker tests measure for real)."""

from __future__ import annotations

import pytest
from bs4 import BeautifulSoup

from app.db import session_scope
from app.models import Evaluation, JobStatus
from tests.conftest import Account
from tests.support.datasets import PAIRS, SFT_ROWS, upload_rows
from tests.support.evaluation import PROMPTS_WITHOUT_REFERENCE, TEXT_ROWS, fake_run
from tests.support.html import post_login


@pytest.fixture(scope="module")
def data(client, alice: Account, tiny_model: str) -> dict[str, int]:
    ids = {
        "sft": upload_rows(client, alice, "sft", SFT_ROWS),
        "text": upload_rows(client, alice, "text", TEXT_ROWS),
        "preference": upload_rows(client, alice, "preference", PAIRS),
        "prompt": upload_rows(client, alice, "prompt", PROMPTS_WITHOUT_REFERENCE),
    }
    ids["job"], ids["checkpoints"] = fake_run(alice, tiny_model, ids["sft"])  # type: ignore[assignment]
    ids["reward_job"], reward = fake_run(alice, tiny_model, ids["preference"], "reward")  # type: ignore[assignment]
    ids["reward"] = reward[-1]
    return ids


def _post(client, account: Account, **body):
    return client.post("/api/evaluations", headers=account.headers, json=body)


def _refusal(response) -> tuple[list, str]:
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    return error["loc"], error["msg"]


def test_refusals_name_the_field_and_the_reason(
    client, alice: Account, tiny_model: str, data: dict
) -> None:
    final = data["checkpoints"][-1]
    cases = [
        ({"checkpoint_id": final, "base_model": tiny_model}, ["checkpoint_id"], "not both"),
        ({}, ["checkpoint_id"], "either checkpoint_id or base_model"),
        ({"base_model": "no-such-model"}, ["base_model"], "no base model named"),
        ({"checkpoint_id": 10**6}, ["checkpoint_id"], "not found"),
        (
            {"checkpoint_id": final, "metrics": ["perplexity"], "dataset_id": data["preference"]},
            ["metrics"],
            "needs a dataset of kind sft or text",
        ),
        (
            {"base_model": tiny_model, "metrics": ["bleu"], "dataset_id": data["prompt"]},
            ["metrics"],
            "have none",
        ),
        (
            {"checkpoint_id": data["reward"], "dataset_id": data["sft"]},
            ["metrics"],
            "reward model",
        ),
    ]
    for body, loc, reason in cases:
        body = {"dataset_id": data["sft"], **body}
        got_loc, message = _refusal(_post(client, alice, **body))
        assert got_loc == loc and reason in message, (body, message)


def test_another_users_checkpoint_dataset_and_evaluation_do_not_exist_for_you(
    client, alice: Account, bob: Account, tiny_model: str, data: dict
) -> None:
    final = data["checkpoints"][-1]
    loc, message = _refusal(_post(client, bob, checkpoint_id=final, dataset_id=data["sft"]))
    assert loc == ["checkpoint_id"] and "not found" in message
    loc, _ = _refusal(_post(client, bob, base_model=tiny_model, dataset_id=data["sft"]))
    assert loc == ["dataset_id"]
    created = _post(client, alice, base_model=tiny_model, dataset_id=data["text"])
    assert created.status_code == 201, created.text
    evaluation = created.json()
    assert evaluation["status"] == "queued"
    assert evaluation["metrics"] == ["eval_loss", "perplexity"]
    try:
        url = f"/api/evaluations/{evaluation['id']}"
        assert client.get(url, headers=bob.headers).status_code == 404
        assert client.get(url, headers=alice.headers).json()["status"] == "queued"
        table = client.get(f"/api/jobs/{data['job']}/evaluations", headers=bob.headers)
        assert table.status_code == 404
    finally:
        _forget(evaluation["id"])  # nothing to measure here: the worker skips a deleted row


def _forget(evaluation_id: int) -> None:
    with session_scope() as session:
        session.delete(session.get(Evaluation, evaluation_id))


def _stored(account: Account, checkpoint_id: int | None, dataset_id: int, **results) -> int:
    from app.auth import get_or_create_user
    from app.jobs import find_base_model

    with session_scope() as session:
        user = get_or_create_user(session, account.name)
        base = find_base_model(session, "tiny-llama") if checkpoint_id is None else None
        evaluation = Evaluation(
            owner_id=user.id,
            checkpoint_id=checkpoint_id,
            base_model_id=base.id if base else None,
            dataset_id=dataset_id,
            metrics=list(results),
            status=JobStatus.succeeded,
            results=results,
        )
        session.add(evaluation)
        session.flush()
        return evaluation.id


def test_the_runs_table_ranks_checkpoints_by_a_metric(client, alice: Account, data: dict) -> None:
    first, second, final = data["checkpoints"]
    sft, text = data["sft"], data["text"]
    stored = {
        "first": _stored(alice, first, sft, perplexity=9.0, rouge_l=0.2),
        "second": _stored(alice, second, sft, perplexity=4.0, rouge_l=0.6),
        "final": _stored(alice, final, sft, perplexity=5.0, rouge_l=0.7),
        "base": _stored(alice, None, sft, perplexity=2.0, rouge_l=0.9),  # shown, never ranked
        "other_dataset": _stored(alice, first, text, perplexity=1.0),
    }
    url = f"/api/jobs/{data['job']}/evaluations"
    by_perplexity = client.get(
        url, headers=alice.headers, params={"metric": "perplexity", "dataset_id": sft}
    ).json()
    assert by_perplexity["lower_is_better"] is True
    assert [r["evaluation_id"] for r in by_perplexity["ranking"]] == [
        stored["second"],
        stored["final"],
        stored["first"],
    ]
    assert by_perplexity["best"] == {
        "evaluation_id": stored["second"],
        "checkpoint_id": second,
        "step": 2,
        "value": 4.0,
    }
    assert {e["id"] for e in by_perplexity["evaluations"]} >= set(stored.values())
    by_rouge = client.get(
        url, headers=alice.headers, params={"metric": "rouge_l", "dataset_id": sft}
    ).json()
    assert by_rouge["lower_is_better"] is False
    assert by_rouge["best"]["checkpoint_id"] == final
    # A newer evaluation of a checkpoint replaces its older one in the ranking.
    newer = _stored(alice, first, sft, perplexity=3.0)
    base_later = _stored(alice, None, text, perplexity=1.5)  # a base row never picks the dataset
    again = client.get(url, headers=alice.headers, params={"metric": "perplexity"}).json()
    assert again["dataset_id"] == sft  # the latest checkpoint evaluation's dataset
    assert again["best"]["evaluation_id"] == newer
    assert stored["first"] not in [r["evaluation_id"] for r in again["ranking"]]
    unknown = client.get(url, headers=alice.headers, params={"metric": "loss"})
    assert unknown.status_code == 422 and "unknown metric" in unknown.json()["detail"]

    # The job page's panel marks the best row and offers an Evaluate form per checkpoint.
    client.cookies.clear()
    post_login(client, {"token": alice.token})
    try:
        job_page = BeautifulSoup(client.get(f"/jobs/{data['job']}").text, "html.parser")
        assert job_page.select_one("#job-evaluations")["hx-get"] == url.removeprefix("/api")
        panel = client.get(
            f"/jobs/{data['job']}/evaluations",
            params={"metric": "perplexity", "dataset_id": sft},
            headers={"HX-Request": "true"},
        )
        html = BeautifulSoup(panel.text, "html.parser")
        assert html.select_one("body") is None  # the fragment only
        (best,) = html.select("table.evaluations tr.best")
        assert best["data-evaluation-id"] == str(newer)
        assert html.select_one("#best-checkpoint")["data-checkpoint-id"] == str(first)
        targets = [t["data-model"] for t in html.select("#evaluate-targets tr.evaluate-target")]
        assert targets == ["base"] + [f"checkpoint:{c}" for c in data["checkpoints"]]
        options = html.select("tr.evaluate-target select[name=dataset_id]")[0].select("option")
        assert {int(o["value"]) for o in options} >= {sft, text, data["preference"]}
        headers = [th.text for th in html.select("table.evaluations th")]
        assert "perplexity" in headers and "rouge_l" in headers
    finally:
        client.cookies.clear()
        with session_scope() as session:
            for evaluation_id in [*stored.values(), newer, base_later]:
                session.delete(session.get(Evaluation, evaluation_id))


def test_the_evaluate_form_queues_an_evaluation_and_refuses_with_a_reason(
    client, alice: Account, data: dict
) -> None:
    client.cookies.clear()
    post_login(client, {"token": alice.token})
    csrf = BeautifulSoup(client.get("/").text, "html.parser").select_one('meta[name="csrf-token"]')[
        "content"
    ]
    url = f"/jobs/{data['reward_job']}/evaluations"
    try:
        page = BeautifulSoup(client.get(url).text, "html.parser")
        # A reward model: no base row (no score head), only preference datasets offered.
        targets = [t["data-model"] for t in page.select("tr.evaluate-target")]
        assert targets and all(t.startswith("checkpoint:") for t in targets)
        kinds = {
            o.text.split("(")[1].split(",")[0]
            for o in page.select("tr.evaluate-target select[name=dataset_id] option")
        }
        assert kinds == {"preference"}
        refused = client.post(
            url,
            data={
                "csrf_token": csrf,
                "model": f"checkpoint:{data['reward']}",
                "dataset_id": data["sft"],
            },
            headers={"HX-Request": "true"},
        )
        assert refused.status_code == 422
        error = BeautifulSoup(refused.text, "html.parser").select_one("#evaluation-error")
        assert "reward model" in error.text
        queued = client.post(
            url,
            data={
                "csrf_token": csrf,
                "model": f"checkpoint:{data['reward']}",
                "dataset_id": data["preference"],
            },
            headers={"HX-Request": "true"},
        )
        assert queued.status_code == 200, queued.text
        row = BeautifulSoup(queued.text, "html.parser").select_one(
            "table.evaluations tr.evaluation"
        )
        assert row["data-status"] == "queued" and row["data-checkpoint-id"] == str(data["reward"])
        assert (
            BeautifulSoup(queued.text, "html.parser")
            .select_one("#evaluation-results")["hx-trigger"]
            .startswith("every")
        )  # polls while it runs
        _forget(int(row["data-evaluation-id"]))
    finally:
        client.cookies.clear()
