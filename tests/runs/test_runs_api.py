"""Runs API and pages: filters, comparison, metrics CSV, log tail, queue, workers, scoping."""

from __future__ import annotations

import csv
import io
import json
import socket
from collections.abc import Iterator

import pytest
from bs4 import BeautifulSoup

from app.models import JobStatus
from tests.conftest import Account
from tests.support.html import log_in
from tests.support.runs import LEARNING_RATES, MAX_STEPS, TwoRuns, upload_counting

pytestmark = pytest.mark.worker


@pytest.fixture
def as_alice(client, alice: Account) -> Iterator:
    log_in(client, alice)
    yield client
    client.cookies.clear()


@pytest.fixture
def as_bob(client, bob: Account) -> Iterator:
    log_in(client, bob)
    yield client
    client.cookies.clear()


def test_filters(client, alice: Account, bob: Account, two_runs: TwoRuns) -> None:
    def ids(**params) -> list[int]:
        response = client.get("/api/jobs", headers=alice.headers, params=params)
        assert response.status_code == 200, response.text
        return [j["id"] for j in response.json()]

    run_a, run_b = two_runs.ids
    assert {run_a, run_b} <= set(ids())
    assert {run_a, run_b} <= set(ids(status="succeeded", method="sft"))
    assert not {run_a, run_b} & set(ids(status="failed"))
    assert not {run_a, run_b} & set(ids(method="dpo"))
    assert set(ids(dataset_id=two_runs.dataset_id)) == {run_a, run_b}
    assert {run_a, run_b} <= set(ids(base_model=two_runs.model))
    assert ids(base_model="no-such-model") == []
    both = client.get("/api/jobs", headers=alice.headers, params={"status": "succeeded"}).json()
    assert all(j["status"] == "succeeded" for j in both)
    assert client.get("/api/jobs?status=bogus", headers=alice.headers).status_code == 422
    # Bob sees none of alice's runs, even filtering by her dataset.
    bob_jobs = client.get(
        "/api/jobs", headers=bob.headers, params={"dataset_id": two_runs.dataset_id}
    ).json()
    assert bob_jobs == []


def test_compare_lists_differences_and_final_metrics(
    client, alice: Account, bob: Account, two_runs: TwoRuns
) -> None:
    run_a, run_b = two_runs.ids
    response = client.get(f"/api/runs/compare?ids={run_a},{run_b}", headers=alice.headers)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["ids"] == [run_a, run_b]
    differences = {row["name"]: row["values"] for row in data["differences"]}
    # Only the learning rate was set differently: nothing else may be reported as differing.
    assert differences == {"learning_rate": list(LEARNING_RATES)}
    assert "loss" in data["curves"] and "learning_rate" in data["curves"]
    for run in data["runs"]:
        metrics = client.get(f"/api/jobs/{run['id']}/metrics", headers=alice.headers).json()
        assert [m["step"] for m in run["metrics"]] == [m["step"] for m in metrics]
        last_loss = [m["loss"] for m in metrics if m["loss"] is not None][-1]
        assert run["final_metrics"]["loss"] == pytest.approx(last_loss)
        assert run["final_metrics"]["step"] == MAX_STEPS
    assert client.get(f"/api/runs/compare?ids={run_a}", headers=bob.headers).status_code == 404
    assert client.get("/api/runs/compare?ids=x", headers=alice.headers).status_code == 422


