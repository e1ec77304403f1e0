"""The studio's SFT + LoRA job vs the plain TRL script a user would write, same model and data.

Starts the real studio in a temporary data directory (embedded mode: SQLite, the filesystem
broker; ``ftstudio web`` and a Celery worker that spawns one training process per job, see
live_studio.py), uploads LLaMA-Factory's ``alpaca_en_demo.json`` (the tests' copy under
``.cache/llamafactory-data``, fetched by ``make test-data``) through ``POST /api/datasets`` and,
each round, trains:

- **studio**: an SFT + LoRA job through ``POST /api/jobs``, followed through ``GET
  /api/jobs/{id}`` until it has succeeded; its per-step metric rows (``num_tokens``, the
  non-padding tokens trained so far, and ``created_at``) come from the studio's database;
- **plain**: ``bench/plain_sft.py`` as a subprocess, an ``SFTTrainer`` script loading the same
  model directory with ``AutoModelForCausalLM`` / ``AutoTokenizer``, the same records as
  conversational prompt/completion pairs (rendered by the model's chat template), a peft
  ``LoraConfig`` and an ``SFTConfig`` with the same values; it saves its adapter at the end.

Both train ``--steps`` steps with packing off (padded batches), the same learning rate and
schedule, batch, ``max_length``, seed and LoRA r/alpha/dropout/targets, logging every step, in
fp32. The sides alternate (studio first in odd rounds, plain first in even ones), ``--rounds``
times. Printed, studio/plain, min and median over rounds:

- tokens/s: non-padding tokens trained per second between the first and the last step's log;
- per-step losses: the largest absolute difference at any step, and whether all are identical;
- whole-job wall clock: studio from ``POST /api/jobs`` until the API says succeeded (and the
  job's own ``created_at`` .. ``finished_at``), plain from the script's start to its exit; also
  how much of each is spent before the first step and after the last one.

The tiny random Llama (hidden 64, 2 layers, the bundled tokenizer) is the default: its steps
take milliseconds, so the fixed costs dominate. ``--model bundled`` trains the bundled
SmolLM2-135M-Instruct (``ftstudio setup``) instead.

    .venv/bin/python bench/bench_overhead.py [--rounds 3] [--steps 40] [--model tiny|bundled]
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
from pathlib import Path

import httpx
from live_studio import REPO, configure, machine_facts
from sft_pair import HYPER, plain_run, ratio_spread, spread, start_studio, studio_run, upload

ALPACA = REPO / ".cache" / "llamafactory-data" / "alpaca_en_demo.json"


def loss_diff(a: list[dict], b: list[dict]) -> tuple[float, bool, int | None]:
    """Largest |difference| of the per-step losses, whether all are equal, the first step
    that differs."""
    la, lb = [r["loss"] for r in a], [r["loss"] for r in b]
    if len(la) != len(lb):
        raise SystemExit(f"different step counts: {len(la)} vs {len(lb)}")
    first = next((r["step"] for r, x, y in zip(a, la, lb, strict=True) if x != y), None)
    return max(abs(x - y) for x, y in zip(la, lb, strict=True)), la == lb, first


def report(args: argparse.Namespace, rounds: list[dict]) -> None:
    studio = [r["studio"] for r in rounds]
    plain = [r["plain"] for r in rounds]
    diffs = [loss_diff(r["studio"]["rows"], r["plain"]["rows"]) for r in rounds]
    between_studio = [loss_diff(studio[0]["rows"], s["rows"]) for s in studio[1:]]
    between_plain = [loss_diff(plain[0]["rows"], p["rows"]) for p in plain[1:]]
    tps = [s["tokens_per_s"] / p["tokens_per_s"] for s, p in zip(studio, plain, strict=True)]
    wall = [s["wall"] / p["wall"] for s, p in zip(studio, plain, strict=True)]
    recorded = [s["recorded_wall"] / p["wall"] for s, p in zip(studio, plain, strict=True)]
    first = studio[0]["rows"]
    print()
    print(
        f"{args.rounds} rounds, {len(first)} steps each, {first[-1]['num_tokens']:,.0f} tokens "
        f"trained per job; min / median over rounds"
    )
    print("| figure | studio | plain | studio/plain |")
    print("|---|---|---|---|")
    print(
        f"| tokens/s (steps 1..last) | {spread([s['tokens_per_s'] for s in studio])} "
        f"| {spread([p['tokens_per_s'] for p in plain])} | {ratio_spread(tps)} |"
    )
    sec = "{:.2f} s"
    print(
        f"| job wall clock | {spread([s['wall'] for s in studio], sec)} "
        f"| {spread([p['wall'] for p in plain], sec)} | {ratio_spread(wall)} |"
    )
    print(
        f"| job created_at..finished_at | {spread([s['recorded_wall'] for s in studio], sec)} "
        f"| (process) | {ratio_spread(recorded)} |"
    )
    print(
        f"| start .. first step logged | {spread([s['to_first_step'] for s in studio], sec)} "
        f"| {spread([p['to_first_step'] for p in plain], sec)} | |"
    )
    print(
        f"| steps (first .. last log) | {spread([s['seconds'] for s in studio], sec)} "
        f"| {spread([p['seconds'] for p in plain], sec)} | |"
    )
    print(
        f"| last step logged .. end | {spread([s['after_last_step'] for s in studio], sec)} "
        f"| {spread([p['after_last_step'] for p in plain], sec)} | |"
    )
    queued = spread([s["queued"] for s in studio], sec)
    print(f"| studio: created .. started (queue) | {queued} | | |")
    pairs_of = {
        "studio vs plain, same round": diffs,
        "studio vs studio, across rounds": between_studio,
        "plain vs plain, across rounds": between_plain,
    }
    for name, pairs in pairs_of.items():
        if pairs:
            firsts = sorted({f for *_, f in pairs if f is not None})
            print(
                f"per-step loss, {name}: max |diff| {max(d for d, *_ in pairs):.3g} over "
                f"{len(pairs)} pairs x {len(first)} steps; identical: {all(p[1] for p in pairs)}"
                + (f" (first differing step: {firsts[0]})" if firsts else "")
            )
    print(
        f"job wall clock studio/plain: median {statistics.median(wall):.3f}x "
        f"(issue 13 target: <= 1.05x plus the studio's post-training checks)"
    )


def run(args: argparse.Namespace, root: Path) -> None:
    if not ALPACA.exists():
        raise SystemExit(f"{ALPACA} is missing: run `make test-data` first")
    configure(root / "data")
    studio, model, model_dir = start_studio(root, args.model)
    hyper = {**HYPER, "max_steps": args.steps}
    try:
        print(f"studio up at {studio.url}; model {model} ({model_dir})", flush=True)
        rounds = []
        with httpx.Client(base_url=studio.url, headers=studio.headers, timeout=120) as api:
            dataset_id = upload(api, ALPACA.name, ALPACA.read_bytes())
            # The studio's job takes the same settings as the plain script: single-turn rows,
            # so the assistant's answer is the completion either way; packing off.
            extra = {"packing": False, "assistant_only_loss": True, "completion_only_loss": False}
            for i in range(args.rounds):
                result = {}
                for side in ("studio", "plain") if i % 2 == 0 else ("plain", "studio"):
                    if side == "studio":
                        result[side] = studio_run(api, model, dataset_id, hyper, extra)
                    else:
                        result[side] = plain_run(model_dir, ALPACA, hyper)
                rounds.append(result)
                s, p = result["studio"], result["plain"]
                print(
                    f"round {i + 1}: studio job {s['job_id']} {s['tokens_per_s']:,.0f} tok/s, "
                    f"wall {s['wall']:.2f} s; plain {p['tokens_per_s']:,.0f} tok/s, "
                    f"wall {p['wall']:.2f} s",
                    flush=True,
                )
        report(args, rounds)
    finally:
        studio.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="(studio, plain) pairs")
    parser.add_argument("--steps", type=int, default=HYPER["max_steps"], help="steps per job")
    parser.add_argument("--model", choices=("tiny", "bundled"), default="tiny")
    parser.add_argument("--keep", action="store_true", help="keep the data dir and logs")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print("\n".join(machine_facts()), flush=True)
    if args.keep:
        root = Path(tempfile.mkdtemp(prefix="ftstudio-bench-overhead-"))
        print(f"studio data in {root}")
        run(args, root)
        return
    with tempfile.TemporaryDirectory(prefix="ftstudio-bench-overhead-") as tmp:
        run(args, Path(tmp))


if __name__ == "__main__":
    main()
