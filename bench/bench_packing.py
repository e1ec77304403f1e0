"""The studio's packing vs TRL's default padded batches: real tokens trained per second.

Starts the real studio in a temporary data directory (embedded mode, see live_studio.py) and,
on each of two datasets, trains per round:

- **studio packed**: an SFT + LoRA job through ``POST /api/jobs`` with ``packing`` on (given
  explicitly): the studio packs the tokenized rows best-fit into ``max_length`` sequences and
  trains padding-free (a batch is one flattened sequence, position ids restarting at each row);
- **plain padded**: ``bench/plain_sft.py``, an ``SFTTrainer`` script with TRL's default
  ``packing=False``: one row per sequence, each batch padded to its longest row.

Same model, seed, batch size, ``max_length``, learning rate and steps on both sides; both train
on the last assistant turn (the studio with ``completion_only_loss``, the script on the
completion of prompt/completion pairs). The datasets: LLaMA-Factory's ``alpaca_en_demo.json``
(the tests' copy under ``.cache/llamafactory-data``, ``make test-data``) and a generated chat set
of 1- to 4-turn conversations whose lengths spread from a few words to past ``max_length``.

Tokens/s counts real (non-padding) tokens: the ``num_tokens`` TRL logs, from the job's metric
rows (with their ``created_at``) and from the script's log, between the first and last step.
The padding share is of the tokens each forward pass computes: the script counts them with a
forward pre-hook (``input_ids.numel()`` vs its attention mask); the studio's packed batches are
padding-free, so what it computes is what ``num_tokens`` counts (0 padding by construction), and
it is shown with the share of the ``batch x max_length`` budget its packed sequences fill.
Sides alternate every round (``--rounds``); min and median over rounds.

    .venv/bin/python bench/bench_packing.py [--rounds 2] [--steps 10] [--model tiny|bundled]
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import tempfile
from pathlib import Path

import httpx
from live_studio import REPO, configure, machine_facts
from sft_pair import HYPER, plain_run, ratio_spread, spread, start_studio, studio_run, upload

ALPACA = REPO / ".cache" / "llamafactory-data" / "alpaca_en_demo.json"
WORDS = str.split(
    "the model learns to follow instructions written by people who want clear answers about "
    "data training evaluation tokens gradients batches schedules adapters checkpoints and more "
    "a short reply can be enough while a longer one explains each step with an example"
)


def chat_rows(count: int, max_words: int, seed: int = 0) -> list[dict]:
    """1- to 4-turn conversations; total length log-uniform from 3 words to ``max_words``."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        turns = rng.choice((1, 1, 2, 3, 4))
        total = round(3 * (max_words / 3) ** rng.random())
        per_message = max(1, total // (2 * turns))
        messages = []
        for t in range(turns):
            question = " ".join(rng.choices(WORDS, k=rng.randint(1, per_message)))
            answer = " ".join(rng.choices(WORDS, k=rng.randint(1, per_message)))
            messages += [
                {"role": "user", "content": f"Q{i}.{t}: {question}"},
                {"role": "assistant", "content": answer},
            ]
        rows.append({"messages": messages})
    return rows


def run(args: argparse.Namespace, root: Path) -> None:
    if not ALPACA.exists():
        raise SystemExit(f"{ALPACA} is missing: run `make test-data` first")
    configure(root / "data")
    hyper = {
        **HYPER,
        "max_steps": args.steps,
        "max_length": args.max_length,
        "per_device_train_batch_size": args.batch,
    }
    chat = root / "mixed_chat.jsonl"
    # about 1.3 tokens a word, plus the template's system prompt: up to past max_length
    chat.write_text(
        "\n".join(json.dumps(r) for r in chat_rows(args.chat_rows, args.max_length)) + "\n"
    )
    studio, model, model_dir = start_studio(root, args.model)
    extra = {"packing": True, "completion_only_loss": True}
    results: dict[str, list[dict]] = {}
    try:
        print(f"studio up at {studio.url}; model {model} ({model_dir})", flush=True)
        with httpx.Client(base_url=studio.url, headers=studio.headers, timeout=120) as api:
            datasets = {
                "alpaca_en_demo": (ALPACA, upload(api, ALPACA.name, ALPACA.read_bytes())),
                "mixed chat": (chat, upload(api, chat.name, chat.read_bytes())),
            }
            for name, (path, dataset_id) in datasets.items():
                results[name] = []
                for i in range(args.rounds):
                    result = {}
                    for side in ("packed", "padded") if i % 2 == 0 else ("padded", "packed"):
                        if side == "packed":
                            result[side] = studio_run(api, model, dataset_id, hyper, extra)
                        else:
                            result[side] = plain_run(model_dir, path, hyper)
                    results[name].append(result)
                    k, d = result["packed"], result["padded"]
                    print(
                        f"{name} round {i + 1}: studio packed {k['tokens_per_s']:,.0f} tok/s, "
                        f"plain padded {d['tokens_per_s']:,.0f} tok/s "
                        f"({1 - d['real_tokens'] / d['computed_tokens']:.1%} padding)",
                        flush=True,
                    )
    finally:
        studio.stop()
    report(args, results)


def report(args: argparse.Namespace, results: dict[str, list[dict]]) -> None:
    budget = args.batch * args.max_length
    print()
    print(
        f"batch {args.batch}, max_length {args.max_length}, {args.steps} steps per job, "
        f"{args.rounds} rounds; min / median over rounds"
    )
    print("| dataset | side | real tokens/s | real tokens / step | padding share of computed |")
    print("|---|---|---|---|---|")
    for name, rounds in results.items():
        packed = [r["packed"] for r in rounds]
        padded = [r["padded"] for r in rounds]
        steps = len(packed[0]["rows"]) - 1  # the steps between the first and the last log

        def per_step(side: list[dict], steps: int = steps) -> list[float]:
            return [s["tokens"] / steps for s in side]

        fill = [t / budget for t in per_step(packed)]
        pad = [1 - d["real_tokens"] / d["computed_tokens"] for d in padded]
        print(
            f"| {name} | studio packed | {spread([s['tokens_per_s'] for s in packed])} "
            f"| {spread(per_step(packed))} | 0% (padding-free; fills "
            f"{spread([100 * f for f in fill], '{:.0f}%')} of batch x max_length) |"
        )
        print(
            f"| {name} | plain padded | {spread([s['tokens_per_s'] for s in padded])} "
            f"| {spread(per_step(padded))} | {spread([100 * p for p in pad], '{:.1f}%')} |"
        )
        ratios = [r["packed"]["tokens_per_s"] / r["padded"]["tokens_per_s"] for r in rounds]
        print(f"| {name} | packed/padded tokens/s | {ratio_spread(ratios)} | | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="(packed, padded) pairs")
    parser.add_argument("--steps", type=int, default=10, help="steps per job")
    parser.add_argument("--batch", type=int, default=4, help="per_device_train_batch_size")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--chat-rows", type=int, default=600, help="rows of the generated set")
    parser.add_argument("--model", choices=("tiny", "bundled"), default="tiny")
    parser.add_argument("--keep", action="store_true", help="keep the data dir and logs")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print("\n".join(machine_facts()), flush=True)
    if args.keep:
        root = Path(tempfile.mkdtemp(prefix="ftstudio-bench-packing-"))
        print(f"studio data in {root}")
        run(args, root)
        return
    with tempfile.TemporaryDirectory(prefix="ftstudio-bench-packing-") as tmp:
        run(args, Path(tmp))


if __name__ == "__main__":
    main()
