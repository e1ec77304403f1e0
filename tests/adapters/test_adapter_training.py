"""Each adapter trains the tiny model through the real worker, and only its parameters change.

One job per adapter (3 steps, a few rows), all queued at once. For peft adapters the run's
trainable parameters are all adapter parameters (none of the base model's) and their count is
the pre-launch estimate's; every saved adapter tensor moves between the first and last step.
For freeze, the saved model differs from the base in exactly the trained block; for full, in
every tensor.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from app.db import session_scope
from app.jobs import find_base_model
from app.settings import get_settings
from tests.conftest import Account, wait_for_job
from tests.support.jobs import wait_for_export

pytestmark = pytest.mark.worker

ROWS = [
    {"instruction": f"Repeat the number {i}.", "output": f"{i} {i} {i}, the number is {i}."}
    for i in range(12)
]
COMMON = {
    "max_steps": 3,
    "logging_steps": 1,
    "save_steps": 1,
    "learning_rate": 1e-2,
    "per_device_train_batch_size": 4,
    "max_length": 64,
    "warmup_steps": 0,
    "lr_scheduler_type": "constant",
    "seed": 3,
}
ADAPTERS = {
    "qlora": {"lora_r": 4},  # 4-bit NF4, double quantization, bf16 compute: the defaults
    "dora": {"lora_r": 4},
    "ia3": {},
    "prefix": {"num_virtual_tokens": 4},
    "prompt": {"num_virtual_tokens": 4},
    "ptuning": {"num_virtual_tokens": 4, "encoder_hidden_size": 32},
    "freeze": {"freeze_trainable_layers": 1},
    "full": {"learning_rate": 1e-3},
}
# Substrings that name each peft adapter's own parameters.
ADAPTER_MARKERS = {
    "qlora": ("lora_A", "lora_B"),
    "dora": ("lora_A", "lora_B", "lora_magnitude_vector"),
    "ia3": ("ia3_l",),
    "prefix": ("prompt_encoder",),
    "prompt": ("prompt_encoder",),
    "ptuning": ("prompt_encoder",),
}


@pytest.fixture(scope="module")
def bodies(client, alice: Account, tiny_model: str) -> dict[str, dict]:
    content = "\n".join(json.dumps(r) for r in ROWS).encode()
    upload = client.post(
        "/api/datasets", headers=alice.headers, files={"file": ("adapters.jsonl", content)}
    )
    assert upload.status_code == 201, upload.text
    return {
        adapter: {
            "base_model": tiny_model,
            "dataset_id": upload.json()["id"],
            "adapter": adapter,
            "hyperparameters": {**COMMON, **hyper},
        }
        for adapter, hyper in ADAPTERS.items()
    }


@pytest.fixture(scope="module")
def queued(client, alice: Account, worker: Path, bodies: dict[str, dict]) -> dict[str, int]:
    ids = {}
    for adapter, body in bodies.items():
        created = client.post("/api/jobs", headers=alice.headers, json=body)
        assert created.status_code == 201, created.text
        ids[adapter] = created.json()["id"]
    return ids


@pytest.fixture(scope="module")
def finished(client, alice: Account, queued: dict[str, int]) -> dict[str, dict]:
    """Every job, once it has ended (they run one after the other on the one worker)."""
    return {adapter: wait_for_job(client, alice, job_id) for adapter, job_id in queued.items()}


def _output(job_id: int) -> Path:
    return get_settings().jobs_dir / str(job_id) / "output"


def _base_weights(tiny_model: str) -> dict[str, torch.Tensor]:
    with session_scope() as session:
        return load_file(Path(find_base_model(session, tiny_model).path) / "model.safetensors")


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_adapter_trains_and_the_estimate_counted_its_parameters(
    client, alice: Account, finished: dict[str, dict], bodies: dict[str, dict], adapter: str
) -> None:
    job = finished[adapter]
    assert job["status"] == "succeeded", job["error"]
    metrics = client.get(f"/api/jobs/{job['id']}/metrics", headers=alice.headers).json()
    losses = [m["loss"] for m in metrics if m.get("loss") is not None]
    assert len(losses) == 3 and all(loss == loss for loss in losses)  # finite (NaN is stored null)

    recorded = json.loads((_output(job["id"]) / "parameters.json").read_text())
    estimate = client.post("/api/jobs/estimate", headers=alice.headers, json=bodies[adapter])
    assert estimate.status_code == 200, estimate.text
    assert recorded["trainable"] == estimate.json()["trainable_parameters"]
    assert recorded["total"] == estimate.json()["total_parameters"]
    if adapter in ADAPTER_MARKERS:
        base = [
            name
            for name in recorded["trainable_names"]
            if not any(marker in name for marker in ADAPTER_MARKERS[adapter])
        ]
        assert base == [], f"{adapter} trains base weights: {base}"


@pytest.mark.parametrize("adapter", sorted(ADAPTER_MARKERS))
def test_peft_adapter_weights_move_and_nothing_else_is_saved(
    finished: dict[str, dict], tiny_model: str, adapter: str
) -> None:
    output = _output(finished[adapter]["id"])
    first = load_file(output / "checkpoint-1" / "adapter_model.safetensors")
    final = load_file(output / "final" / "adapter_model.safetensors")
    assert set(first) == set(final) and final
    assert not set(final) & set(_base_weights(tiny_model)), "base weights saved as adapter"
    still = [k for k in final if torch.equal(first[k], final[k])]
    assert still == [], f"{adapter} tensors did not move after step 1: {still}"
    if adapter in ("qlora", "dora"):  # LoRA's B starts at zero
        assert all(final[k].abs().sum() > 0 for k in final if "lora_B" in k)
    if adapter == "ia3":  # IA3's vectors start at one
        assert all(not torch.allclose(final[k], torch.ones_like(final[k])) for k in final)
    config = json.loads((output / "final" / "adapter_config.json").read_text())
    assert (
        config["peft_type"]
        == {
            "qlora": "LORA",
            "dora": "LORA",
            "ia3": "IA3",
            "prefix": "PREFIX_TUNING",
            "prompt": "PROMPT_TUNING",
            "ptuning": "P_TUNING",
        }[adapter]
    )
    assert config.get("use_dora", False) == (adapter == "dora")


def test_qlora_ran_on_a_4bit_nf4_base(finished: dict[str, dict]) -> None:
    recorded = json.loads((_output(finished["qlora"]["id"]) / "parameters.json").read_text())
    # Every linear layer of the 2 blocks (7 each) was a bitsandbytes 4-bit layer.
    assert recorded["quantized_modules"] == {"Linear4bit": 14}
    quantization = recorded["quantization"]
    assert quantization["load_in_4bit"] and quantization["bnb_4bit_quant_type"] == "nf4"
    assert quantization["bnb_4bit_use_double_quant"] is True
    assert quantization["bnb_4bit_compute_dtype"] == "bfloat16"


def test_freeze_changes_only_the_last_block(finished: dict[str, dict], tiny_model: str) -> None:
    output = _output(finished["freeze"]["id"])
    base = _base_weights(tiny_model)
    final = load_file(output / "final" / "model.safetensors")
    assert set(final) == set(base)
    changed = {k for k in base if not torch.equal(base[k], final[k])}
    last_block = {k for k in base if k.startswith("model.layers.1.")}
    assert changed == last_block
    recorded = json.loads((output / "parameters.json").read_text())
    assert set(recorded["trainable_names"]) == last_block


def test_full_changes_every_tensor(finished: dict[str, dict], tiny_model: str) -> None:
    base = _base_weights(tiny_model)
    final = load_file(_output(finished["full"]["id"]) / "final" / "model.safetensors")
    assert set(final) == set(base)
    assert [k for k in base if torch.equal(base[k], final[k])] == []


def _final_checkpoint(client, alice: Account, job_id: int) -> dict:
    checkpoints = client.get(f"/api/jobs/{job_id}/checkpoints", headers=alice.headers).json()
    return next(c for c in checkpoints if c["is_final"])


def test_freeze_export_is_the_trained_model(
    client, alice: Account, finished: dict[str, dict], tmp_path: Path
) -> None:
    job_id = finished["freeze"]["id"]
    final = _final_checkpoint(client, alice, job_id)
    created = client.post(
        f"/api/checkpoints/{final['id']}/exports", headers=alice.headers, json={"kind": "merged"}
    )
    assert created.status_code == 201, created.text
    export = wait_for_export(client, alice, created.json()["id"], timeout=180)
    assert export["status"] == "succeeded", export["error"]
    download = client.get(f"/api/exports/{export['id']}/download", headers=alice.headers)
    with tarfile.open(fileobj=io.BytesIO(download.content)) as tar:
        tar.extractall(tmp_path, filter="data")
    (model_dir,) = tmp_path.iterdir()
    exported = load_file(model_dir / "model.safetensors")
    trained = load_file(_output(job_id) / "final" / "model.safetensors")
    assert set(exported) == set(trained)
    assert all(torch.equal(exported[k], trained[k]) for k in trained)
    tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    assert tokenizer_config or (model_dir / "chat_template.jinja").exists()
    assert not list(model_dir.glob("optimizer*")) and not list(model_dir.glob("adapter_*"))


@pytest.mark.parametrize("adapter", ["prompt", "prefix", "ptuning"])
def test_prompt_learning_adapters_cannot_be_merged(
    client, alice: Account, finished: dict[str, dict], adapter: str
) -> None:
    final = _final_checkpoint(client, alice, finished[adapter]["id"])
    response = client.post(
        f"/api/checkpoints/{final['id']}/exports", headers=alice.headers, json={"kind": "merged"}
    )
    assert response.status_code == 422
    assert "cannot be merged" in response.json()["detail"]
