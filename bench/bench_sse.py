"""Live streaming cost: training throughput with SSE watchers connected, and delivery latency.

Starts the real studio in a temporary data directory (embedded mode: SQLite + the filesystem
broker), as ``ftstudio web`` and ``ftstudio worker`` run it: uvicorn in its own process and a
Celery worker that spawns a training process per job. Then:

1. **Throughput.** Trains an SFT + LoRA job on a tiny random Llama (hidden 64, 2 layers, the
   bundled tokenizer; ``logging_steps=1``, so every step is an event) and measures training
   tokens/s in windows with no watcher and windows with ``--watchers`` (50) clients connected
   to ``GET /api/jobs/{id}/events``, from the job's own metric rows (``num_tokens`` and
   ``created_at``). Reports the ratio, the CPU used by the web process and by the clients, and
   the delivery latency the 50 watchers saw.
2. **Latency.** Stops the worker, queues one job (it stays queued: its stream stays open),
   connects ``--latency-watchers`` (500) clients to its stream, then writes ``--events`` metric
   rows into the job through the database layer the worker uses (``session_scope``), at random
   intervals. Latency = arrival at a client minus the row's ``created_at``; p50/p90/p99/max over
   every (client, event) pair, and how many arrived at all.

3. **Bursts.** Times a few plain ``GET /api/jobs/{id}`` sent at once: 2 on a token's first use
   in a minute (it writes ``last_used_at``), then 15 and 16 with a token just used.

The clients are asyncio + httpx in this process; the server, worker and training process are
separate processes on the same machine, so all of them share its cores. The watchers connect
a few at a time (``--ramp``): simultaneous authenticated requests can stall the server (part 3).

Part 1 alternates watched and unwatched windows inside one job (``--cycles``, ``--window``)
because on a shared machine other people's load drifts more between two jobs than streaming
costs; ``--rounds N`` also trains N (none, watched) pairs of whole jobs, as first designed.

    .venv/bin/python bench/bench_sse.py [--watchers 50] [--latency-watchers 500] [--cycles 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

import httpx
from live_studio import (
    Studio,
    configure,
    cpu_seconds,
    raise_fd_limit,
    this_process_cpu,
)
from sse_clients import Watcher, alpaca_rows, connect_all, latencies, new_client
from sse_report import report

ENDED = ("succeeded", "failed", "cancelled")


def job_body(dataset_id: int, steps: int) -> dict:
    return {
        "method": "sft",
        "adapter": "lora",
        "base_model": "tiny-llama",
        "dataset_id": dataset_id,
        "hyperparameters": {
            "max_steps": steps,
            "logging_steps": 1,
            "save_steps": 1_000_000,
            "per_device_train_batch_size": 2,
            "max_length": 64,
            "learning_rate": 1e-3,
        },
    }


def metric_rows(job_id: int) -> list[tuple[int, float, float]]:
    """(id, created_at, num_tokens) of the job's training rows, from the database."""
    from app.db import session_scope
    from app.queries import job_metrics

    with session_scope() as session:
        return [
            (m.id, m.created_at.timestamp(), m.num_tokens)
            for m in job_metrics(session, job_id)
            if m.num_tokens is not None
        ]


