"""Jobs go only to workers that can hold them (issue 12): two workers with configured device
classes each take only the jobs routed to their class; a job no registered worker can hold is
refused with the reason; a queued job whose worker is offline says what it waits for."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import RUN_DIR, Account
from tests.support.jobs import wait_for, wait_for_job
from tests.support.processes import registered_worker, start_class_worker, stop
from tests.support.runs import upload_counting

pytestmark = pytest.mark.worker

HYPER = {"max_steps": 2, "logging_steps": 1, "max_length": 64, "save_steps": 100_000}


def _submit(client, account: Account, model: str, dataset_id: int, **body) -> dict:
    body = {"base_model": model, "dataset_id": dataset_id, "hyperparameters": HYPER, **body}
    response = client.post("/api/jobs", headers=account.headers, json=body)
    assert response.status_code == 201, response.text
    return response.json()


def _job(client, account: Account, job_id: int) -> dict:
    return client.get(f"/api/jobs/{job_id}", headers=account.headers).json()


def test_each_worker_takes_only_its_device_class(client, alice: Account, tiny_model: str):
    tag = uuid.uuid4().hex[:6]
    class_a, class_b = f"route-a-{tag}", f"route-b-{tag}"
    dataset_id = upload_counting(client, alice, f"routing-{tag}.jsonl")
    log_a, log_b = RUN_DIR / f"worker-{class_a}.log", RUN_DIR / f"worker-{class_b}.log"
    worker_a = start_class_worker(log_a, class_a)
    worker_b = start_class_worker(log_b, class_b)
    try:
        a = registered_worker(client, alice, class_a, worker_a, log_a)
        registered_worker(client, alice, class_b, worker_b, log_b)
        stop(worker_b)  # B is registered but offline: its jobs wait for it
        wait_for(
            lambda: (
                not any(
                    w["online"]
                    for w in client.get("/api/workers", headers=alice.headers).json()
                    if w["device_class"] == class_b
                )
            ),
            30,
            "B offline",
        )

        for_b = _submit(client, alice, tiny_model, dataset_id, device_class=class_b)
        for_a = _submit(client, alice, tiny_model, dataset_id, device_class=class_a)
        done_a = wait_for_job(client, alice, for_a["id"])
        assert done_a["status"] == "succeeded", done_a["error"]
        assert done_a["worker"] == a["name"]
        waiting = _job(client, alice, for_b["id"])
        assert waiting["status"] == "queued"  # A was free all along and did not take it
        assert waiting["waiting_for"].startswith(f"waiting for a worker with 1 x {class_b}")
        assert "none is online" in waiting["waiting_for"]

        worker_b = start_class_worker(log_b, class_b)
        b = registered_worker(client, alice, class_b, worker_b, log_b)
        done_b = wait_for_job(client, alice, for_b["id"])
        assert done_b["status"] == "succeeded", done_b["error"]
        assert done_b["worker"] == b["name"] != a["name"]
    finally:
        stop(worker_a)
        stop(worker_b)


def test_a_job_no_registered_worker_can_hold_is_refused(client, alice: Account, tiny_model: str):
    dataset_id = upload_counting(client, alice, "refused.jsonl")
    body = {"base_model": tiny_model, "dataset_id": dataset_id}

    too_many = {**body, "hyperparameters": {**HYPER, "num_devices": 64}}
    response = client.post("/api/jobs", headers=alice.headers, json=too_many)
    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert error["loc"] == ["hyperparameters", "num_devices"]
    assert "has 64 devices" in error["message"] and "registered:" in error["message"]

    unknown = {**body, "hyperparameters": HYPER, "device_class": f"nowhere-{uuid.uuid4().hex}"}
    response = client.post("/api/jobs", headers=alice.headers, json=unknown)
    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert error["loc"] == ["device_class"] and "no registered worker" in error["message"]


def test_a_sharded_run_with_only_cpu_workers_is_refused_naming_the_strategy(
    client, alice: Account, tiny_model: str
) -> None:
    from sqlalchemy import delete

    from app import worker_registry
    from app.db import session_scope
    from app.models import Worker

    device_class, name = f"cpu-fsdp-{uuid.uuid4().hex[:6]}", f"cpu-fsdp@{uuid.uuid4().hex[:6]}"
    cpu = [{"index": None, "name": "cpu", "memory_bytes": 2**34}]
    with session_scope() as session:
        worker_registry.heartbeat(
            session,
            name,
            host="h",
            device_class=device_class,
            devices=cpu,
            max_devices=8,
            busy=False,
            job_id=None,
        )
    try:
        dataset_id = upload_counting(client, alice, "sharded.jsonl")
        hyper = {**HYPER, "num_devices": 2}
        body = {"base_model": tiny_model, "dataset_id": dataset_id, "device_class": device_class}
        fsdp = {**body, "hyperparameters": {**hyper, "distributed_strategy": "fsdp"}}
        response = client.post("/api/jobs", headers=alice.headers, json=fsdp)
        assert response.status_code == 422
        (error,) = response.json()["errors"]
        assert error["loc"] == ["hyperparameters", "distributed_strategy"]
        assert "GPU" in error["message"] and name in error["message"]
        # the same run with ddp is accepted: the CPU worker holds it (the job is left queued)
        ddp = {**body, "hyperparameters": hyper}
        accepted = client.post("/api/jobs", headers=alice.headers, json=ddp)
        assert accepted.status_code == 201, accepted.text
        cancel = client.post(f"/api/jobs/{accepted.json()['id']}/cancel", headers=alice.headers)
        assert cancel.status_code == 200
    finally:
        with session_scope() as session:
            session.execute(delete(Worker).where(Worker.name == name))
