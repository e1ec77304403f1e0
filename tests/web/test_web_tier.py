"""The fast web tier (issue 13 item 5): the metrics API's formats (list, columnar, chart), its
ETag and 304, the chart's downsampling, the run page fetching its curves instead of carrying
them, and bounded SQL per request for the runs list and the metrics. Rows are written straight
through the models (no training); no timing is asserted anywhere."""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from bs4 import BeautifulSoup

from tests.conftest import Account

ROWS = 300


@dataclass(frozen=True)
class Seeded:
    job_id: int
    dataset_id: int
    model_id: int


def _add_jobs(session, owner_id: int, model_id: int, dataset_id: int, count: int) -> list[int]:
    from app.models import Job, JobStatus
    from app.spec import SPEC_VERSION, TrainingSpec

    spec = TrainingSpec(max_steps=ROWS).model_dump(mode="json")
    jobs = [
        Job(
            owner_id=owner_id,
            name=f"tier {i}",
            method="sft",
            adapter="lora",
            base_model_id=model_id,
            dataset_id=dataset_id,
            spec=spec,
            spec_version=SPEC_VERSION,
            status=JobStatus.succeeded,
            step=ROWS,
            max_steps=ROWS,
            started_at=datetime.now(UTC) - timedelta(hours=1),
            finished_at=datetime.now(UTC),
        )
        for i in range(count)
    ]
    session.add_all(jobs)
    session.flush()
    return [j.id for j in jobs]


@pytest.fixture(scope="module")
def seeded(alice: Account) -> Seeded:
    """An ended run of alice's with ROWS metric rows (a spike at step 137, a dip at 211)."""
    from app.db import session_scope
    from app.models import BaseModel, Dataset, Metric

    tag = uuid.uuid4().hex[:6]
    start = datetime.now(UTC) - timedelta(hours=1)
    with session_scope() as session:
        model = BaseModel(name=f"tier-{tag}", path="/nonexistent", source="local")
        dataset = Dataset(owner_id=alice.user_id, name=f"tier-{tag}", kind="sft", format="alpaca")
        session.add_all([model, dataset])
        session.flush()
        (job_id,) = _add_jobs(session, alice.user_id, model.id, dataset.id, 1)
        session.add_all(
            Metric(
                job_id=job_id,
                step=step,
                epoch=step / ROWS,
                loss=_loss(step),
                learning_rate=1e-4,
                grad_norm=float("nan") if step == 5 else 1.0,
                num_tokens=float(step * 100),
                values={"mean_token_accuracy": 0.5},
                created_at=start + timedelta(seconds=step),
            )
            for step in range(1, ROWS + 1)
        )
        return Seeded(job_id, dataset.id, model.id)


def _loss(step: int) -> float:
    return {137: 50.0, 211: -5.0}.get(step, 2.0 / math.sqrt(step))


def test_list_format_keeps_its_shape(client, alice: Account, seeded: Seeded) -> None:
    response = client.get(f"/api/jobs/{seeded.job_id}/metrics", headers=alice.headers)
    assert response.status_code == 200
    rows = response.json()
    assert [r["step"] for r in rows] == list(range(1, ROWS + 1))
    first = rows[0]
    assert set(first) == {
        "id",
        "step",
        "epoch",
        "loss",
        "learning_rate",
        "grad_norm",
        "num_tokens",
        "mean_token_accuracy",
    }
    assert rows[4]["grad_norm"] is None  # NaN is sent as null
    assert rows[136]["loss"] == 50.0


def test_columnar_format_has_every_row(client, alice: Account, seeded: Seeded) -> None:
    listed = client.get(f"/api/jobs/{seeded.job_id}/metrics", headers=alice.headers).json()
    body = client.get(
        f"/api/jobs/{seeded.job_id}/metrics?format=columnar", headers=alice.headers
    ).json()
    assert body["format"] == "columnar" and body["count"] == ROWS
    columns = body["columns"]
    assert columns["id"] == [r["id"] for r in listed]
    for key in ("step", "loss", "grad_norm", "mean_token_accuracy"):
        assert columns[key] == [r[key] for r in listed], key
    assert len(columns["time"]) == ROWS


def test_chart_format_downsamples_keeping_first_last_min_max(
    client, alice: Account, seeded: Seeded
) -> None:
    url = f"/api/jobs/{seeded.job_id}/metrics?format=chart&max_points=40"
    body = client.get(url, headers=alice.headers).json()
    assert body["count"] == ROWS and body["downsampled"] is True
    steps, values = body["series"]["loss"]
    assert len(steps) <= 40 and steps == sorted(steps)
    assert steps[0] == 1 and steps[-1] == ROWS
    assert 137 in steps and 211 in steps  # the spike and the dip survive
    assert max(values) == 50.0 and min(values) == -5.0
    assert (
        body["last_id"]
        == client.get(f"/api/jobs/{seeded.job_id}/metrics", headers=alice.headers).json()[-1]["id"]
    )
    assert {"loss", "learning_rate", "num_tokens", "tokens_per_second"} <= set(body["curves"])
    # tokens/s between logged points: 100 tokens a second here.
    assert set(body["series"]["tokens_per_second"][1]) == {100.0}
    # A short curve comes back whole.
    whole = client.get(
        f"/api/jobs/{seeded.job_id}/metrics?format=chart", headers=alice.headers
    ).json()
    assert whole["downsampled"] is False
    assert whole["series"]["loss"][0] == list(range(1, ROWS + 1))


