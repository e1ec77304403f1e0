"""Start-up: submit -> the first training step, phase by phase, for a first run on new data and a
second run on the same data (tokenized cache), against the plain TRL script's start -> first step.

Starts the real studio (embedded mode, see live_studio.py). Each round uploads a fresh copy of
LLaMA-Factory's ``alpaca_en_demo.json`` (so the first run finds no tokenized cache; the tests'
copy under ``.cache/llamafactory-data``, fetched by ``make test-data``), trains a short SFT + LoRA
job on it through the API, then a second one on the same dataset, and runs ``bench/plain_sft.py``
(the plain SFTTrainer script) with the same model and settings; the plain script's place in the
round alternates. The studio's split comes from the phases its training process records
(``GET /api/jobs/{id}``'s ``phases``): queued, starting (the worker took the job -> the training
process exists), imports, model load and data preparation (side by side), first step (the
trainer's set-up and first step). Printed: min / median over rounds of each phase and of the whole
submit -> first step, and studio / plain for the first and the second run.

    .venv/bin/python bench/bench_startup.py [--rounds 3] [--model tiny|bundled]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from live_studio import REPO, configure, machine_facts, utc_timestamp
from sft_pair import ENDED, HYPER, plain_run, ratio_spread, spread, start_studio, upload

ALPACA = REPO / ".cache" / "llamafactory-data" / "alpaca_en_demo.json"
PHASES = ("queued", "starting", "imports", "model load", "data preparation", "first step")
STEPS = 3


def studio_start(api: httpx.Client, model: str, dataset_id: int) -> dict[str, float]:
    """One short job: its phases, and submit -> the end of its first step."""
    body = {
        "method": "sft",
        "adapter": "lora",
        "base_model": model,
        "dataset_id": dataset_id,
        "hyperparameters": {**HYPER, "max_steps": STEPS, "precision": "fp32"},
    }
    response = api.post("/api/jobs", json=body)
    if response.status_code != 201:
        raise SystemExit(f"job refused: {response.text}")
    job_id = response.json()["id"]
    while (job := api.get(f"/api/jobs/{job_id}").json())["status"] not in ENDED:
        time.sleep(0.1)
    if job["status"] != "succeeded":
        raise SystemExit(f"job {job_id} {job['status']}: {job['error']}")
    phases = {p["phase"]: p for p in job["phases"]}
    first = phases["first step"]
    ended = utc_timestamp(first["started_at"]) + first["seconds"]
    result = {name: phases[name]["seconds"] for name in PHASES}
    result["cached"] = phases["data preparation"]["cached"]
    result["total"] = ended - utc_timestamp(job["created_at"])
    return result


def run(args: argparse.Namespace, root: Path) -> None:
    if not ALPACA.exists():
        raise SystemExit(f"{ALPACA} is missing: run `make test-data` first")
    configure(root / "data")
    studio, model, model_dir = start_studio(root, args.model)
    rounds = []
    try:
        with httpx.Client(base_url=studio.url, headers=studio.headers, timeout=120) as api:
            # A first job warms the worker's own process (the first training process after a
            # worker starts is slower); it is not counted.
            studio_start(api, model, upload(api, "warm.json", ALPACA.read_bytes()))
            for i in range(args.rounds):
                content = json.dumps(json.loads(ALPACA.read_text())[i:]).encode()  # new data
                plain = None
                if i % 2 == 1:  # alternate: the plain script first in every other round
                    plain = plain_run(model_dir, ALPACA, {**HYPER, "max_steps": STEPS})
                dataset_id = upload(api, f"round-{i}.json", content)
                first = studio_start(api, model, dataset_id)
                second = studio_start(api, model, dataset_id)
                plain = plain or plain_run(model_dir, ALPACA, {**HYPER, "max_steps": STEPS})
                rounds.append({"first": first, "second": second, "plain": plain["to_first_step"]})
                print(
                    f"round {i + 1}: first run {first['total']:.2f} s (cached {first['cached']}),"
                    f" second {second['total']:.2f} s (cached {second['cached']}), plain "
                    f"{plain['to_first_step']:.2f} s",
                    flush=True,
                )
    finally:
        studio.stop()
    report(rounds)


def report(rounds: list[dict]) -> None:
    print(f"\nsubmit -> first training step, {len(rounds)} rounds; min / median in seconds")
    print("| phase | first run | second run (same data) |")
    print("|---|---|---|")
    for name in (*PHASES, "total"):
        first = [r["first"][name] for r in rounds]
        second = [r["second"][name] for r in rounds]
        print(f"| {name} | {spread(first, '{:.2f}')} | {spread(second, '{:.2f}')} |")
    plain = [r["plain"] for r in rounds]
    print(f"| plain script: start -> first step | {spread(plain, '{:.2f}')} | |")
    for which in ("first", "second"):
        ratios = [r[which]["total"] / r["plain"] for r in rounds]
        print(f"{which} run / plain: {ratio_spread(ratios)}")
    load = [r["second"]["model load"] for r in rounds]
    rest = [r["second"]["total"] - r["second"]["model load"] for r in rounds]
    print(
        f"second run, submit -> first step beyond the model load: {spread(rest, '{:.2f}')} s "
        f"(model load {statistics.median(load):.2f} s; issue 13 target: < 2 s plus model load)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", choices=("tiny", "bundled"), default="tiny")
    args = parser.parse_args()
    print("\n".join(machine_facts()), flush=True)
    with tempfile.TemporaryDirectory(prefix="ftstudio-bench-startup-") as tmp:
        run(args, Path(tmp))


if __name__ == "__main__":
    main()
