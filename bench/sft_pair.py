"""A studio SFT job and its plain TRL peer, for bench_overhead.py and bench_packing.py.

``studio_run`` submits a job through ``POST /api/jobs`` and follows it through the API;
``plain_run`` runs ``plain_sft.py`` (a standalone TRL script) as a subprocess with the same
hyperparameters. Both return the per-step log rows (step, loss, num_tokens: the non-padding
tokens trained so far, and the time the row was written) and the whole job's wall clock.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from live_studio import REPO, Studio, job_metric_rows, register_base_model, utc_timestamp

ENDED = ("succeeded", "failed", "cancelled")
PLAIN_SCRIPT = Path(__file__).resolve().with_name("plain_sft.py")

# Every knob either side reads, given explicitly (the studio's defaults may change).
HYPER = {
    "max_steps": 20,
    "logging_steps": 1,
    "learning_rate": 1e-3,
    "lr_scheduler_type": "linear",
    "warmup_steps": 2,
    "weight_decay": 0.0,
    "max_grad_norm": 1.0,
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 1,
    "max_length": 128,
    "seed": 7,
    "lora_r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.05,
    "lora_target_modules": "all-linear",
}


def start_studio(root: Path, model: str) -> tuple[Studio, str, Path]:
    """The studio, and the model both sides train: the tiny random Llama, or the bundled
    SmolLM2-135M-Instruct registered under its own name as ``ftstudio setup`` does."""
    studio = Studio(root)
    studio.start()
    if model == "tiny":
        return studio, "tiny-llama", root / "models" / "tiny-llama"
    from app.settings import get_settings
    from worker.bundled_model import BUNDLED_MODEL_NAME

    path = get_settings().bundled_model_dir
    register_base_model(BUNDLED_MODEL_NAME, path)
    return studio, BUNDLED_MODEL_NAME, path


def upload(api: httpx.Client, name: str, content: bytes) -> int:
    response = api.post("/api/datasets", files={"file": (name, content)})
    if response.status_code != 201:
        raise SystemExit(f"upload refused: {response.text}")
    return response.json()["id"]


def throughput(rows: list[dict]) -> dict:
    """Tokens/s between the first and the last logged step (the first step's warm-up and
    everything outside the training loop left out)."""
    first, last = rows[0], rows[-1]
    seconds = last["time"] - first["time"]
    tokens = last["num_tokens"] - first["num_tokens"]
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def studio_run(
    api: httpx.Client, model: str, dataset_id: int, hyper: dict, extra: dict | None = None
) -> dict:
    """One SFT + LoRA job: submit, poll until it ends; its metric rows from the database."""
    body = {
        "method": "sft",
        "adapter": "lora",
        "base_model": model,
        "dataset_id": dataset_id,
        "hyperparameters": {
            "save_steps": 1_000_000,  # no intermediate checkpoint: the final one only
            "precision": "fp32",  # unless hyper says (the GPU check: bf16)
            **hyper,
            **(extra or {}),
        },
    }
    submitted = time.time()
    response = api.post("/api/jobs", json=body)
    if response.status_code != 201:
        raise SystemExit(f"job refused: {response.text}")
    job_id = response.json()["id"]
    while (job := api.get(f"/api/jobs/{job_id}").json())["status"] not in ENDED:
        time.sleep(0.1)
    seen_ended = time.time()
    if job["status"] != "succeeded":
        raise SystemExit(f"job {job_id} {job['status']}: {job['error']}")
    rows = job_metric_rows(job_id)
    created, finished = utc_timestamp(job["created_at"]), utc_timestamp(job["finished_at"])
    started = utc_timestamp(job["started_at"])
    return {
        "job_id": job_id,
        "rows": rows,
        "wall": seen_ended - submitted,
        "recorded_wall": finished - created,
        "queued": started - created,
        "to_first_step": rows[0]["time"] - created,
        "after_last_step": finished - rows[-1]["time"],
        **throughput(rows),
    }


def plain_run(model_dir: Path, data_file: Path, hyper: dict) -> dict:
    """plain_sft.py in its own process; wall clock from its start to its exit."""
    with tempfile.TemporaryDirectory(prefix="ftstudio-bench-plain-") as tmp:
        config, result = Path(tmp) / "config.json", Path(tmp) / "result.json"
        config.write_text(
            json.dumps(
                {
                    "model_dir": str(model_dir),
                    "data_file": str(data_file),
                    "output_dir": str(Path(tmp) / "out"),
                    "hyper": hyper,
                }
            )
        )
        started = time.time()
        done = subprocess.run(
            [sys.executable, str(PLAIN_SCRIPT), str(config), str(result)],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        ended = time.time()
        if done.returncode != 0:
            raise SystemExit(f"plain_sft.py failed:\n{done.stderr[-3000:]}")
        out = json.loads(result.read_text())
    rows = out["logs"]
    return {
        "rows": rows,
        "wall": ended - started,
        "to_first_step": rows[0]["time"] - started,
        "after_last_step": ended - rows[-1]["time"],
        "computed_tokens": out["tokens"]["computed"],
        "real_tokens": out["tokens"]["real"],
        **throughput(rows),
    }


def spread(values: list[float], fmt: str = "{:,.0f}") -> str:
    return f"{fmt.format(min(values))} / {fmt.format(statistics.median(values))}"


def ratio_spread(values: list[float]) -> str:
    return f"{min(values):.3f}x / {statistics.median(values):.3f}x"