def test_downsample_unit() -> None:
    from app.metric_series import downsample

    xs = list(range(10_000))
    ys = [math.sin(x / 50) for x in xs]
    ys[4321] = 9.0
    ys[777] = -9.0
    kept_x, kept_y = downsample(xs, ys, 200)
    assert len(kept_x) <= 200
    assert kept_x[0] == 0 and kept_x[-1] == 9_999
    assert 4321 in kept_x and 777 in kept_x
    assert kept_y == [ys[x] for x in kept_x]
    assert downsample([1, 2], [3.0, 4.0], 200) == ([1, 2], [3.0, 4.0])


def test_metrics_etag_and_304(client, alice: Account, seeded: Seeded) -> None:
    from app.db import session_scope
    from app.models import Metric

    url = f"/api/jobs/{seeded.job_id}/metrics"
    first = client.get(url, headers=alice.headers)
    etag = first.headers["etag"]
    assert etag and "no-cache" in first.headers["cache-control"]
    again = client.get(url, headers={**alice.headers, "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    # Each format has its own tag.
    columnar = client.get(f"{url}?format=columnar", headers=alice.headers).headers["etag"]
    assert columnar != etag
    # A new row changes the tag, and the body has it.
    with session_scope() as session:
        session.add(Metric(job_id=seeded.job_id, step=ROWS + 1, loss=0.1, values={}))
    try:
        changed = client.get(url, headers={**alice.headers, "If-None-Match": etag})
        assert changed.status_code == 200 and changed.headers["etag"] != etag
        assert changed.json()[-1]["step"] == ROWS + 1
    finally:
        with session_scope() as session:
            session.query(Metric).filter(
                Metric.job_id == seeded.job_id, Metric.step == ROWS + 1
            ).delete()


def test_metrics_stay_owner_scoped(client, alice: Account, bob: Account, seeded: Seeded) -> None:
    for fmt in ("list", "columnar", "chart"):
        url = f"/api/jobs/{seeded.job_id}/metrics?format={fmt}"
        assert client.get(url, headers=bob.headers).status_code == 404
    bad = client.get(f"/api/jobs/{seeded.job_id}/metrics?format=xml", headers=alice.headers)
    assert bad.status_code == 422


def test_run_page_fetches_its_curves(client, alice: Account, seeded: Seeded) -> None:
    page = client.get(f"/jobs/{seeded.job_id}", headers=alice.headers)
    assert page.status_code == 200
    soup = BeautifulSoup(page.text, "html.parser")
    payload = json.loads(soup.select_one("#job-data").get_text())
    assert "metrics" not in payload  # no inline rows: the page stays small
    assert payload["metrics_url"] == f"/api/jobs/{seeded.job_id}/metrics?format=chart"
    assert soup.select_one("#loss-chart")["data-points"] == str(ROWS)
    curves = soup.select_one("#metric-charts")["data-curves"].split(",")
    assert curves[:3] == ["loss", "learning_rate", "grad_norm"]
    assert "mean_token_accuracy" in curves
    assert soup.select_one("#metrics-csv")["href"] == f"/api/jobs/{seeded.job_id}/metrics.csv"
    csv = client.get(f"/api/jobs/{seeded.job_id}/metrics.csv", headers=alice.headers).text
    assert len(csv.strip().splitlines()) == ROWS + 1  # every point stays downloadable


class _Statements:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, *args, **kwargs) -> None:
        self.count += 1


def _statements_for(client, url: str, headers: dict[str, str]) -> int:
    from sqlalchemy import event

    from app.db import get_engine

    counter = _Statements()
    event.listen(get_engine(), "before_cursor_execute", counter)
    try:
        assert client.get(url, headers=headers).status_code == 200
    finally:
        event.remove(get_engine(), "before_cursor_execute", counter)
    return counter.count


def test_runs_list_queries_do_not_grow_with_jobs(client, seeded: Seeded) -> None:
    from app.auth import create_token, get_or_create_user
    from app.db import session_scope

    with session_scope() as session:
        user = get_or_create_user(session, f"lister-{uuid.uuid4().hex[:6]}")
        headers = {"Authorization": f"Bearer {create_token(session, user)}"}
        _add_jobs(session, user.id, seeded.model_id, seeded.dataset_id, 3)
    client.get("/api/jobs", headers=headers)  # the token's first use writes last_used_at
    few = _statements_for(client, "/api/jobs", headers)
    with session_scope() as session:
        _add_jobs(session, user.id, seeded.model_id, seeded.dataset_id, 30)
    many = _statements_for(client, "/api/jobs", headers)
    assert len(client.get("/api/jobs", headers=headers).json()) == 33
    assert many == few <= 3


def test_metrics_queries_are_bounded(client, alice: Account, seeded: Seeded) -> None:
    url = f"/api/jobs/{seeded.job_id}/metrics"
    client.get(url, headers=alice.headers)
    # auth, the job, the rows' count and last id; the rows themselves come from the cache.
    assert _statements_for(client, url, alice.headers) <= 3


def _add_jobs_with_their_own_model_and_dataset(owner_id: int, count: int) -> None:
    """``count`` runs, each with a base model and a dataset no other run has: a page that loads
    them one by one issues a statement per run."""
    from app.db import session_scope
    from app.models import BaseModel, Dataset

    with session_scope() as session:
        for _ in range(count):
            tag = uuid.uuid4().hex[:8]
            model = BaseModel(name=f"own-{tag}", path="/nonexistent", source="local")
            dataset = Dataset(owner_id=owner_id, name=f"own-{tag}", kind="sft", format="alpaca")
            session.add_all([model, dataset])
            session.flush()
            _add_jobs(session, owner_id, model.id, dataset.id, 1)


def test_runs_page_queries_do_not_grow_with_jobs(client) -> None:
    from app.auth import create_token, get_or_create_user
    from app.db import session_scope

    with session_scope() as session:
        user = get_or_create_user(session, f"pager-{uuid.uuid4().hex[:6]}")
        user_id = user.id
        headers = {"Authorization": f"Bearer {create_token(session, user)}"}
    _add_jobs_with_their_own_model_and_dataset(user_id, 3)
    client.get("/jobs", headers=headers)  # the token's first use writes last_used_at
    few = _statements_for(client, "/jobs", headers)
    _add_jobs_with_their_own_model_and_dataset(user_id, 27)
    many = _statements_for(client, "/jobs", headers)
    page = BeautifulSoup(client.get("/jobs", headers=headers).text, "html.parser")
    rows = page.select("tr.job-row")
    assert len(rows) == 30
    assert all(r.select_one(".job-model").text.startswith("own-") for r in rows)
    assert all(r.select_one(".job-dataset").text.startswith("own-") for r in rows)
    assert many == few
    # A filtered list reads the same objects: still one count for any number of runs.
    filtered = _statements_for(client, "/jobs?status=succeeded", headers)
    assert filtered <= few + 1


def _upload_scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict:
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "scheme": "http",
        "query_string": b"",
        "headers": headers,
        "server": ("test", 80),
        "client": ("test", 1),
        "http_version": "1.1",
    }


