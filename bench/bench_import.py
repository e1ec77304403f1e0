"""Import benchmark: the studio's streaming importer against ``datasets.load_dataset("json")``.

Generates Alpaca JSONL files (default 100,000 and 1,000,000 rows) in a temporary directory,
then runs, each in its own subprocess so that peak RSS is measured cleanly (the child's own
``ru_maxrss``):

- the studio's importer, in-process against a fresh SQLite database (validation, canonical
  rows, batched inserts, content hash, the kept original upload, commit);
- ``datasets.load_dataset("json", data_files=...)`` on the same file (JSON -> Arrow cache).

Each size runs ``--repeats`` pairs (default 3), alternating which side goes first; every
ratio is studio / datasets within one pair (measured back to back), reported as min / median
over the pairs. Prints each run, then per size: rows/s, peak RSS and the RSS after imports
(baseline) of each side, the ratios, and the studio's peak at both sizes, which shows memory
does not grow with the file. The default run takes under 2 minutes on 2 cores.

    .venv/bin/python bench/bench_import.py [--rows 1000000] [--small 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VOCABULARY = (
    "the model learns to follow instructions written by people who want clear answers about "
    "data training evaluation tokens gradients batches schedules adapters checkpoints and more"
)
WORDS = VOCABULARY.split()


def generate(path: Path, rows: int, seed: int = 0) -> None:
    """Alpaca records with varied lengths (about 560 bytes each on average)."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as out:
        for i in range(rows):
            record = {
                "instruction": f"Question {i}: "
                + " ".join(rng.choices(WORDS, k=rng.randint(6, 30))),
                "input": " ".join(rng.choices(WORDS, k=rng.randint(0, 12))) if i % 3 == 0 else "",
                "output": " ".join(rng.choices(WORDS, k=rng.randint(20, 80))),
            }
            out.write(json.dumps(record) + "\n")


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child_studio(path: Path, workdir: Path) -> dict:
    os.environ["FTSTUDIO_DATA_DIR"] = str(workdir / "studio-data")
    sys.path.insert(0, str(REPO))
    from app.auth import get_or_create_user
    from app.data.importer import ImportOptions, import_dataset
    from app.db import session_scope
    from app.migrate import upgrade_to_head
    from app.settings import get_settings

    upgrade_to_head()
    baseline = _rss_mb()
    start = time.perf_counter()
    with session_scope() as session, path.open("rb") as source:
        user = get_or_create_user(session, "bench")
        result = import_dataset(
            session,
            user,
            filename=path.name,
            source=source,
            uploads_dir=get_settings().uploads_dir,
            options=ImportOptions(name="bench"),
        )
        rows = result.dataset.num_rows
    seconds = time.perf_counter() - start
    return {"rows": rows, "seconds": seconds, "baseline_mb": baseline, "peak_mb": _peak_mb()}


def child_datasets(path: Path, workdir: Path) -> dict:
    cache = workdir / "hf-cache"
    os.environ.update(HF_DATASETS_CACHE=str(cache), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    import datasets

    datasets.disable_progress_bars()
    baseline = _rss_mb()
    start = time.perf_counter()
    loaded = datasets.load_dataset(
        "json", data_files=str(path), split="train", cache_dir=str(cache)
    )
    rows = len(loaded)
    seconds = time.perf_counter() - start
    return {"rows": rows, "seconds": seconds, "baseline_mb": baseline, "peak_mb": _peak_mb()}


CHILDREN = {"studio": child_studio, "datasets": child_datasets}


def run_child(mode: str, path: Path, workdir: Path) -> dict:
    """One import in a fresh subprocess and a fresh folder (no cache from an earlier run)."""
    workdir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, __file__, "--child", mode, str(path), str(workdir)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if done.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["rows_per_s"] = result["rows"] / result["seconds"]
    return result


def _line(label: str, r: dict) -> str:
    return (
        f"{label:<30} {r['rows']:>9,} rows {r['seconds']:>7.2f} s {r['rows_per_s']:>9,.0f} rows/s"
        f"   peak RSS {r['peak_mb']:>7.1f} MiB (after imports {r['baseline_mb']:.1f} MiB)"
    )


def run_pairs(rows: int, path: Path, root: Path, repeats: int) -> list[dict[str, dict]]:
    """``repeats`` (studio, datasets) pairs, the first side alternating pair by pair."""
    pairs = []
    for i in range(repeats):
        order = ("studio", "datasets") if i % 2 == 0 else ("datasets", "studio")
        pair = {}
        for mode in order:
            pair[mode] = run_child(mode, path, root / f"{mode}-{rows}-{i}")
            print(_line(f"{mode} ({rows:,}) #{i + 1}", pair[mode]), flush=True)
        pairs.append(pair)
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3, help="pairs of runs per size")
    args = parser.parse_args()
    sizes = sorted({args.small, args.rows})
    with tempfile.TemporaryDirectory(prefix="ftstudio-bench-") as tmp:
        root = Path(tmp)
        results = {}
        for rows in sizes:
            path = root / f"alpaca-{rows}.jsonl"
            started = time.perf_counter()
            generate(path, rows)
            size = path.stat().st_size / 2**20
            print(
                f"generated {rows:,} rows, {size:.0f} MiB in {time.perf_counter() - started:.0f} s"
            )
            results[rows] = run_pairs(rows, path, root, args.repeats)
            path.unlink()
        print()
        for rows in sizes:
            _report(rows, results[rows])
        if len(sizes) == 2:
            _flatness(results, *sizes)


def _min_median(values: list[float], fmt: str) -> str:
    return f"min {format(min(values), fmt)} / median {format(statistics.median(values), fmt)}"


def _report(rows: int, pairs: list[dict[str, dict]]) -> None:
    print(f"at {rows:,} rows ({len(pairs)} pairs):")
    for mode in ("studio", "datasets"):
        speeds = [p[mode]["rows_per_s"] for p in pairs]
        peaks = [p[mode]["peak_mb"] for p in pairs]
        print(
            f"  {mode:<9} rows/s {_min_median(speeds, ',.0f')}   "
            f"peak RSS MiB {_min_median(peaks, '.1f')} (max {max(peaks):.1f})"
        )
    speed = [p["studio"]["rows_per_s"] / p["datasets"]["rows_per_s"] for p in pairs]
    memory = [p["studio"]["peak_mb"] / p["datasets"]["peak_mb"] for p in pairs]
    print(f"  studio / datasets: throughput {_min_median(speed, '.2f')} (x)")
    print(f"  studio / datasets: peak RSS   {_min_median(memory, '.2f')} (x)")


def _flatness(results: dict[int, list[dict[str, dict]]], small: int, big: int) -> None:
    peak_small = max(p["studio"]["peak_mb"] for p in results[small])
    peak_big = max(p["studio"]["peak_mb"] for p in results[big])
    print(
        f"studio peak RSS (max of runs) at {small:,} rows: {peak_small:.1f} MiB, at {big:,} rows: "
        f"{peak_big:.1f} MiB ({peak_big / peak_small:.2f}x for {big / small:.0f}x the rows)"
    )


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        outcome = CHILDREN[sys.argv[2]](Path(sys.argv[3]), Path(sys.argv[4]))
        print(json.dumps(outcome))
    else:
        main()
