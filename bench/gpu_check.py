"""The GPU check (issue 12): through a real studio (web + Celery worker in a temporary data
directory), LoRA SFT, QLoRA SFT (bitsandbytes, CUDA only) and DPO of the bundled model on data
made here, each for a fixed number of steps; prints per run the tokens/s, the peak device memory
and the precision and attention used, then a summary table.

    python bench/gpu_check.py               # one NVIDIA GPU (bench/gpu_check.sh sets it up)
    python bench/gpu_check.py --cpu-smoke   # this CPU machine: the tiny model, a few steps

Where the numbers come from:
- tokens/s: the job's metrics (TRL's cumulative ``num_tokens``, logged every step), read with
  their timestamps from the studio's database: tokens between the first and the last logged
  step over the time between them (steady state, model loading excluded); also the whole run's
  tokens over its wall time from start to finish.
- peak memory: the training process's own ``torch.cuda.max_memory_allocated`` (and reserved),
  recorded at its exit by ``bench/gpu_check_probe/sitecustomize.py``; besides, the GPU's used
  memory sampled by nvidia-smi during the run, less what was used before it.
- precision: the AMP flags of the trainer config the run resolved (``bf16``/``fp16``), and the
  dtype the attention computed in (the probe); attention: the kernel transformers dispatched to
  (the probe). ``worker.devices`` says what the rules of issue 12 resolve to on this device.

The bundled model: ``.data/models/smollm2-135m-instruct`` when it is there (``make setup``);
otherwise, on a machine that cannot download it (the lent GPU machine), a model of the same
architecture with random weights is built from its config and tokenizer carried in
``.cache/gpu_check/smollm2-shape`` (``bench/gpu_check_wheels.py`` puts them there): speed,
memory, precision and attention do not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from gpu_check_data import jsonl, preference_rows, sft_rows
from gpu_check_report import RunResult, print_run, print_table
from live_studio import REPO, Studio, configure

PROBE_PATH = REPO / "bench" / "gpu_check_probe"
SHAPE_DIR = REPO / ".cache" / "gpu_check" / "smollm2-shape"
BUNDLED_DIRNAME = "smollm2-135m-instruct"
BUNDLED_NAME = "SmolLM2-135M-Instruct"
JOB_TIMEOUT = 240.0


def bundled_source() -> tuple[Path | None, str]:
    """(a complete bundled model directory, or None to build one from the shape), a label."""
    repo_bundled = REPO / ".data" / "models" / BUNDLED_DIRNAME
    if (repo_bundled / ".complete").exists() and any(repo_bundled.glob("*.safetensors")):
        return repo_bundled, "bundled weights"
    if (SHAPE_DIR / "config.json").exists():
        return None, "bundled architecture, random weights"
    raise SystemExit(
        f"no bundled model at {repo_bundled} and no carried shape at {SHAPE_DIR}: run "
        "`ftstudio setup` here, or `python bench/gpu_check_wheels.py` where one exists"
    )


def build_from_shape(out_dir: Path) -> None:
    """A random-weight model of the bundled model's architecture, saved as the bundled model is
    (bf16 safetensors, its tokenizer and chat template), in a child: torch stays out of here."""
    code = (
        "import sys, pathlib, torch\n"
        "from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer\n"
        "src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])\n"
        "config = AutoConfig.from_pretrained(src)\n"
        "torch.manual_seed(0)\n"
        "model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)\n"
        "model.to(torch.bfloat16).save_pretrained(out)\n"
        "AutoTokenizer.from_pretrained(src).save_pretrained(out)\n"
        "(out / '.complete').write_text('ok\\n')\n"
    )
    subprocess.run([sys.executable, "-c", code, str(SHAPE_DIR), str(out_dir)], check=True)


# --- measuring --------------------------------------------------------------------------


def smi_used_mib() -> float | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    try:
        return sum(float(line) for line in out.stdout.split())
    except ValueError:
        return None


class SmiSampler:
    """The peak of nvidia-smi's used memory while a run goes, less what was used before it."""

    def __init__(self, period: float = 0.2) -> None:
        self.period = period
        self.baseline = smi_used_mib()
        self.peak: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            used = smi_used_mib()
            if used is not None:
                self.peak = used if self.peak is None else max(self.peak, used)
            self._stop.wait(self.period)

    def __enter__(self) -> SmiSampler:
        if self.baseline is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    @property
    def delta(self) -> float | None:
        if self.peak is None or self.baseline is None:
            return None
        return max(0.0, self.peak - self.baseline)


