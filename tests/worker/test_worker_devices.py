"""Workers own devices (issue 12): ``--devices`` parsing, the child's CUDA_VISIBLE_DEVICES, and a
real worker started with ``--devices cpu`` that registers its CPU, beats busy with the job it
runs (whose training process sees no GPU) and goes offline when it stops."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO, RUN_DIR, Account
from tests.support.jobs import wait_for, wait_for_job
from tests.support.runs import upload_counting


@pytest.mark.parametrize(
    ("value", "mode", "visible"),
    [("auto", "auto", None), ("cpu", "cpu", ""), ("0", "indices", "0"), ("1, 3", "indices", "1,3")],
)
def test_parse_devices(value: str, mode: str, visible: str | None) -> None:
    from app.worker_registry import parse_devices

    plan = parse_devices(value)
    assert plan.mode == mode and plan.cuda_visible_devices() == visible


@pytest.mark.parametrize("value", ["", "gpu", "0,0", "-1", "0,,1", "cuda:0"])
def test_parse_devices_refuses(value: str) -> None:
    from app.worker_registry import parse_devices

    with pytest.raises(ValueError):
        parse_devices(value)


def test_the_cli_refuses_bad_devices_before_celery_starts() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "worker", "--devices", "gpu0"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode != 0 and "expected auto, cpu" in done.stderr


@pytest.mark.parametrize(("devices", "seen"), [("cpu", ""), ("0,1", "0,1"), ("auto", None)])
def test_the_child_sees_only_the_workers_devices(
    monkeypatch, tmp_path: Path, devices: str, seen: str | None
) -> None:
    from app.settings import get_settings
    from worker.supervise import run_child

    monkeypatch.setattr(get_settings(), "worker_devices", devices)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")  # what the worker itself was started with
    out = tmp_path / "seen.txt"
    result = run_child(
        "tests.support.env_probe",
        [str(out)],
        log_path=tmp_path / "log.txt",
        error_path=tmp_path / "error.txt",
        heartbeat=lambda: None,
        should_cancel=lambda: False,
        heartbeat_seconds=1,
        cancel_grace_seconds=5,
    )
    assert result.returncode == 0, (tmp_path / "log.txt").read_text()
    assert out.read_text() == ("7" if seen is None else seen)  # auto leaves it as it was


def _ours(client, account: Account, device_class: str) -> dict | None:
    workers = client.get("/api/workers", headers=account.headers).json()
    return next((w for w in workers if w["device_class"] == device_class), None)


@pytest.mark.worker
def test_a_cpu_worker_registers_and_confines_its_runs(client, alice: Account, tiny_model: str):
    from app.broker import RUN_JOB_TASK, get_celery
    from app.db import session_scope
    from app.jobs import create_job
    from app.models import User
    from app.settings import get_settings

    tag = uuid.uuid4().hex[:6]
    device_class, queue = f"test-cpu-{tag}", f"{get_settings().queue}-devices-{tag}"
    log_path = RUN_DIR / f"worker-devices-{tag}.log"
    argv = [sys.executable, "-m", "app.cli", "worker", "--queues", queue]
    argv += ["--devices", "cpu", "--device-class", device_class]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0"}  # the worker's own view; its runs get ""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    try:
        wait_for(lambda: _ours(client, alice, device_class) or proc.poll() is not None, 120, "it")
        assert proc.poll() is None, log_path.read_text()[-3000:]
        worker = _ours(client, alice, device_class)
        assert worker["online"] and not worker["busy"] and worker["job_id"] is None
        (device,) = worker["devices"]
        assert device["index"] is None and device["name"] == "cpu" and device["memory_bytes"] > 0

        dataset_id = upload_counting(client, alice, f"devices-{tag}.jsonl")
        with session_scope() as session:
            job = create_job(
                session,
                session.get(User, alice.user_id),
                base_model=tiny_model,
                dataset_id=dataset_id,
                hyperparameters={
                    "max_steps": 2,
                    "logging_steps": 1,
                    "max_length": 64,
                    "save_steps": 100_000,
                },
            )
            job_id = job.id
        get_celery().send_task(RUN_JOB_TASK, args=[job_id], queue=queue)

        seen: list[str] = []

        def child_env_seen() -> bool:
            for child in psutil.Process(proc.pid).children(recursive=True):
                try:
                    if "worker.training.run" in " ".join(child.cmdline()):
                        seen.append(child.environ().get("CUDA_VISIBLE_DEVICES", "<unset>"))
                        return True
                except psutil.Error:
                    continue
            return False

        wait_for(child_env_seen, 120, "the training process", interval=0.05)
        assert seen == [""]  # --devices cpu: the run sees no GPU
        wait_for(lambda: (_ours(client, alice, device_class) or {}).get("busy"), 30, "busy")
        assert _ours(client, alice, device_class)["job_id"] == job_id
        ended = wait_for_job(client, alice, job_id)
        assert ended["status"] == "succeeded", ended["error"]
        wait_for(lambda: not _ours(client, alice, device_class)["busy"], 30, "idle again")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert not _ours(client, alice, device_class)["online"]  # a clean stop is offline at once


@pytest.mark.parametrize(
    ("gpus", "per_worker", "plan"),
    [
        (8, 1, ["0", "1", "2", "3", "4", "5", "6", "7"]),
        (8, 4, ["0,1,2,3", "4,5,6,7"]),
        (6, 4, ["0,1,2,3", "4,5"]),  # what is left makes a smaller worker
        (8, 0, []),  # one worker owning FTSTUDIO_WORKER_DEVICES
        (0, 1, []),  # no GPU: one worker (the CPU)
    ],
)
def test_up_shares_a_hosts_gpus_out_by_the_plan(gpus: int, per_worker: int, plan: list[str]):
    from app.worker_registry import parse_devices, share_out

    assert share_out(gpus, per_worker) == plan
    owned = [i for devices in plan for i in parse_devices(devices).indices]
    assert sorted(owned) == list(range(gpus if plan else 0))  # every GPU, none twice


def test_several_workers_from_one_process_get_their_own_node_names() -> None:
    from app.cli import worker_command

    names = {worker_command(index=i)[-1] for i in range(3)}
    assert len(names) == 3 and all(name.endswith("@%h") for name in names)
