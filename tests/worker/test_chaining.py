"""Chaining (SFT -> DPO from the SFT run's final checkpoint) and resume-after-cancel, through
the API with a real worker training the tiny model."""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from app.db import session_scope
from app.jobs import find_base_model
from app.models import Checkpoint
from app.settings import get_settings
from tests.conftest import Account, wait_for_job
from tests.support.chaining import (
    COMMON,
    LONG_ROWS,
    RESUMABLE,
    RESUMABLE_MAX_STEPS,
    TIMEOUT,
    cancelled_after_a_checkpoint,
    sft_run,
)
from tests.support.datasets import PAIRS, SFT_ROWS, upload_rows
from tests.support.jobs import checkpoints, loss_rows, submit_job

pytestmark = pytest.mark.worker

DPO = {
    **COMMON,
    "learning_rate": 5e-3,
    "lr_scheduler_type": "constant",
    "max_steps": 4,
    "per_device_train_batch_size": 8,  # every pair in the first batch
    "beta": 0.1,
    "save_steps": 1000,
}


@pytest.fixture(scope="module")
def data(client, alice: Account) -> dict[str, int]:
    return {
        "sft": upload_rows(client, alice, "sft", SFT_ROWS),
        "preference": upload_rows(client, alice, "preference", PAIRS),
        "long": upload_rows(client, alice, "sft", LONG_ROWS, "long.jsonl"),
    }


def _final(client, account: Account, job_id: int) -> dict:
    return next(c for c in checkpoints(client, account, job_id) if c["is_final"])


def _checkpoint_dir(checkpoint_id: int) -> Path:
    with session_scope() as session:
        return get_settings().jobs_dir / session.get(Checkpoint, checkpoint_id).path


def _export(client, account: Account, checkpoint_id: int, out: Path) -> Path:
    created = client.post(
        f"/api/checkpoints/{checkpoint_id}/exports",
        headers=account.headers,
        json={"kind": "merged"},
    )
    assert created.status_code == 201, created.text
    url = f"/api/exports/{created.json()['id']}"
    deadline = time.monotonic() + 300
    while (export := client.get(url, headers=account.headers).json())["status"] not in (
        "succeeded",
        "failed",
    ):
        assert time.monotonic() < deadline, "export timed out"
        time.sleep(0.5)
    assert export["status"] == "succeeded", export["error"]
    download = client.get(f"{url}/download", headers=account.headers)
    with tarfile.open(fileobj=io.BytesIO(download.content)) as tar:
        tar.extractall(out, filter="data")
    (model_dir,) = out.iterdir()
    return model_dir


def _merged(base: Path, *adapters: Path) -> dict[str, torch.Tensor]:
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    with torch.no_grad():
        for adapter in adapters:
            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_dpo_starts_from_the_sft_runs_final_checkpoint(
    client, alice: Account, bob: Account, worker: Path, tiny_model: str, data: dict, tmp_path
) -> None:
    sft = sft_run(client, alice, tiny_model, data["sft"])
    parent = _final(client, alice, sft["id"])
    body = {"dataset_id": data["preference"], "method": "dpo", "hyperparameters": DPO}
    refused = client.post(
        "/api/jobs", headers=bob.headers, json={**body, "parent_checkpoint_id": parent["id"]}
    )
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == [
        "parent_checkpoint_id"
    ]
    # No base_model: a run from a checkpoint takes its parent's.
    chained = submit_job(client, alice, parent_checkpoint_id=parent["id"], **body)
    assert chained["parent_checkpoint_id"] == parent["id"]
    assert chained["base_model"] == sft["base_model"]
    from_base = submit_job(client, alice, base_model=tiny_model, **body)
    chained = wait_for_job(client, alice, chained["id"], timeout=TIMEOUT)
    from_base = wait_for_job(client, alice, from_base["id"], timeout=TIMEOUT)
    assert chained["status"] == from_base["status"] == "succeeded", chained["error"]

    first, first_base = (
        loss_rows(client, alice, chained["id"])[0],
        loss_rows(client, alice, from_base["id"])[0],
    )
    assert first["step"] == first_base["step"] == 1
    # Step 1 scores every pair before any update. The policy starts as the SFT model, which
    # learned the chosen answers: they are far likelier than the bare base model finds them...
    print(
        f"logps/chosen at step 1: {first['logps/chosen']:.2f} vs {first_base['logps/chosen']:.2f}"
    )
    assert first["logps/chosen"] > first_base["logps/chosen"] + 5
    # ...and the reference is the SFT model too (the parent's adapter is merged, the new adapter
    # starts at zero): no implicit reward yet, as DPO from an SFT model requires.
    assert abs(first["rewards/chosen"]) < 1e-4 and abs(first["rewards/rejected"]) < 1e-4
    margins = [m["rewards/margins"] for m in loss_rows(client, alice, chained["id"])]
    assert margins[-1] > margins[0], margins

    # The merged export of the DPO run holds base + SFT adapter + DPO adapter.
    model_dir = _export(client, alice, _final(client, alice, chained["id"])["id"], tmp_path)
    exported = load_file(model_dir / "model.safetensors")
    with session_scope() as session:
        base_path = Path(find_base_model(session, tiny_model).path)
    sft_dir = _checkpoint_dir(parent["id"])
    dpo_dir = _checkpoint_dir(_final(client, alice, chained["id"])["id"])
    expected = _merged(base_path, sft_dir, dpo_dir)
    without_sft = _merged(base_path, dpo_dir)
    keys = [k for k in exported if k in expected]
    assert len(keys) > 10
    assert all(torch.allclose(exported[k].float(), expected[k], atol=1e-5) for k in keys)
    assert any(not torch.allclose(exported[k].float(), without_sft[k], atol=1e-4) for k in keys)


