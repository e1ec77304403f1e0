"""The worker under a run goes away: killed outright (SIGKILL: a crash, the OOM killer, a lost
host) or asked to stop (SIGTERM: `docker stop`, a deploy, a spot reclaim)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator

import pytest

from tests.conftest import Account
from tests.faults.conftest import (
    FAST_BEATS,
    job_body,
    metric_steps,
    new_device_class,
    read_job,
    submit,
    wait_for_steps,
)
from tests.support.jobs import checkpoints, wait_for, wait_for_job
from tests.support.processes import registered_worker, start_class_worker, stop

pytestmark = pytest.mark.faults


class ClassWorkers:
    """The workers of one device class, started one after another (each replaces the last one
    a test killed or stopped); the next test starts from the one still running."""

    def __init__(self, client, account: Account) -> None:
        self.client, self.account = client, account
        self.device_class, self.log = new_device_class("worker-lost")
        self.started: list[subprocess.Popen] = []

    def start(self) -> subprocess.Popen:
        proc = start_class_worker(self.log, self.device_class, **FAST_BEATS)
        self.started.append(proc)
        return proc

    def running(self) -> subprocess.Popen:
        """The last one started, registered and online; started now if there is none."""
        proc = self.started[-1] if self.started and self.started[-1].poll() is None else None
        proc = proc or self.start()
        registered_worker(self.client, self.account, self.device_class, proc, self.log)
        return proc


@pytest.fixture(scope="module")
def workers(client, alice: Account, tiny_model: str) -> Iterator[ClassWorkers]:
    pool = ClassWorkers(client, alice)
    yield pool
    for proc in pool.started:
        stop(proc)


def _attempt_processes(job_id: int, attempt: int) -> list[int]:
    from worker.job_processes import marked_processes, marker

    return marked_processes(marker(job_id, attempt))


def _busy_on(client, account: Account, job_id: int) -> list[str]:
    """The workers the registry shows running the job."""
    listed = client.get("/api/workers", headers=account.headers).json()
    return [w["name"] for w in listed if w["busy"] and w["job_id"] == job_id]


def _worker_name(proc: subprocess.Popen) -> str:
    return f"ftstudio-{proc.pid}@{socket.gethostname()}"  # app.cli.worker_command's node name


def _resumed_step(job: dict) -> int:
    (resumed,) = [e for e in job["events"] if e["kind"] == "resumed"]
    return resumed["step"]


def test_sigkill_mid_run_resumes_from_the_last_complete_checkpoint_once(
    client, alice: Account, tiny_model: str, counting_dataset: int, workers: ClassWorkers
) -> None:
    max_steps = 100
    first = workers.running()
    body = job_body(tiny_model, counting_dataset, workers.device_class, max_steps=max_steps,
                    save_steps=10, save_total_limit=2)  # fmt: skip
    job_id = submit(client, alice, body)
    wait_for(lambda: checkpoints(client, alice, job_id), 180, "a first checkpoint")

    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert _attempt_processes(job_id, 1)  # its training process trains on, orphaned

    second = workers.start()
    wait_for(lambda: read_job(client, alice, job_id)["attempt"] == 2, 120, "the requeue")
    # attempt 2 is still starting (its imports take seconds): what it resumes from is here
    saved = [c["step"] for c in checkpoints(client, alice, job_id)]
    assert not _attempt_processes(job_id, 1)  # the orphan was killed before the requeue
    wait_for(lambda: read_job(client, alice, job_id)["status"] == "running", 60, "attempt 2")
    assert _attempt_processes(job_id, 2) and not _attempt_processes(job_id, 1)
    # the killed worker drops out of the registry once its beats are stale
    only_second = [_worker_name(second)]
    wait_for(lambda: _busy_on(client, alice, job_id) == only_second, 30, "one busy worker")

    done = wait_for_job(client, alice, job_id, timeout=300)
    assert done["status"] == "succeeded", done["error"]
    assert done["attempt"] == 2
    assert _resumed_step(done) == max(saved) > 0
    # every step stored exactly once: the killed attempt's steps past the checkpoint were
    # dropped, and attempt 2 logged them again from there
    assert metric_steps(client, alice, job_id) == list(range(1, max_steps + 1))
    finals = [c["step"] for c in checkpoints(client, alice, job_id) if c["is_final"]]
    assert finals == [max_steps]


def test_sigterm_mid_run_checkpoints_requeues_and_the_job_finishes(
    client, alice: Account, tiny_model: str, counting_dataset: int, workers: ClassWorkers
) -> None:
    max_steps = 60
    first = workers.running()
    # no save before the last step: a checkpoint can only come from the shutdown
    body = job_body(tiny_model, counting_dataset, workers.device_class, max_steps=max_steps,
                    save_steps=max_steps)  # fmt: skip
    job_id = submit(client, alice, body)
    wait_for_steps(client, alice, job_id, 5)
    asked_at = read_job(client, alice, job_id)["progress"]["step"]

    first.send_signal(signal.SIGTERM)
    first.wait(timeout=60)  # a warm shutdown that does not wait for the rest of the run
    assert first.returncode == 0

    stopped = read_job(client, alice, job_id)
    assert stopped["status"] == "queued" and stopped["attempt"] == 2, stopped
    (saved,) = checkpoints(client, alice, job_id)
    assert asked_at <= saved["step"] < max_steps and not saved["is_final"]
    assert not _attempt_processes(job_id, 1)

    workers.start()
    done = wait_for_job(client, alice, job_id, timeout=300)
    assert done["status"] == "succeeded", done["error"]
    assert done["attempt"] == 2 and _resumed_step(done) == saved["step"]
    assert metric_steps(client, alice, job_id) == list(range(1, max_steps + 1))
