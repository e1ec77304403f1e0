"""The GPU half of issue 13's benches: the studio's fast defaults against the plain TRL script
on one NVIDIA GPU, each figure a ratio against its peer measured in the same run.

Through a real studio (web + Celery worker in a temporary data directory, ``live_studio.py``)
and ``bench/plain_sft.py`` (the ``SFTTrainer`` script a user would write), LoRA SFT of the
bundled model (or a random-weight model of its architecture, as ``gpu_check.py`` builds it),
bf16, the same seed, batch, ``max_length``, steps and LoRA settings on both sides:

1. overhead: studio (packing off, Liger off) vs plain on LLaMA-Factory's ``alpaca_en_demo.json``,
   sides alternating for ``--rounds`` rounds: tokens/s ratio and the largest per-step loss
   difference;
2. packing: the studio packed (Liger off) vs the plain script's padded batches (TRL's default)
   on a mixed-length chat set: tokens/s ratio and the plain side's padding share;
3. Liger: the studio packed with ``liger_kernels`` on vs off: tokens/s and peak memory ratios,
   and the per-step losses' largest difference (Liger must not change results beyond rounding);
4. the fast defaults together (packed, Liger on) vs plain: tokens/s and peak memory (issue 13's
   GPU target: >= 1.3x tokens/s at <= 0.7x the memory);
5. MFU of every run: model FLOPs per real token (4 x the base parameters for LoRA, whose frozen
   weights need no weight gradients, plus the attention's 12 x layers x hidden x length / 2
   causal) x tokens/s over a bf16 matmul ceiling measured on the same GPU in the same run.

Peak memory is each training process's own ``torch.cuda.max_memory_allocated``, recorded at
exit by ``bench/gpu_check_probe/sitecustomize.py``. Each figure is printed as soon as it is
measured, so a run cut short by its timeout still reports what it got.

    python bench/gpu_check_speed.py             # one GPU (bench/gpu_check.sh runs it)
    python bench/gpu_check_speed.py --cpu-smoke  # here: the tiny model, fp32, a few steps
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from bench_packing import chat_rows
from gpu_check import BUNDLED_DIRNAME, PROBE_PATH, SHAPE_DIR, build_from_shape, bundled_source
from live_studio import REPO, configure, machine_facts
from sft_pair import HYPER, plain_run, start_studio, studio_run, upload

ALPACA_COPIES = (
    REPO / ".cache" / "gpu_check" / "alpaca_en_demo.json",  # carried to the GPU machine
    REPO / ".cache" / "llamafactory-data" / "alpaca_en_demo.json",  # make test-data
)
CEILING_CODE = """
import json, sys, time, torch
cuda = torch.cuda.is_available()
n = 8192 if cuda else 1024
dtype = torch.bfloat16 if cuda else torch.float32
a = torch.randn(n, n, dtype=dtype, device="cuda" if cuda else "cpu")
b = torch.randn_like(a)
for _ in range(3):
    a @ b
best = float("inf")
for _ in range(5):
    if cuda: torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    if cuda: torch.cuda.synchronize()
    best = min(best, (time.perf_counter() - t) / 10)