def test_a_cancelled_run_resumes_from_its_last_checkpoint_and_steps_continue(
    client, alice: Account, worker: Path, tiny_model: str, data: dict
) -> None:
    stopped = cancelled_after_a_checkpoint(client, alice, tiny_model, data["long"])
    job_id = stopped["id"]
    saved = [c for c in checkpoints(client, alice, job_id) if not c["is_final"]]
    last = saved[-1]
    before = loss_rows(client, alice, job_id)
    print(f"cancelled at step {stopped['progress']['step']}, last checkpoint {last['step']}")

    resumed = client.post(f"/api/jobs/{job_id}/resume", headers=alice.headers)
    assert resumed.status_code == 200, resumed.text
    resumed = resumed.json()
    assert (resumed["status"], resumed["attempt"]) == ("queued", stopped["attempt"] + 1)
    assert resumed["resume_checkpoint_id"] == last["id"]
    assert resumed["progress"]["step"] == last["step"] and resumed["error"] is None
    again = client.post(f"/api/jobs/{job_id}/resume", headers=alice.headers)
    assert again.status_code == 409, again.text

    finished = wait_for_job(client, alice, job_id, timeout=TIMEOUT)
    assert finished["status"] == "succeeded", finished["error"]
    assert finished["progress"]["step"] == RESUMABLE_MAX_STEPS
    metrics = loss_rows(client, alice, job_id)
    steps = [m["step"] for m in metrics]
    # Every step logged exactly once: the resumed run went on from the checkpoint's step (a
    # fresh start would log steps 1, 2, ... again), and what the cancelled run had logged after
    # the checkpoint was dropped when it resumed.
    assert steps == list(range(1, RESUMABLE_MAX_STEPS + 1))
    kept = [m for m in before if m["step"] <= last["step"]]
    assert [m["id"] for m in metrics[: last["step"]]] == [m["id"] for m in kept]
    # The scheduler resumed too: every rate lies on the one linear decay, none jumps back up.
    rates = [m["learning_rate"] for m in metrics]
    slope = rates[1] - rates[0]
    assert slope < 0 and rates[0] <= RESUMABLE["learning_rate"]
    assert rates == pytest.approx([rates[0] + slope * i for i in range(len(rates))], abs=1e-9)
    final = _final(client, alice, job_id)
    assert final["step"] == RESUMABLE_MAX_STEPS

    # Only a failed or cancelled job resumes.
    refused = client.post(f"/api/jobs/{job_id}/resume", headers=alice.headers)
    assert refused.status_code == 409 and "only a failed or cancelled" in refused.json()["detail"]
