"""The spine end to end through the API: import -> train -> metrics -> checkpoints -> export."""

from __future__ import annotations

import io
import math
import tarfile
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from app.db import session_scope
from app.jobs import find_base_model
from tests.conftest import Account, wait_for_job
from tests.support.datasets import alpaca_demo

pytestmark = pytest.mark.worker

MAX_STEPS, LOGGING_STEPS, SAVE_STEPS = 12, 2, 6


@pytest.fixture(scope="module")
def finished_job(client, alice: Account, worker: Path, tiny_model: str) -> dict:
    demo = alpaca_demo()
    with demo.open("rb") as f:
        upload = client.post("/api/datasets", headers=alice.headers, files={"file": (demo.name, f)})
    assert upload.status_code == 201, upload.text
    assert upload.json()["num_rows"] == 999
    eval_rows = b"\n".join(
        b'{"instruction": "Name a colour.", "output": "Blue."}' for _ in range(4)
    )
    eval_upload = client.post(
        "/api/datasets", headers=alice.headers, files={"file": ("eval.jsonl", eval_rows)}
    )
    body = {
        "method": "sft",
        "adapter": "lora",
        "base_model": tiny_model,
        "dataset_id": upload.json()["id"],
        "eval_dataset_id": eval_upload.json()["id"],
        "hyperparameters": {
            "max_steps": MAX_STEPS,
            "logging_steps": LOGGING_STEPS,
            "save_steps": SAVE_STEPS,
            "learning_rate": 3e-3,
            "per_device_train_batch_size": 4,
            "max_length": 256,
            "lora_r": 8,
            "lora_alpha": 16,
            "warmup_steps": 0.0,
            "lr_scheduler_type": "constant",
        },
    }
    created = client.post("/api/jobs", headers=alice.headers, json=body)
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "queued"
    job = wait_for_job(client, alice, created.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    return job


def test_job_records_one_finite_loss_per_logging_step(
    client, alice: Account, finished_job: dict
) -> None:
    rows = client.get(f"/api/jobs/{finished_job['id']}/metrics", headers=alice.headers).json()
    metrics = [m for m in rows if "eval_loss" not in m]
    evaluations = [m for m in rows if "eval_loss" in m]
    logged_steps = list(range(LOGGING_STEPS, MAX_STEPS + 1, LOGGING_STEPS))
    assert [m["step"] for m in evaluations] == logged_steps
    assert all(math.isfinite(m["eval_loss"]) for m in evaluations)
    assert [m["step"] for m in metrics] == list(range(LOGGING_STEPS, MAX_STEPS + 1, LOGGING_STEPS))
    assert all(math.isfinite(m["loss"]) for m in metrics)
    assert all(m["learning_rate"] > 0 and m["grad_norm"] is not None for m in metrics)
    assert all(m["num_tokens"] > 0 for m in metrics)
    assert metrics[-1]["loss"] < metrics[0]["loss"], "the loss should fall on the tiny model"
    assert finished_job["progress"] == {"step": MAX_STEPS, "max_steps": MAX_STEPS}


def test_checkpoints_are_recorded(client, alice: Account, finished_job: dict) -> None:
    checkpoints = client.get(
        f"/api/jobs/{finished_job['id']}/checkpoints", headers=alice.headers
    ).json()
    assert [(c["step"], c["is_final"]) for c in checkpoints] == [
        (6, False),
        (12, False),
        (12, True),
    ]


def test_merged_export_loads_offline_and_keeps_the_template(
    client,
    alice: Account,
    finished_job: dict,
    tmp_path: Path,
    tiny_model: str,
) -> None:
    final = client.get(f"/api/jobs/{finished_job['id']}/checkpoints", headers=alice.headers).json()[
        -1
    ]
    created = client.post(
        f"/api/checkpoints/{final['id']}/exports", headers=alice.headers, json={"kind": "merged"}
    )
    assert created.status_code == 201, created.text
    export_id = created.json()["id"]

    deadline = time.monotonic() + 300
    while (export := client.get(f"/api/exports/{export_id}", headers=alice.headers).json())[
        "status"
    ] not in (
        "succeeded",
        "failed",
    ):
        assert time.monotonic() < deadline, "export timed out"
        time.sleep(0.5)
    assert export["status"] == "succeeded", export["error"]

    download = client.get(f"/api/exports/{export_id}/download", headers=alice.headers)
    assert download.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(download.content)) as tar:
        tar.extractall(tmp_path, filter="data")
    (model_dir,) = tmp_path.iterdir()
    assert (model_dir / "model.safetensors").exists() and not list(model_dir.glob("adapter_*"))

    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    assert tokenizer.chat_template == finished_job["chat_template"]
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    output = model.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert output.shape[1] > prompt["input_ids"].shape[1]

    with session_scope() as session:
        base_path = Path(find_base_model(session, tiny_model).path)
    base = load_file(base_path / "model.safetensors")
    merged = load_file(model_dir / "model.safetensors")
    changed = [
        k for k in base if k in merged and not torch.allclose(base[k].float(), merged[k].float())
    ]
    assert changed, "merging the trained LoRA must change the base weights"


def test_other_users_get_404_for_everything(
    client, alice: Account, bob: Account, finished_job: dict
) -> None:
    job_id = finished_job["id"]
    checkpoint_id = client.get(f"/api/jobs/{job_id}/checkpoints", headers=alice.headers).json()[0][
        "id"
    ]
    exports = client.post(
        f"/api/checkpoints/{checkpoint_id}/exports", headers=alice.headers, json={"kind": "merged"}
    )
    urls = [
        ("get", f"/api/datasets/{finished_job['dataset_id']}"),
        ("get", f"/api/datasets/{finished_job['dataset_id']}/rows"),
        ("get", f"/api/jobs/{job_id}"),
        ("get", f"/api/jobs/{job_id}/metrics"),
        ("get", f"/api/jobs/{job_id}/checkpoints"),
        ("get", f"/api/jobs/{job_id}/events"),
        ("post", f"/api/jobs/{job_id}/cancel"),
        ("post", f"/api/checkpoints/{checkpoint_id}/exports"),
        ("get", f"/api/exports/{exports.json()['id']}"),
        ("get", f"/api/exports/{exports.json()['id']}/download"),
    ]
    for method, url in urls:
        kwargs = {"json": {"kind": "merged"}} if method == "post" else {}
        response = getattr(client, method)(url, headers=bob.headers, **kwargs)
        assert response.status_code == 404, (url, response.status_code)
    assert job_id not in [j["id"] for j in client.get("/api/jobs", headers=bob.headers).json()]
    assert client.post(f"/api/jobs/{job_id}/cancel", headers=alice.headers).status_code == 409
