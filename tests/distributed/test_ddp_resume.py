"""A two-process run whose worker is killed with SIGKILL (issue 12): its ranks, left running as
orphans, are all gone before the job is requeued; the next worker resumes it from the last
complete checkpoint with both processes, and the merged export of the result loads and
generates with the run's chat template."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.conftest import RUN_DIR, Account
from tests.support.exports import extract
from tests.support.jobs import checkpoints, metrics, wait_for, wait_for_export, wait_for_job
from tests.support.processes import registered_worker, start_class_worker, stop
from tests.support.runs import upload_counting

pytestmark = pytest.mark.worker

HYPER = {
    "max_steps": 240,
    "logging_steps": 1,
    "save_steps": 10,
    "save_total_limit": 2,
    "max_length": 64,
    "per_device_train_batch_size": 2,
    "num_devices": 2,
    "learning_rate": 1e-3,
}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _job(client, account: Account, job_id: int) -> dict:
    return client.get(f"/api/jobs/{job_id}", headers=account.headers).json()


def test_a_killed_two_process_run_resumes_and_its_merged_export_generates(
    client, alice: Account, tiny_model: str, tmp_path: Path
) -> None:
    from worker.job_processes import marked_processes, marker

    device_class = f"resume-{uuid.uuid4().hex[:6]}"
    dataset_id = upload_counting(client, alice, f"{device_class}.jsonl")
    log = RUN_DIR / f"worker-{device_class}.log"
    first = start_class_worker(log, device_class)
    second = None
    try:
        registered_worker(client, alice, device_class, first, log)
        body = {
            "base_model": tiny_model,
            "dataset_id": dataset_id,
            "device_class": device_class,
            "hyperparameters": HYPER,
        }
        created = client.post("/api/jobs", headers=alice.headers, json=body)
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        wait_for(lambda: checkpoints(client, alice, job_id), 300, "a first checkpoint")

        orphans = marked_processes(marker(job_id, 1))
        assert len(orphans) >= 3  # torchrun and its two ranks
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        assert any(_alive(pid) for pid in orphans)  # the ranks train on without their worker
        killed_at = _job(client, alice, job_id)["progress"]["step"]
        assert 0 < killed_at < HYPER["max_steps"]

        second = start_class_worker(log, device_class)
        wait_for(lambda: _job(client, alice, job_id)["attempt"] == 2, 120, "the requeue")
        assert not any(_alive(pid) for pid in orphans)  # all gone before attempt 2
        done = wait_for_job(client, alice, job_id, timeout=600)
        assert done["status"] == "succeeded", done["error"]
        assert done["attempt"] == 2 and done["launch"]["processes"] == 2

        (resumed,) = [e for e in done["events"] if e["kind"] == "resumed"]
        assert resumed["step"] > 0 and resumed["step"] % HYPER["save_steps"] == 0
        steps = [m["step"] for m in metrics(client, alice, job_id)]
        assert steps == list(range(1, HYPER["max_steps"] + 1))  # each step logged once

        final = next(c for c in checkpoints(client, alice, job_id) if c["is_final"])
        url = f"/api/checkpoints/{final['id']}/exports"
        export = client.post(url, headers=alice.headers, json={"kind": "merged"})
        assert export.status_code == 201, export.text
        export = wait_for_export(client, alice, export.json()["id"], timeout=600)
        assert export["status"] == "succeeded", export["error"]
        archive = client.get(export["download_url"], headers=alice.headers).content
        root = extract(archive, tmp_path)
        model = AutoModelForCausalLM.from_pretrained(root, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(root, local_files_only=True)
        assert tokenizer.chat_template == done["chat_template"]
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": "count"}], add_generation_prompt=True, return_tensors="pt"
        )
        ids = prompt["input_ids"] if hasattr(prompt, "keys") else prompt
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=8, do_sample=False)
        assert out.shape[1] > ids.shape[1]
    finally:
        for proc in (first, second):
            if proc is not None:
                stop(proc)