async def windowed_run(
    studio: Studio,
    api: httpx.AsyncClient,
    dataset_id: int,
    watchers: int,
    ramp: int,
    cycles: int,
    window: float,
) -> dict:
    """One long training job; ``watchers`` clients connect and leave in alternating windows.

    Each cycle measures a window with no watcher and a window with ``watchers`` connected
    (in alternating order: none/watched, watched/none, ...), so that the machine's other load,
    which drifts, weighs on both sides alike. Tokens/s of a window comes from the job's own
    metric rows written inside it.
    """
    response = await api.post("/api/jobs", json=job_body(dataset_id, 1_000_000))
    if response.status_code != 201:
        raise SystemExit(f"job refused: {response.text}")
    job_id = response.json()["id"]
    while len(await asyncio.to_thread(metric_rows, job_id)) < 30:  # training is under way
        job = (await api.get(f"/api/jobs/{job_id}")).json()
        if job["status"] in ENDED:
            raise SystemExit(f"job {job_id} {job['status']}: {job['error']}")
        await asyncio.sleep(0.5)
    windows, clients = [], []
    settle = 1.5  # after connecting or leaving, before a window starts
    try:
        for cycle in range(cycles):
            for count in (0, watchers) if cycle % 2 == 0 else (watchers, 0):
                tasks: list[asyncio.Task] = []
                client = new_client(count)
                try:
                    if count:
                        # As the run page does: it renders the stored history, then streams
                        # what comes after the last point it drew.
                        last = (await asyncio.to_thread(metric_rows, job_id))[-1][0]
                        url = f"{studio.url}/api/jobs/{job_id}/events?after={last}"
                        watching, tasks, _ = await connect_all(
                            client, url, studio.headers, count, ramp, 120
                        )
                        clients += watching
                    await asyncio.sleep(settle)
                    cpu, own, started = cpu_seconds(studio.web.pid), this_process_cpu(), time.time()
                    await asyncio.sleep(window)
                    ended = time.time()
                    windows.append(
                        {
                            "watchers": count,
                            "cycle": cycle,
                            "start": started,
                            "end": ended,
                            "web_cpu_share": (cpu_seconds(studio.web.pid) - cpu) / window,
                            "client_cpu_share": (this_process_cpu() - own) / window,
                        }
                    )
                finally:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    await client.aclose()
                if count:
                    await asyncio.sleep(settle)  # the server notices the streams have gone
    finally:
        await api.post(f"/api/jobs/{job_id}/cancel")
    rows = await asyncio.to_thread(metric_rows, job_id)
    for w in windows:
        inside = [r for r in rows if w["start"] <= r[1] <= w["end"]]
        if len(inside) < 2:
            raise SystemExit(f"fewer than 2 metric rows in a {window:.0f} s window: lengthen it")
        (_, t0, n0), (_, t1, n1) = inside[0], inside[-1]
        w.update(steps=len(inside) - 1, tokens=n1 - n0, seconds=t1 - t0)
        w["tokens_per_s"] = (n1 - n0) / (t1 - t0)
    lat, _ = latencies(clients)
    while (await api.get(f"/api/jobs/{job_id}")).json()["status"] not in ENDED:
        await asyncio.sleep(0.5)
    return {"job_id": job_id, "watchers": watchers, "windows": windows, "latencies": lat}


async def training_run(
    studio: Studio, api: httpx.AsyncClient, dataset_id: int, steps: int, watchers: int, ramp: int
) -> dict:
    response = await api.post("/api/jobs", json=job_body(dataset_id, steps))
    if response.status_code != 201:
        raise SystemExit(f"job refused: {response.text}")
    job_id = response.json()["id"]
    cpu_before, wall_before = cpu_seconds(studio.web.pid), time.perf_counter()
    load_before, own_before = os.getloadavg()[0], this_process_cpu()
    clients: list[Watcher] = []
    tasks: list[asyncio.Task] = []
    client = new_client(watchers)
    try:
        if watchers:
            url = f"{studio.url}/api/jobs/{job_id}/events"
            clients, tasks, _ = await connect_all(client, url, studio.headers, watchers, ramp, 300)
        while True:
            job = (await api.get(f"/api/jobs/{job_id}")).json()
            if job["status"] in ENDED:
                break
            await asyncio.sleep(1.0)
        if job["status"] != "succeeded":
            raise SystemExit(f"job {job_id} {job['status']}: {job['error']}")
        if tasks:
            await asyncio.wait_for(asyncio.gather(*tasks), 120)  # each stream ends by itself
    finally:
        for task in tasks:
            task.cancel()
        await client.aclose()
    web_cpu = cpu_seconds(studio.web.pid) - cpu_before
    own_cpu = this_process_cpu() - own_before
    wall = time.perf_counter() - wall_before
    rows = await asyncio.to_thread(metric_rows, job_id)
    (_, t0, n0), (_, t1, n1) = rows[0], rows[-1]
    ids = [r[0] for r in rows]
    lat, missing = latencies(clients, ids)
    return {
        "job_id": job_id,
        "watchers": watchers,
        "steps": len(rows),
        "tokens": n1 - n0,
        "seconds": t1 - t0,
        "tokens_per_s": (n1 - n0) / (t1 - t0),
        "web_cpu_share": web_cpu / wall,
        "client_cpu_share": own_cpu / wall,
        "load": (load_before, os.getloadavg()[0]),
        "latencies": lat,
        "missing": missing,
        "ended": sum(w.ended for w in clients),
    }


