"""The artifacts disk fills up while a checkpoint or an export is written.

A studio of its own runs these (its database stays on the real disk): its jobs and exports
folders are small tmpfs mounts, and the disk is filled for real with a file that takes all its
free space."""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.faults.conftest import job_body, metric_steps, read_job, submit
from tests.support.disk import fill, small_disk, tmpfs_unavailable
from tests.support.jobs import checkpoints, wait_for, wait_for_export, wait_for_job
from tests.support.runs import upload_counting
from tests.support.studio import Studio, private_studio

pytestmark = pytest.mark.faults

MiB = 1024 * 1024
LEFT_FREE = 0
MAX_STEPS, SAVE_STEPS = 30, 10


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Studio]:
    if reason := tmpfs_unavailable():
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("disk-full")
    with (
        small_disk(root / "data" / "jobs", 256 * MiB),
        small_disk(root / "data" / "exports", 128 * MiB),
        private_studio(root, tiny_model_dir) as running,
    ):
        yield running


@dataclass
class FullDiskRun:
    job_id: int
    kept: Path  # the checkpoint saved before the disk filled
    kept_digests: dict[str, str]
    filler: Path


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _training_process(studio: Studio, job_id: int) -> int:
    from worker.job_processes import marked_processes

    (pid,) = marked_processes(f"{(studio.jobs_dir / str(job_id)).resolve()}#1")
    return pid


@pytest.fixture(scope="module")
def full_disk_run(studio: Studio) -> FullDiskRun:
    """A run whose disk fills up after its first checkpoint: the training process is paused
    while the disk is filled, so the next save is the write that finds it full."""
    client, account = studio.client, studio.account
    dataset_id = upload_counting(client, account)
    body = job_body("tiny-llama", dataset_id, None, max_steps=MAX_STEPS, save_steps=SAVE_STEPS)
    job_id = submit(client, account, body)
    wait_for(lambda: checkpoints(client, account, job_id), 180, "a first checkpoint", 0.1)
    pid = _training_process(studio, job_id)
    os.kill(pid, signal.SIGSTOP)
    try:
        kept = studio.jobs_dir / str(job_id) / "output" / f"checkpoint-{SAVE_STEPS}"
        assert read_job(client, account, job_id)["progress"]["step"] < 2 * SAVE_STEPS
        run = FullDiskRun(job_id, kept, _digests(kept), fill(studio.jobs_dir, LEFT_FREE))
    finally:
        os.kill(pid, signal.SIGCONT)
    return run


def test_a_full_disk_fails_the_checkpoint_saying_why_and_the_last_one_still_resumes(
    studio: Studio, full_disk_run: FullDiskRun
) -> None:
    client, account, job_id = studio.client, studio.account, full_disk_run.job_id
    failed = wait_for_job(client, account, job_id, timeout=120)
    assert failed["status"] == "failed"
    assert "no space left on device" in failed["error"].lower(), failed["error"]
    assert [c["step"] for c in checkpoints(client, account, job_id)] == [SAVE_STEPS]
    output = full_disk_run.kept.parent
    assert [p.name for p in output.glob("checkpoint-*")] == [full_disk_run.kept.name]
    assert _digests(full_disk_run.kept) == full_disk_run.kept_digests

    full_disk_run.filler.unlink()  # the operator frees space and resumes the run
    resumed = client.post(f"/api/jobs/{job_id}/resume", headers=account.headers)
    assert resumed.status_code == 200, resumed.text
    done = wait_for_job(client, account, job_id, timeout=180)
    assert done["status"] == "succeeded", done["error"]
    assert [e["step"] for e in done["events"] if e["kind"] == "resumed"] == [SAVE_STEPS]
    assert metric_steps(client, account, job_id) == list(range(1, MAX_STEPS + 1))


def test_a_full_disk_fails_the_export_saying_why_and_leaves_nothing_half_written(
    studio: Studio, full_disk_run: FullDiskRun
) -> None:
    client, account, job_id = studio.client, studio.account, full_disk_run.job_id
    wait_for_job(client, account, job_id, timeout=180)
    (kept,) = [c for c in checkpoints(client, account, job_id) if c["step"] == SAVE_STEPS]
    filler = fill(studio.exports_dir, LEFT_FREE)
    try:
        url = f"/api/checkpoints/{kept['id']}/exports"
        created = client.post(url, headers=account.headers, json={"kind": "merged"})
        assert created.status_code == 201, created.text
        export = wait_for_export(client, account, created.json()["id"], timeout=180)
        assert export["status"] == "failed"
        assert "no space left on device" in export["error"].lower(), export["error"]
        assert export["download_url"] is None
        left = {p.name for p in (studio.exports_dir / str(export["id"])).iterdir()}
        assert left <= {"export.log", "error.txt"}, left  # the partial model files are gone
    finally:
        filler.unlink()