print(json.dumps({"flops_per_s": 2 * n**3 / best, "n": n, "dtype": str(dtype)}))
"""


def matmul_ceiling() -> dict:
    """The best dense matmul rate of this device (bf16 8192^3 on a GPU), in a child process."""
    out = subprocess.run(
        [sys.executable, "-c", CEILING_CODE], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def model_shape(model_dir: Path) -> dict:
    from app.architecture import architecture, read_config

    arch = architecture(read_config(model_dir))
    return {"params": arch.total_params, "layers": arch.num_layers, "hidden": arch.hidden_size}


def flops_per_token(shape: dict, seq_len: int) -> float:
    """LoRA training: forward (2N) and the activations' gradients (2N), no weight gradients for
    the frozen base; attention scores and values, causal (half of 12 x L x h x T)."""
    return 4 * shape["params"] + 6 * shape["layers"] * shape["hidden"] * seq_len


def peak_memory(probe_dir: Path, before: set[str], marker: str) -> int | None:
    """max_memory_allocated of the newest process run after ``before`` whose argv has
    ``marker`` (``worker.training.run`` for the studio, ``plain_sft.py`` for the script)."""
    for path in sorted(probe_dir.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        if path.name in before:
            continue
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if any(marker in str(arg) for arg in record.get("argv", [])):
            return record.get("max_memory_allocated")
    return None


class Bench:
    def __init__(self, args: argparse.Namespace, api: httpx.Client, model: str, model_dir: Path):
        self.args, self.api, self.model, self.model_dir = args, api, model, model_dir
        self.probe_dir = Path(os.environ["FTSTUDIO_GPU_CHECK_PROBE_DIR"])
        self.hyper = {
            **HYPER,
            "max_steps": args.steps,
            "max_length": args.max_length,
            "per_device_train_batch_size": args.batch,
            "precision": "fp32" if args.cpu_smoke else "bf16",
            "stop_check_prompts": 0,  # the post-training check is not the loop's speed
        }

    def studio(self, dataset_id: int, **extra) -> dict:
        before = {p.name for p in self.probe_dir.glob("*.json")}
        run = studio_run(self.api, self.model, dataset_id, self.hyper, extra)
        run["peak"] = peak_memory(self.probe_dir, before, "worker.training.run")
        return run

    def plain(self, data_file: Path) -> dict:
        before = {p.name for p in self.probe_dir.glob("*.json")}
        hyper = {k: v for k, v in self.hyper.items() if k != "stop_check_prompts"}
        run = plain_run(self.model_dir, data_file, hyper)
        run["peak"] = peak_memory(self.probe_dir, before, "plain_sft.py")
        return run


def gib(value: int | None) -> str:
    return f"{value / 1024**3:.2f} GiB" if value else "?"


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.3f}x" if a and b else "?"


def mfu(run: dict, per_token: float, ceiling: float) -> str:
    return f"{100 * run['tokens_per_s'] * per_token / ceiling:.1f}%"


def max_loss_diff(a: list[dict], b: list[dict]) -> float:
    return max(abs(x["loss"] - y["loss"]) for x, y in zip(a, b, strict=False))


def measure(bench: Bench, alpaca: Path, chat: Path, ceiling: float, shape: dict) -> None:
    args = bench.args
    per_token = flops_per_token(shape, args.max_length)
    print(
        f"matmul ceiling {ceiling / 1e12:.1f} TFLOP/s; model {shape['params']:,} parameters; "
        f"{per_token / 1e6:.1f} MFLOP per trained token at length {args.max_length}",
        flush=True,
    )
    alpaca_id = upload(bench.api, alpaca.name, alpaca.read_bytes())
    chat_id = upload(bench.api, chat.name, chat.read_bytes())

    # 1. overhead: the same padded batches on both sides
    plain_like = {
        "packing": False,
        "liger_kernels": "off",
        "assistant_only_loss": True,
        "completion_only_loss": False,
    }
    ratios, diffs = [], []
    for i in range(args.rounds):
        sides = ("studio", "plain") if i % 2 == 0 else ("plain", "studio")
        got = {
            side: bench.studio(alpaca_id, **plain_like) if side == "studio" else bench.plain(alpaca)
            for side in sides
        }
        ratios.append(got["studio"]["tokens_per_s"] / got["plain"]["tokens_per_s"])
        diffs.append(max_loss_diff(got["studio"]["rows"], got["plain"]["rows"]))
        print(
            f"overhead round {i + 1}: studio {got['studio']['tokens_per_s']:,.0f} tok/s "
            f"(MFU {mfu(got['studio'], per_token, ceiling)}, peak {gib(got['studio']['peak'])}), "
            f"plain {got['plain']['tokens_per_s']:,.0f} tok/s (MFU "
            f"{mfu(got['plain'], per_token, ceiling)}, peak {gib(got['plain']['peak'])})",
            flush=True,
        )
    print(
        f"OVERHEAD studio/plain tokens/s min {min(ratios):.3f}x median "
        f"{statistics.median(ratios):.3f}x; per-step loss max |diff| {max(diffs):.3g}",
        flush=True,
    )

    # 2-4. packing, Liger, and both against TRL's default padded batches on mixed lengths
    packed = {"packing": True, "completion_only_loss": True}
    plain = bench.plain(chat)
    padding = 1 - plain["real_tokens"] / plain["computed_tokens"]
    print(
        f"plain padded (TRL default): {plain['tokens_per_s']:,.0f} tok/s, {padding:.1%} of "
        f"computed tokens are padding, MFU {mfu(plain, per_token, ceiling)}, peak "
        f"{gib(plain['peak'])}",
        flush=True,
    )
    no_liger = bench.studio(chat_id, **packed, liger_kernels="off")
    print(
        f"PACKING studio packed (Liger off) {no_liger['tokens_per_s']:,.0f} tok/s: "
        f"{ratio(no_liger['tokens_per_s'], plain['tokens_per_s'])} plain's tokens/s, peak "
        f"{gib(no_liger['peak'])} ({ratio(no_liger['peak'], plain['peak'])}), MFU "
        f"{mfu(no_liger, per_token, ceiling)}",
        flush=True,
    )
    if args.cpu_smoke:
        print("LIGER skipped: Liger's Triton kernels need a CUDA GPU", flush=True)
        return
    liger = bench.studio(chat_id, **packed, liger_kernels="on")
    print(
        f"LIGER on/off (packed) tokens/s {ratio(liger['tokens_per_s'], no_liger['tokens_per_s'])}"
        f", peak memory {ratio(liger['peak'], no_liger['peak'])}, per-step loss max |diff| "
        f"{max_loss_diff(liger['rows'], no_liger['rows']):.3g} (the same within bf16 rounding)",
        flush=True,
    )
    print(
        f"DEFAULTS studio (packed + Liger) vs plain TRL default: tokens/s "
        f"{ratio(liger['tokens_per_s'], plain['tokens_per_s'])} (target >= 1.3x), peak memory "
        f"{ratio(liger['peak'], plain['peak'])} (target <= 0.7x), MFU "
        f"{mfu(liger, per_token, ceiling)}",
        flush=True,
    )


def prepare_model(root: Path, smoke: bool) -> str:
    """Where the studio finds its models; returns the start_studio model choice."""
    if smoke:
        return "tiny"
    source, _ = bundled_source()
    if source is None:
        print(f"building a random-weight model from {SHAPE_DIR} ...", flush=True)
        build_from_shape(root / "models" / BUNDLED_DIRNAME)
        os.environ["FTSTUDIO_MODELS_DIR"] = str(root / "models")
    else:
        os.environ["FTSTUDIO_MODELS_DIR"] = str(source.parent)
    return "bundled"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="CPU: tiny model, fp32")
    parser.add_argument("--rounds", type=int, default=2, help="overhead (studio, plain) pairs")
    parser.add_argument("--steps", type=int, default=None, help="steps per job (GPU 30, CPU 4)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=None, help="GPU 512, CPU 128")
    args = parser.parse_args()
    args.steps = args.steps or (4 if args.cpu_smoke else 30)
    args.max_length = args.max_length or (128 if args.cpu_smoke else 512)
    alpaca = next((path for path in ALPACA_COPIES if path.exists()), None)
    if alpaca is None:
        raise SystemExit("no alpaca_en_demo.json: `make test-data` (or gpu_check_wheels.py)")
    print("\n".join(machine_facts()), flush=True)
    with tempfile.TemporaryDirectory(prefix="ftstudio-gpu-speed-") as tmp:
        root = Path(tmp)
        configure(root / "data")
        probe_dir = root / "probe"
        probe_dir.mkdir()
        os.environ["FTSTUDIO_GPU_CHECK_PROBE_DIR"] = str(probe_dir)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(PROBE_PATH), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        choice = prepare_model(root, args.cpu_smoke)
        chat = root / "mixed_chat.jsonl"
        rows = chat_rows(600, args.max_length)
        chat.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        ceiling = matmul_ceiling()
        started = time.monotonic()
        studio, model, model_dir = start_studio(root, choice)
        try:
            with httpx.Client(base_url=studio.url, headers=studio.headers, timeout=120) as api:
                bench = Bench(args, api, model, model_dir)
                measure(bench, alpaca, chat, ceiling["flops_per_s"], model_shape(model_dir))
        finally:
            studio.stop()
        print(f"speed check: {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