def write_metric(job_id: int, step: int) -> int:
    """One metric row, written the way the worker's training callback writes them."""
    from app.db import session_scope
    from app.models import Metric

    with session_scope() as session:
        metric = Metric(
            job_id=job_id,
            step=step,
            loss=1.0 / step,
            learning_rate=1e-4,
            num_tokens=512.0 * step,
            values={},
        )
        session.add(metric)
        session.flush()
        return metric.id


async def latency_run(
    studio: Studio, api: httpx.AsyncClient, dataset_id: int, watchers: int, events: int, ramp: int
) -> dict:
    response = await api.post("/api/jobs", json=job_body(dataset_id, 10))
    job_id = response.json()["id"]  # no worker: it stays queued, and its stream stays open
    url = f"{studio.url}/api/jobs/{job_id}/events"
    client = new_client(watchers)
    tasks: list[asyncio.Task] = []
    try:
        clients, tasks, connect_s = await connect_all(
            client, url, studio.headers, watchers, ramp, 300
        )
        await asyncio.sleep(2.0)  # let the connection burst settle
        rng = random.Random(1)
        cpu_before, wall_before = cpu_seconds(studio.web.pid), time.perf_counter()
        own_before = this_process_cpu()
        ids = []
        for step in range(1, events + 1):
            # Random gaps, so that writes do not lock step with the streams' poll interval.
            await asyncio.sleep(rng.uniform(0.3, 0.9))
            ids.append(await asyncio.to_thread(write_metric, job_id, step))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all(all(i in w.arrivals for i in ids) for w in clients):
                break
            await asyncio.sleep(0.25)
        web_cpu = cpu_seconds(studio.web.pid) - cpu_before
        own_cpu = this_process_cpu() - own_before
        wall = time.perf_counter() - wall_before
        await api.post(f"/api/jobs/{job_id}/cancel")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.aclose()
    lat, missing = latencies(clients, ids)
    return {
        "watchers": watchers,
        "events": events,
        "connect_s": connect_s,
        "ramp": ramp,
        "latencies": lat,
        "missing": missing,
        "web_cpu_share": web_cpu / wall,
        "client_cpu_share": own_cpu / wall,
    }


def fresh_token() -> str:
    """A new API token for the bench user: its first use will write its ``last_used_at``."""
    from app.auth import create_token, get_or_create_user
    from app.db import session_scope

    with session_scope() as session:
        return create_token(session, get_or_create_user(session, "bench", admin=True), "burst")


async def burst(studio: Studio, job_id: int, requests: int, *, warm: bool) -> dict:
    """``requests`` plain authenticated GETs sent at once with a new token; wall time, codes.

    ``warm``: one request first, so that the token's ``last_used_at`` (written at most once a
    minute) is fresh and the burst only reads; otherwise the burst is the token's first use.
    """
    headers = {"Authorization": f"Bearer {await asyncio.to_thread(fresh_token)}"}
    limits = httpx.Limits(max_connections=requests, max_keepalive_connections=requests)
    async with httpx.AsyncClient(
        base_url=studio.url, headers=headers, limits=limits, timeout=90
    ) as client:
        if warm:
            (await client.get(f"/api/jobs/{job_id}")).raise_for_status()
        started = time.perf_counter()
        responses = await asyncio.gather(
            *(client.get(f"/api/jobs/{job_id}") for _ in range(requests)), return_exceptions=True
        )
        seconds = time.perf_counter() - started
    codes: dict[str, int] = {}
    for r in responses:
        code = str(r.status_code) if isinstance(r, httpx.Response) else type(r).__name__
        codes[code] = codes.get(code, 0) + 1
    return {"requests": requests, "seconds": seconds, "codes": codes, "warm": warm}