@pytest.mark.parametrize(
    ("path", "headers", "status", "kind"),
    [
        ("/api/datasets", [(b"content-length", b"4097")], 413, "application/json"),
        ("/datasets", [(b"content-length", b"4097")], 413, "text/html"),
        ("/api/datasets", [], 411, "application/json"),
    ],
)
def test_upload_limit_refuses_before_reading_the_body(
    path: str, headers: list, status: int, kind: str
) -> None:
    """The plain ASGI upload limit answers without calling the app or reading a byte."""
    import asyncio

    from app.web.middleware import RequestLimits

    async def app(scope, receive, send) -> None:
        raise AssertionError("the app must not see a refused upload")

    async def receive() -> dict:
        raise AssertionError("a refused upload's body must not be read")

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    limits = RequestLimits(app, max_upload_bytes=4096, max_body_bytes=2**20)
    asyncio.run(limits(_upload_scope(path, headers), receive, send))
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == status
    assert dict(sent[0]["headers"])[b"content-type"].decode().startswith(kind)


def test_upload_limit_passes_everything_else_through() -> None:
    import asyncio

    from app.web.middleware import RequestLimits

    seen: list[str] = []

    async def app(scope, receive, send) -> None:
        seen.append(scope.get("path", scope["type"]))

    async def unused(*_args) -> None:
        raise AssertionError("not for the middleware")

    limit = RequestLimits(app, max_upload_bytes=4096, max_body_bytes=2**20)
    fits = _upload_scope("/api/datasets", [(b"content-length", b"4096")])
    elsewhere = _upload_scope("/api/jobs", [(b"content-length", b"999999")])
    asyncio.run(limit(fits, unused, unused))
    asyncio.run(limit(elsewhere, unused, unused))
    asyncio.run(limit({"type": "lifespan"}, unused, unused))
    assert seen == ["/api/datasets", "/api/jobs", "lifespan"]
