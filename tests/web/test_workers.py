"""GET /api/workers and the Workers page, from rows the workers register (issue 12): shape,
online/busy state, and another user's job hidden."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from bs4 import BeautifulSoup

from tests.conftest import Account
from tests.support.html import post_login

H100 = "NVIDIA H100 80GB HBM3"
H100_BYTES = 85_045_395_456


def _job_for(session, owner_id: int) -> int:
    from app.models import BaseModel, Dataset, Job, JobStatus

    tag = uuid.uuid4().hex[:8]
    model = BaseModel(name=f"workers-model-{tag}", path="/nowhere")
    dataset = Dataset(owner_id=owner_id, name=f"workers-{tag}", kind="sft", format="alpaca")
    session.add_all([model, dataset])
    session.flush()
    job = Job(
        owner_id=owner_id,
        name=f"run-{tag}",
        method="sft",
        adapter="lora",
        base_model_id=model.id,
        dataset_id=dataset.id,
        spec={},
        spec_version=1,
        status=JobStatus.cancelled,  # never taken by the session's worker
    )
    session.add(job)
    session.flush()
    return job.id


@pytest.fixture(scope="module")
def registered(alice: Account, bob: Account) -> Iterator[dict]:
    """Four workers: two H100s busy with alice's job, a CPU one idle, one busy with bob's job,
    and one that stopped beating ten minutes ago."""
    from app import worker_registry
    from app.db import session_scope
    from app.models import Worker

    tag = uuid.uuid4().hex[:6]
    names = {k: f"{k}-{tag}@host-{k}" for k in ("gpu", "cpu", "bobs", "gone")}
    h100s = [{"index": i, "name": H100, "memory_bytes": H100_BYTES} for i in (2, 3)]
    cpu = [{"index": None, "name": "cpu", "memory_bytes": 8 << 30}]
    with session_scope() as session:
        alices_job, bobs_job = _job_for(session, alice.user_id), _job_for(session, bob.user_id)
        for key, devices, job_id in (
            ("gpu", h100s, alices_job),
            ("cpu", cpu, None),
            ("bobs", cpu, bobs_job),
            ("gone", h100s, alices_job),
        ):
            worker_registry.heartbeat(
                session,
                names[key],
                host=f"host-{key}",
                device_class=devices[0]["name"],
                devices=devices,
                busy=job_id is not None,
                job_id=job_id,
                started=True,
            )
        gone = session.query(Worker).filter_by(name=names["gone"]).one()
        gone.last_seen = gone.last_seen - timedelta(minutes=10)
    yield {"names": names, "alices_job": alices_job, "bobs_job": bobs_job}
    with session_scope() as session:
        session.query(Worker).filter(Worker.name.in_(names.values())).delete()


def _by_name(workers: list[dict], names: dict[str, str]) -> dict[str, dict]:
    return {key: next(w for w in workers if w["name"] == name) for key, name in names.items()}


def test_workers_api_contract(client, alice: Account, registered: dict) -> None:
    response = client.get("/api/workers", headers=alice.headers)
    assert response.status_code == 200
    workers = response.json()
    assert isinstance(workers, list)
    for worker in workers:  # the REST contract of issue 12, plus what the runs tests read
        assert set(worker) >= {
            "name", "host", "online", "devices", "device_class", "busy", "job_id",
            "last_seen", "stalled",
        }  # fmt: skip
        for device in worker["devices"]:
            assert set(device) == {"index", "name", "memory_bytes"}
    mine = _by_name(workers, registered["names"])
    gpu = mine["gpu"]
    assert gpu["host"] == "host-gpu" and gpu["device_class"] == H100
    assert gpu["devices"] == [
        {"index": 2, "name": H100, "memory_bytes": H100_BYTES},
        {"index": 3, "name": H100, "memory_bytes": H100_BYTES},
    ]
    assert gpu["online"] and gpu["busy"] and gpu["job_id"] == registered["alices_job"]
    cpu = mine["cpu"]
    assert cpu["online"] and not cpu["busy"] and cpu["job_id"] is None
    assert cpu["devices"][0]["index"] is None and cpu["device_class"] == "cpu"
    # bob's job: alice sees the worker busy, never the id
    assert mine["bobs"]["busy"] and mine["bobs"]["job_id"] is None
    gone = mine["gone"]
    assert not gone["online"] and not gone["busy"] and gone["stalled"]
    assert gone["job_id"] is None
    # online workers come first
    onlines = [w["online"] for w in workers]
    assert onlines == sorted(onlines, reverse=True)
    assert client.get("/api/workers").status_code == 401


def test_each_owner_sees_only_their_job(client, bob: Account, registered: dict) -> None:
    mine = _by_name(client.get("/api/workers", headers=bob.headers).json(), registered["names"])
    assert mine["bobs"]["job_id"] == registered["bobs_job"]
    assert mine["gpu"]["busy"] and mine["gpu"]["job_id"] is None


def test_a_clean_shutdown_is_offline_at_once(client, alice: Account) -> None:
    from app import worker_registry
    from app.db import session_scope

    name = f"stopping-{uuid.uuid4().hex[:6]}@h"
    with session_scope() as session:
        worker_registry.heartbeat(
            session, name, host="h", device_class="cpu", devices=[], busy=False, job_id=None
        )
    with session_scope() as session:
        worker_registry.stopped(session, name)
    (row,) = [
        w for w in client.get("/api/workers", headers=alice.headers).json() if w["name"] == name
    ]
    assert not row["online"] and not row["stalled"]


@pytest.fixture
def as_alice(client, alice: Account) -> Iterator:
    client.cookies.clear()
    response = post_login(client, {"token": alice.token}, follow_redirects=False)
    assert response.status_code == 303
    yield client
    client.cookies.clear()


def test_workers_page(as_alice, registered: dict) -> None:
    response = as_alice.get("/workers")
    assert response.status_code == 200
    soup = BeautifulSoup(response.text, "html.parser")
    assert soup.select_one("nav a[href='/workers']") is not None
    names = registered["names"]

    def row(key: str):
        found = soup.select_one(f"tr.worker-row[data-worker='{names[key]}']")
        assert found is not None, key
        return found

    gpu = row("gpu")
    assert gpu["data-state"] == "busy"
    assert gpu.select_one(".device-class").text == H100
    devices = gpu.select("li.device")
    assert [d["data-index"] for d in devices] == ["2", "3"]
    assert "79.2 GiB" in devices[0].text
    link = gpu.select_one(".worker-job a")
    assert link is not None and link["href"] == f"/jobs/{registered['alices_job']}"
    assert row("cpu")["data-state"] == "online"
    assert row("cpu").select_one(".worker-job a") is None
    bobs = row("bobs")
    assert bobs["data-state"] == "busy" and bobs.select_one(".worker-job a") is None
    assert "another user" in bobs.select_one(".worker-job").text
    assert row("gone")["data-state"] == "stalled"
    assert soup.select_one("#queue-total strong") is not None
    assert as_alice.get("/workers", follow_redirects=False).status_code == 200
