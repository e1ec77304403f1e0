"""Exports through the API and a real worker, from a real (tiny) training run: every kind's
archive downloads resumably (Range) with the sha256 the API and manifest state; a merged export
loads offline and predicts like the PEFT model with the trained adapter applied; GGUF exports
load back with transformers and predict like the merged model within their rounding; the
adapter export acts like the trained adapter; the job page lists them all."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from bs4 import BeautifulSoup
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from app.db import session_scope
from app.export_manifest import MANIFEST_NAME
from app.models import Checkpoint, Job
from app.settings import get_settings
from tests.conftest import Account, wait_for_job
from tests.exports.test_gguf import TOLERANCE
from tests.support.exports import extract, next_token_logits
from tests.support.html import post_login
from tests.support.jobs import wait_for_export

pytestmark = pytest.mark.worker

ROWS = [
    {"instruction": f"Name something {colour}.", "output": f"A {colour} flower."}
    for colour in ("green", "blue", "yellow", "purple", "orange", "white", "black", "pink")
]
HYPERPARAMETERS = {
    "max_steps": 4,
    "learning_rate": 1e-2,
    "lr_scheduler_type": "constant",
    "warmup_steps": 0,
    "per_device_train_batch_size": 4,
    "max_length": 64,
    "lora_r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.0,
    "logging_steps": 1,
    "save_steps": 1000,
}
REQUESTS = {
    "adapter": {"kind": "adapter"},
    "merged": {"kind": "merged"},
    "gguf-f16": {"kind": "gguf", "quantization": "f16"},
    "gguf-q8_0": {"kind": "gguf", "quantization": "q8_0"},
}
TIMEOUT = 600


@pytest.fixture(scope="module")
def trained(client, alice: Account, worker: Path, tiny_model: str) -> dict:
    data = "\n".join(json.dumps(row) for row in ROWS).encode()
    upload = client.post("/api/datasets", headers=alice.headers, files={"file": ("c.jsonl", data)})
    assert upload.status_code == 201, upload.text
    body = {
        "base_model": tiny_model,
        "dataset_id": upload.json()["id"],
        "hyperparameters": HYPERPARAMETERS,
    }
    created = client.post("/api/jobs", headers=alice.headers, json=body)
    assert created.status_code == 201, created.text
    job = wait_for_job(client, alice, created.json()["id"], timeout=TIMEOUT)
    assert job["status"] == "succeeded", job["error"]
    checkpoints = client.get(f"/api/jobs/{job['id']}/checkpoints", headers=alice.headers).json()
    return {"job": job, "checkpoint": checkpoints[-1]}


@pytest.fixture(scope="module")
def exports(client, alice: Account, trained: dict) -> dict[str, dict]:
    url = f"/api/checkpoints/{trained['checkpoint']['id']}/exports"
    ids = {}
    for name, body in REQUESTS.items():
        created = client.post(url, headers=alice.headers, json=body)
        assert created.status_code == 201, created.text
        ids[name] = created.json()["id"]
    done = {
        name: wait_for_export(client, alice, export_id, timeout=TIMEOUT)
        for name, export_id in ids.items()
    }
    for name, export in done.items():
        assert export["status"] == "succeeded", f"{name}: {export['error']}"
    return done


def _resumed_download(client, account: Account, export: dict, cut: int) -> bytes:
    """Read the first ``cut`` bytes and drop the connection, then fetch the rest with Range."""
    url = export["download_url"]
    with client.stream("GET", url, headers=account.headers) as response:
        assert response.status_code == 200
        etag = response.headers["etag"]
        part = b""
        for chunk in response.iter_bytes():
            part += chunk
            if len(part) >= cut:
                break
    part = part[:cut]
    headers = {**account.headers, "Range": f"bytes={len(part)}-", "If-Range": etag}
    rest = client.get(url, headers=headers)
    assert rest.status_code == 206, rest.status_code
    size = export["size_bytes"]
    assert rest.headers["content-range"] == f"bytes {cut}-{size - 1}/{size}"
    return part + rest.content


@pytest.fixture(scope="module")
def unpacked(client, alice: Account, exports: dict[str, dict], tmp_path_factory) -> dict[str, Path]:
    roots = {}
    for name, export in exports.items():
        archive = _resumed_download(client, alice, export, cut=export["size_bytes"] // 3)
        assert len(archive) == export["size_bytes"]
        assert hashlib.sha256(archive).hexdigest() == export["sha256"]
        roots[name] = extract(archive, tmp_path_factory.mktemp(name))
    return roots


@pytest.mark.parametrize("name", list(REQUESTS))
def test_resumed_download_matches_the_sha256_and_the_manifest(
    exports: dict[str, dict], unpacked: dict[str, Path], trained: dict, name: str
) -> None:
    root, export = unpacked[name], exports[name]
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    assert manifest == export["manifest"]
    on_disk = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.name != MANIFEST_NAME
    )
    assert [f["path"] for f in manifest["files"]] == on_disk
    for entry in manifest["files"]:
        data = (root / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["path"]
        assert len(data) == entry["size"]

    job = trained["job"]
    assert manifest["kind"] == REQUESTS[name]["kind"]
    assert manifest["quantization"] == REQUESTS[name].get("quantization")
    assert manifest["base_model"] == {"name": "tiny-llama", "model_type": "llama"}
    assert manifest["checkpoint"]["id"] == trained["checkpoint"]["id"]
    assert manifest["lineage"] == [trained["checkpoint"]["id"]]
    assert manifest["spec"] == job["hyperparameters"]
    template_sha = hashlib.sha256(job["chat_template"].encode()).hexdigest()
    assert manifest["chat_template"]["sha256"] == template_sha
    assert manifest["metrics"]["step"] == HYPERPARAMETERS["max_steps"]
    assert manifest["metrics"]["values"]["loss"] > 0
    card = (root / "README.md").read_text()
    assert "tiny-llama" in card and root.name in card


def _paths(checkpoint_id: int) -> tuple[Path, Path]:
    """(base model dir, checkpoint dir) of a checkpoint, from the database."""
    with session_scope() as session:
        checkpoint = session.get(Checkpoint, checkpoint_id)
        job = session.get(Job, checkpoint.job_id)
        return Path(job.base_model.path), get_settings().jobs_dir / checkpoint.path


@pytest.fixture(scope="module")
def peft_logits(trained: dict) -> torch.Tensor:
    base_dir, checkpoint_dir = _paths(trained["checkpoint"]["id"])
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    untrained = next_token_logits(base, base_dir)
    logits = next_token_logits(PeftModel.from_pretrained(base, checkpoint_dir).eval(), base_dir)
    assert (logits - untrained).abs().max() > 1e-3, "training must have moved the adapter"
    return logits


def test_merged_export_loads_offline_and_matches_the_peft_model(
    unpacked: dict[str, Path], peft_logits: torch.Tensor, trained: dict
) -> None:
    root = unpacked["merged"]
    assert (root / "model.safetensors").is_file() and not list(root.glob("adapter_*"))
    model = AutoModelForCausalLM.from_pretrained(root, local_files_only=True)
    actual = next_token_logits(model, root)
    assert torch.allclose(actual, peft_logits, atol=1e-4), (actual - peft_logits).abs().max()
    tokenizer = AutoTokenizer.from_pretrained(root, local_files_only=True)
    assert tokenizer.chat_template == trained["job"]["chat_template"]


def test_adapter_export_acts_like_the_trained_adapter(
    unpacked: dict[str, Path], peft_logits: torch.Tensor, trained: dict
) -> None:
    root = unpacked["adapter"]
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in root.iterdir()}
    assert not list(root.glob("optimizer*")) and not (root / "model.safetensors").exists()
    base_dir, _ = _paths(trained["checkpoint"]["id"])
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), root)
    assert torch.equal(next_token_logits(model.eval(), root), peft_logits)
    assert AutoTokenizer.from_pretrained(root).chat_template == trained["job"]["chat_template"]


@pytest.mark.parametrize("quantization", ["f16", "q8_0"])
def test_gguf_export_matches_the_merged_model(unpacked: dict[str, Path], quantization: str) -> None:
    root = unpacked[f"gguf-{quantization}"]
    merged = AutoModelForCausalLM.from_pretrained(unpacked["merged"], local_files_only=True)
    expected = next_token_logits(merged, unpacked["merged"])
    loaded = AutoModelForCausalLM.from_pretrained(root, gguf_file=f"model-{quantization}.gguf")
    actual = next_token_logits(loaded, unpacked["merged"])
    error = (actual - expected).abs().max() / expected.abs().max()
    assert error < TOLERANCE[quantization], f"{quantization}: relative error {error:.2e}"
    assert actual.argmax() == expected.argmax()


def test_job_page_lists_every_export_with_size_sha256_and_link(
    client, alice: Account, exports: dict[str, dict], trained: dict
) -> None:
    client.cookies.clear()
    post_login(client, {"token": alice.token})
    page = BeautifulSoup(client.get(f"/jobs/{trained['job']['id']}").text, "html.parser")
    client.cookies.clear()
    for export in exports.values():
        row = page.select_one(f".export[data-export-id='{export['id']}']")
        assert row.select_one("a.download")["href"] == export["download_url"]
        assert row.select_one(".export-sha256").get_text() == export["sha256"]
        assert row.select_one(".export-size").get_text().endswith(("kB", "MB"))