async def run(args: argparse.Namespace, studio: Studio) -> None:
    async with httpx.AsyncClient(base_url=studio.url, headers=studio.headers, timeout=120) as api:
        upload = await api.post(
            "/api/datasets", files={"file": ("bench.jsonl", alpaca_rows(args.rows))}
        )
        if upload.status_code != 201:
            raise SystemExit(f"upload refused: {upload.text}")
        dataset_id = upload.json()["id"]
        windowed = None
        if args.cycles:
            windowed = await windowed_run(
                studio, api, dataset_id, args.watchers, args.ramp, args.cycles, args.window
            )
            print(f"job {windowed['job_id']}: {len(windowed['windows'])} windows", flush=True)
        runs = []
        # Rounds alternate their order (none, watched, watched, none, ...), so that a drift in
        # the machine's other load does not favour one side.
        order = [(0, args.watchers), (args.watchers, 0)]
        for round_ in range(args.rounds):
            for count in order[round_ % 2]:
                r = await training_run(studio, api, dataset_id, args.steps, count, args.ramp)
                print(
                    f"job {r['job_id']}: {count} watchers, {r['steps']} steps,"
                    f" {r['tokens_per_s']:.0f} tokens/s",
                    flush=True,
                )
                runs.append(r)
        latency = None
        if args.latency_watchers:
            studio.stop_worker()
            latency = await latency_run(
                studio, api, dataset_id, args.latency_watchers, args.events, args.ramp
            )
        bursts = []
        if args.burst:
            job_id = (await api.get("/api/jobs")).json()[0]["id"]  # any job will do
            bursts.append(await burst(studio, job_id, 2, warm=False))
            for n in (min(args.burst, 15), args.burst) if args.burst > 15 else (args.burst,):
                bursts.append(await burst(studio, job_id, n, warm=True))
    report(windowed, runs, latency, bursts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watchers", type=int, default=50)
    parser.add_argument("--latency-watchers", type=int, default=500)
    parser.add_argument("--steps", type=int, default=200, help="training steps per job")
    parser.add_argument("--events", type=int, default=40, help="rows written for the latency run")
    parser.add_argument(
        "--cycles", type=int, default=5, help="(none, watched) window pairs in one training job"
    )
    parser.add_argument("--window", type=float, default=10.0, help="seconds per window")
    parser.add_argument(
        "--rounds", type=int, default=0, help="(none, watched) pairs of whole training jobs"
    )
    parser.add_argument("--rows", type=int, default=400, help="rows in the generated dataset")
    parser.add_argument(
        "--ramp", type=int, default=8, help="watchers connecting at once (see connect_all)"
    )
    parser.add_argument(
        "--burst", type=int, default=16, help="simultaneous plain API requests to time (0: skip)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the data dir and logs")
    args = parser.parse_args()
    # A SIGTERM (timeout, kill) unwinds like Ctrl-C, so that the studio is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    limit = raise_fd_limit(4 * max(args.watchers, args.latency_watchers) + 1024)
    with tempfile.TemporaryDirectory(prefix="ftstudio-bench-sse-") as tmp:
        root = Path(tempfile.mkdtemp(prefix="ftstudio-bench-sse-")) if args.keep else Path(tmp)
        configure(root / "data")
        studio = Studio(root)
        print(f"open-files limit {limit}; studio data in {root}", flush=True)
        try:
            studio.start()
            print(f"studio up at {studio.url}", flush=True)
            asyncio.run(run(args, studio))
        except BaseException:
            if (root / "web.log").exists():
                print(f"web server log, last lines:\n{studio._tail('web.log')}", file=sys.stderr)
            raise
        finally:
            studio.stop()


if __name__ == "__main__":
    main()