def metric_times(job_id: int) -> list[tuple[int, float, datetime]]:
    """(step, num_tokens, created_at) of the job's logged training steps, from the database."""
    from sqlalchemy import select

    from app.db import session_scope
    from app.models import Metric

    with session_scope() as session:
        rows = session.execute(
            select(Metric.step, Metric.num_tokens, Metric.created_at)
            .where(Metric.job_id == job_id, Metric.num_tokens.is_not(None))
            .order_by(Metric.step)
        ).all()
    return [(int(step), float(tokens), at) for step, tokens, at in rows]


def read_probe(probe_dir: Path, before: set[str]) -> dict | None:
    """The training process's probe record (the one new file with attention in it)."""
    records = []
    for path in sorted(probe_dir.glob("*.json")):
        if path.name in before:
            continue
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if any("worker.training.run" in str(arg) for arg in record.get("argv", [])) or record.get(
            "attention"
        ):
            records.append(record)
    return records[-1] if records else None


# --- the runs ---------------------------------------------------------------------------


def run_job(
    studio: Studio,
    probe_dir: Path,
    result: RunResult,
    body: dict,
) -> None:
    before = {p.name for p in probe_dir.glob("*.json")}
    with SmiSampler() as sampler:
        created = httpx.post(f"{studio.url}/api/jobs", headers=studio.headers, json=body)
        if created.status_code != 201:
            result.status, result.error = "refused", created.text[:500]
            return
        job_id = created.json()["id"]
        result.job_id = job_id
        deadline = time.monotonic() + JOB_TIMEOUT
        while True:
            job = httpx.get(f"{studio.url}/api/jobs/{job_id}", headers=studio.headers).json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                break
            if time.monotonic() > deadline:
                httpx.post(f"{studio.url}/api/jobs/{job_id}/cancel", headers=studio.headers)
                result.status, result.error = "timed out", f"after {JOB_TIMEOUT:.0f} s"
                return
            time.sleep(0.5)
    result.status = job["status"]
    result.error = job.get("error")
    result.smi_peak_mib = sampler.delta
    result.steps = job["progress"]["step"] or 0
    if job["started_at"] and job["finished_at"]:
        result.wall_s = (
            datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])
        ).total_seconds()

    points = metric_times(job_id)
    if points:
        result.tokens = points[-1][1]
        if result.wall_s:
            result.run_tokens_per_s = result.tokens / result.wall_s
    if len(points) >= 2:
        (_, t0, at0), (_, t1, at1) = points[0], points[-1]
        seconds = (at1 - at0).total_seconds()
        if seconds > 0:
            result.tokens_per_s = (t1 - t0) / seconds

    config = job.get("trainer_config") or {}
    if config:
        amp = [name for name in ("bf16", "fp16") if config.get(name)]
        result.amp = "+".join(amp) if amp else "none (fp32 or the weights' dtype)"
        result.resolved = (
            f"{config.get('device', '?')}: precision {config.get('precision', '?')}, "
            f"attn_implementation {config.get('attn_implementation', '?')}"
        )
    probe = read_probe(probe_dir, before)
    if probe:
        attention = probe.get("attention") or {}
        result.attention = ", ".join(attention) or "?"
        result.compute_dtype = ", ".join(
            sorted({d.removeprefix("torch.") for ds in attention.values() for d in ds})
        )
        result.peak_allocated = probe.get("max_memory_allocated")
        result.peak_reserved = probe.get("max_memory_reserved")
    if result.status != "succeeded":
        log = httpx.get(
            f"{studio.url}/api/jobs/{job_id}/logs", headers=studio.headers, params={"tail": 40}
        )
        print(log.text, flush=True)


def expected_config(precision: str = "auto") -> dict:
    """What worker.devices' rules resolve to on this machine's first device (in a child: the
    bench process keeps torch out)."""
    code = (
        "import json, sys; from worker.devices import detect_devices, resolved_device_config\n"
        "d = detect_devices()[0]\n"
        "out = resolved_device_config(sys.argv[1], d)\n"
        "out['memory_gib'] = round(d.memory_bytes / 2**30, 1)\n"
        "print(json.dumps(out))\n"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code, precision],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
            check=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as exc:
        return {"error": repr(exc)}