def test_metrics_csv_matches_the_metrics(client, alice: Account, bob: Account, two_runs) -> None:
    job_id = two_runs.ids[0]
    response = client.get(f"/api/jobs/{job_id}/metrics.csv", headers=alice.headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    metrics = client.get(f"/api/jobs/{job_id}/metrics", headers=alice.headers).json()
    assert len(rows) == len(metrics) == MAX_STEPS
    for row, metric in zip(rows, metrics, strict=True):
        assert set(metric) <= set(row)
        for key, value in metric.items():
            if value is None:
                assert row[key] == ""
            elif isinstance(value, float):
                assert float(row[key]) == pytest.approx(value)
            else:
                assert row[key] == str(value)
        assert row["time"]
    assert client.get(f"/api/jobs/{job_id}/metrics.csv", headers=bob.headers).status_code == 404


def test_log_tail_has_the_training_output(client, alice: Account, bob: Account, two_runs) -> None:
    job_id = two_runs.ids[0]
    response = client.get(f"/api/jobs/{job_id}/logs?tail=1000", headers=alice.headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "loss" in text, text[-2000:]
    short = client.get(f"/api/jobs/{job_id}/logs?tail=3", headers=alice.headers).text
    assert short.count("\n") == 3
    assert text.endswith(short)
    assert client.get(f"/api/jobs/{job_id}/logs", headers=bob.headers).status_code == 404
    assert client.get(f"/api/jobs/{job_id}/logs?tail=0", headers=alice.headers).status_code == 422


def test_log_stream_resumes_at_an_offset(client, alice: Account, two_runs) -> None:
    job_id = two_runs.ids[0]
    full = client.get(f"/api/jobs/{job_id}/logs?tail=5000", headers=alice.headers).text
    with client.stream("GET", f"/api/jobs/{job_id}/logs/stream", headers=alice.headers) as response:
        body = "".join(response.iter_text())
    assert "event: log" in body and "event: end" in body
    middle = len(full.encode()) // 2
    middle = full.encode().rindex(b"\n", 0, middle) + 1
    headers = {**alice.headers, "Last-Event-ID": str(middle)}
    with client.stream("GET", f"/api/jobs/{job_id}/logs/stream", headers=headers) as response:
        resumed = "".join(response.iter_text())
    texts = [
        json.loads(line[6:])["text"]
        for line in resumed.splitlines()
        if line.startswith("data: ") and '"text"' in line
    ]
    assert "".join(texts) == full.encode()[middle:].decode()


def test_workers_answer(client, alice: Account, bob: Account, two_runs) -> None:
    response = client.get("/api/workers", headers=alice.headers)
    assert response.status_code == 200
    workers = response.json()  # the session's worker registered itself and beats
    assert isinstance(workers, list) and workers, workers
    ours = [w for w in workers if w["host"] == socket.gethostname() and w["online"]]
    assert ours, workers
    assert all("last_seen" in w and "stalled" in w for w in workers)
    for worker in ours:
        assert worker["devices"] and worker["device_class"]
        assert all(set(d) == {"index", "name", "memory_bytes"} for d in worker["devices"])
    assert client.get("/api/workers").status_code == 401


@pytest.fixture
def queued(alice: Account, bob: Account, two_runs: TwoRuns) -> Iterator[list[int]]:
    """Three jobs left queued (never sent to the broker): alice's, bob's, alice's."""
    from app.db import session_scope
    from app.jobs import create_job, transition
    from app.models import User

    bob_dataset_id = None
    ids = []
    with session_scope() as session:
        a, b = session.get(User, alice.user_id), session.get(User, bob.user_id)
        for owner in (a, b, a):
            dataset = two_runs.dataset_id if owner is a else bob_dataset_id
            if dataset is None:
                dataset = bob_dataset_id = _bob_dataset(session, b)
            job = create_job(
                session,
                owner,
                base_model=two_runs.model,
                dataset_id=dataset,
                hyperparameters={"max_steps": 2, "logging_steps": 1},
            )
            ids.append(job.id)
    yield ids
    with session_scope() as session:
        for job_id in ids:
            transition(session, job_id, to=JobStatus.cancelled, from_=[JobStatus.queued])


def _bob_dataset(session, bob_user) -> int:
    from app.models import Dataset

    dataset = Dataset(owner_id=bob_user.id, name="bob's", kind="sft", format="alpaca")
    session.add(dataset)
    session.flush()
    return dataset.id


def test_queue_positions(client, alice: Account, bob: Account, queued: list[int]) -> None:
    first, bobs, second = queued
    mine = client.get("/api/queue", headers=alice.headers).json()
    positions = {j["id"]: j["position"] for j in mine["jobs"]}
    assert set(positions) >= {first, second} and bobs not in positions
    assert positions[second] == positions[first] + 2  # bob's job is between them
    assert mine["total_queued"] >= 3
    theirs = client.get("/api/queue", headers=bob.headers).json()
    assert [j["id"] for j in theirs["jobs"]] == [bobs]
    assert theirs["jobs"][0]["position"] == positions[first] + 1


def test_job_page_shows_queue_position(as_alice, queued: list[int]) -> None:
    second = queued[2]
    soup = BeautifulSoup(as_alice.get(f"/jobs/{second}").text, "html.parser")
    position = soup.select_one("#job-queue-position strong")
    assert position is not None
    queue = as_alice.get("/api/queue").json()["jobs"]
    assert int(position.text) == next(j["position"] for j in queue if j["id"] == second)
    assert soup.select_one("#job-status").text == "queued"


def test_job_page_renders_history_log_and_spec(as_alice, two_runs: TwoRuns) -> None:
    job_id = two_runs.ids[0]
    response = as_alice.get(f"/jobs/{job_id}")
    assert response.status_code == 200
    soup = BeautifulSoup(response.text, "html.parser")
    assert soup.select_one("#loss-chart")["data-points"] == str(MAX_STEPS)
    assert soup.select_one("#job-status").text == "succeeded"
    assert soup.select_one("#job-progress")["value"] == str(MAX_STEPS)
    assert soup.select_one("#job-step").text.startswith(f"step {MAX_STEPS}")
    events = [li["data-event"] for li in soup.select("#job-timeline li")]
    assert events == ["created", "started", "succeeded"]
    curves = soup.select_one("#metric-charts")["data-curves"].split(",")
    assert "loss" in curves and "learning_rate" in curves
    assert {f["data-key"] for f in soup.select("#metric-charts figure.metric-chart")} >= {
        "learning_rate"
    }
    assert "loss" in soup.select_one("#job-log").text
    assert '"learning_rate"' in soup.select_one("#job-spec").text
    assert soup.select_one("#metrics-csv")["href"] == f"/api/jobs/{job_id}/metrics.csv"
    # The HTMX summary fragment keeps its contract.
    fragment = as_alice.get(f"/jobs/{job_id}", headers={"HX-Request": "true"}).text
    part = BeautifulSoup(fragment, "html.parser")
    assert part.select_one("#job-status") and not part.select_one("#loss-chart")


def test_runs_list_filters_and_compare_page(as_alice, two_runs: TwoRuns) -> None:
    run_a, run_b = two_runs.ids
    soup = BeautifulSoup(as_alice.get("/jobs?status=succeeded").text, "html.parser")
    rows = {int(r["data-job-id"]) for r in soup.select("tr.job-row")}
    assert {run_a, run_b} <= rows
    assert all(r["data-status"] == "succeeded" for r in soup.select("tr.job-row"))
    assert soup.select_one("#runs-filters select[name=status] option[selected]")["value"] == (
        "succeeded"
    )
    soup = BeautifulSoup(as_alice.get("/jobs?status=failed").text, "html.parser")
    assert not {run_a, run_b} & {int(r["data-job-id"]) for r in soup.select("tr.job-row")}
    fragment = as_alice.get("/jobs?method=sft", headers={"HX-Request": "true"}).text
    assert "<html" not in fragment and "job-row" in fragment

    page = as_alice.get(f"/runs/compare?ids={run_a}&ids={run_b}")
    soup = BeautifulSoup(page.text, "html.parser")
    diff = {r["data-name"]: [td.text for td in r.select("td")] for r in soup.select("tr.diff-row")}
    assert diff == {"learning_rate": [str(lr) for lr in LEARNING_RATES]}
    assert soup.select_one('tr.final-row[data-name="loss"]') is not None
    assert soup.select_one("#compare-chart") is not None
    assert soup.select_one("#compare-data") is not None


def test_pages_are_owner_scoped(as_bob, two_runs: TwoRuns) -> None:
    run_a, run_b = two_runs.ids
    assert as_bob.get(f"/jobs/{run_a}").status_code == 404
    soup = BeautifulSoup(as_bob.get("/jobs").text, "html.parser")
    assert not {run_a, run_b} & {int(r["data-job-id"]) for r in soup.select("tr.job-row")}
    soup = BeautifulSoup(as_bob.get(f"/runs/compare?ids={run_a},{run_b}").text, "html.parser")
    assert soup.select_one("#compare-error") is not None
    assert soup.select_one("#compare-data") is None


def test_extra_metric_keys_are_curves_and_csv_columns(client, alice: Account) -> None:
    """A preference run's extra keys (TRL's ``rewards/margins``) get a chart and a column."""
    from app.db import session_scope
    from app.jobs import create_job, transition
    from app.models import Metric, User

    dataset_id = upload_counting(client, alice, "extra.jsonl")
    with session_scope() as session:
        user = session.get(User, alice.user_id)
        job = create_job(
            session,
            user,
            base_model="tiny-llama",
            dataset_id=dataset_id,
            hyperparameters={"max_steps": 2, "logging_steps": 1},
        )
        job_id = job.id
        for step, margin in ((1, 0.1), (2, 0.4)):
            session.add(
                Metric(
                    job_id=job_id, step=step, loss=1.0 / step, values={"rewards/margins": margin}
                )
            )
    try:
        rows = list(
            csv.DictReader(
                io.StringIO(
                    client.get(f"/api/jobs/{job_id}/metrics.csv", headers=alice.headers).text
                )
            )
        )
        assert [float(r["rewards/margins"]) for r in rows] == [0.1, 0.4]
        compare = client.get(f"/api/runs/compare?ids={job_id}", headers=alice.headers).json()
        assert "rewards/margins" in compare["curves"]
        assert compare["runs"][0]["final_metrics"]["rewards/margins"] == 0.4
    finally:
        with session_scope() as session:
            transition(session, job_id, to=JobStatus.cancelled, from_=[JobStatus.queued])