def upload(studio: Studio, name: str, kind: str, rows: list[dict]) -> int:
    response = httpx.post(
        f"{studio.url}/api/datasets",
        headers=studio.headers,
        files={"file": (name, jsonl(rows))},
        data={"kind": kind},
        timeout=120,
    )
    if response.status_code != 201:
        raise SystemExit(f"the {kind} upload was refused: {response.text[:1000]}")
    return response.json()["id"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="CPU: tiny model, few steps")
    parser.add_argument("--steps", type=int, default=None, help="steps per run (GPU 40, CPU 3)")
    parser.add_argument("--rows", type=int, default=256, help="rows in each dataset")
    parser.add_argument("--batch", type=int, default=None, help="per-device batch (GPU 16)")
    parser.add_argument("--max-length", type=int, default=None, help="tokens (GPU 512, CPU 64)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    args = parser.parse_args()
    smoke = args.cpu_smoke
    steps = args.steps or (3 if smoke else 40)
    batch = args.batch or (2 if smoke else 16)
    max_length = args.max_length or (64 if smoke else 512)

    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="ftstudio-gpu-check-"))
    probe_dir = root / "probe"
    probe_dir.mkdir()
    configure(root / "data")
    models_dir = root / "models"
    if smoke:
        source, model_label = bundled_source()
        if source is None:
            raise SystemExit("the CPU smoke run needs the bundled model (`ftstudio setup`)")
        os.environ["FTSTUDIO_MODELS_DIR"] = str(source.parent)
        model_label = "tiny random Llama (bundled tokenizer)"
    else:
        source, model_label = bundled_source()
        if source is None:
            print(f"building a random-weight {BUNDLED_NAME} from {SHAPE_DIR} ...", flush=True)
            build_from_shape(models_dir / BUNDLED_DIRNAME)
            os.environ["FTSTUDIO_MODELS_DIR"] = str(models_dir)
        else:
            os.environ["FTSTUDIO_MODELS_DIR"] = str(source.parent)
    # The probe rides along in the worker and its training processes.
    os.environ["FTSTUDIO_GPU_CHECK_PROBE_DIR"] = str(probe_dir)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(PROBE_PATH), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    )

    studio = Studio(root)
    results: list[RunResult] = []
    try:
        studio.start()
        from app.base_models import register_model
        from app.db import session_scope
        from app.settings import get_settings

        if smoke:
            base_model = "tiny-llama"
        else:
            with session_scope() as session:
                register_model(session, BUNDLED_NAME, get_settings().bundled_model_dir, "bundled")
            base_model = BUNDLED_NAME
        expected = expected_config("auto")
        print(f"studio up at {studio.url} ({time.monotonic() - started:.0f} s); {expected}")

        sft_id = upload(studio, "gpu-check-sft.jsonl", "sft", sft_rows(args.rows))
        pref_id = upload(studio, "gpu-check-pairs.jsonl", "preference", preference_rows(args.rows))
        common = {
            "max_steps": steps,
            "logging_steps": 1,
            "save_steps": 100_000,
            "per_device_train_batch_size": batch,
            "max_length": max_length,
            "learning_rate": 2e-4,
            "warmup_steps": 0,
            "lora_r": 16,
            "lora_alpha": 32,
            "precision": "auto",
            "seed": 7,
        }
        plans = [
            ("LoRA SFT", {"method": "sft", "adapter": "lora", "dataset_id": sft_id}, {}),
            ("QLoRA SFT", {"method": "sft", "adapter": "qlora", "dataset_id": sft_id}, {}),
            ("DPO (LoRA)", {"method": "dpo", "adapter": "lora", "dataset_id": pref_id}, {}),
        ]
        for name, body, extra in plans:
            result = RunResult(name, expected=expected)
            results.append(result)
            if smoke and body["adapter"] == "qlora":
                result.status = "skipped (bitsandbytes 4-bit needs CUDA)"
                print(f"\n== {name}: {result.status}", flush=True)
                continue
            run_job(
                studio,
                probe_dir,
                result,
                {**body, "base_model": base_model, "hyperparameters": {**common, **extra}},
            )
            print_run(result)
    finally:
        studio.stop()
    expected = results[0].expected if results else {}
    print_table(results, expected, model_label)
    print(f"total {time.monotonic() - started:.0f} s; data in {root}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=1, default=str))
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    ok = all(r.status == "succeeded" or r.status.startswith("skipped") for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
