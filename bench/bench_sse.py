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
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from live_studio import (
    Studio,
    configure,
    cpu_seconds,
    percentile,
    raise_fd_limit,
    this_process_cpu,
)

VOCABULARY = (
    "the model learns to follow instructions written by people who want clear answers about "
    "data training evaluation tokens gradients batches schedules adapters checkpoints and more"
)
WORDS = VOCABULARY.split()
ENDED = ("succeeded", "failed", "cancelled")


def alpaca_rows(count: int, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    lines = []
    for i in range(count):
        record = {
            "instruction": f"Question {i}: " + " ".join(rng.choices(WORDS, k=rng.randint(6, 30))),
            "input": "",
            "output": " ".join(rng.choices(WORDS, k=rng.randint(20, 80))),
        }
        lines.append(json.dumps(record))
    return "\n".join(lines).encode()


@dataclass
class Watcher:
    """One SSE client: when each metric event arrived, and whether the stream said hello."""

    arrivals: dict[int, tuple[float, float]] = field(default_factory=dict)  # id -> (sent, got)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    ended: bool = False
    error: str | None = None


async def watch(
    client: httpx.AsyncClient,
    url: str,
    headers: dict,
    watcher: Watcher,
    gate: asyncio.Semaphore,
) -> None:
    """Read one stream; ``gate`` is held from the request until the stream's first event."""
    await gate.acquire()
    try:
        async with client.stream("GET", url, headers=headers) as response:
            if response.status_code != 200:
                watcher.error = f"HTTP {response.status_code}"
                return
            event, data = "message", ""
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = line[6:]
                elif line == "" and data:
                    now = time.time()
                    if event == "metric":
                        point = json.loads(data)
                        watcher.arrivals[point["id"]] = (point["time"], now)
                    elif event == "status" and not watcher.connected.is_set():
                        watcher.connected.set()
                        gate.release()
                    elif event == "end":
                        watcher.ended = True
                        return
                    event, data = "message", ""
    except (httpx.HTTPError, OSError) as exc:
        watcher.error = f"{type(exc).__name__}: {exc}"
    finally:
        if not watcher.connected.is_set():
            watcher.connected.set()
            gate.release()


def new_client(watchers: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=watchers + 10, max_keepalive_connections=watchers + 10)
    timeout = httpx.Timeout(connect=60, read=120, write=60, pool=60)
    return httpx.AsyncClient(limits=limits, timeout=timeout)


def latencies(watchers: list[Watcher], ids: list[int] | None = None) -> tuple[list[float], int]:
    """Seconds from each row's created_at to its arrival, over every (watcher, event) pair."""
    values, missing = [], 0
    for w in watchers:
        wanted = ids if ids is not None else list(w.arrivals)
        for metric_id in wanted:
            if metric_id in w.arrivals:
                sent, got = w.arrivals[metric_id]
                values.append(got - sent)
            else:
                missing += 1
    return values, missing


TOKEN_REFRESH_SECONDS = 20.0  # the server writes a token's last_used_at at most once a minute


async def _keep_token_fresh(
    client: httpx.AsyncClient, url: str, headers: dict, gate: asyncio.Semaphore, ramp: int
) -> None:
    """Use the token alone (holding every slot of the gate) every 20 s while watchers connect.

    The server writes the token's ``last_used_at`` on its first use in a minute; if another
    request of the token is in flight then, the server stalls for 30 s (see ``burst``). Using
    the token alone now and then keeps that write out of the connection ramp.
    """
    job_url = url.split("/events")[0]
    while True:
        for _ in range(ramp):
            await gate.acquire()
        try:
            (await client.get(job_url, headers=headers)).raise_for_status()
        finally:
            for _ in range(ramp):
                gate.release()
        await asyncio.sleep(TOKEN_REFRESH_SECONDS)


async def connect_all(
    client: httpx.AsyncClient, url: str, headers: dict, count: int, ramp: int, timeout: float
) -> tuple[list[Watcher], list[asyncio.Task], float]:
    """Open ``count`` streams, at most ``ramp`` of them connecting at any moment.

    Authenticated requests in flight together can stall the server: for 30 s when more than
    15 are (the database pool), or when two are as the token's ``last_used_at`` is written
    (see ``burst`` and BENCHMARKS.md). So the watchers connect ``ramp`` (8) at a time, the token
    is kept fresh by ``_keep_token_fresh``, and what is measured is streaming.
    """
    watchers = [Watcher() for _ in range(count)]
    gate = asyncio.Semaphore(ramp)
    refresher = asyncio.create_task(_keep_token_fresh(client, url, headers, gate, ramp))
    await asyncio.sleep(0)  # the refresher takes the gate first
    tasks = [asyncio.create_task(watch(client, url, headers, w, gate)) for w in watchers]
    started = time.perf_counter()
    try:
        await asyncio.wait_for(asyncio.gather(*(w.connected.wait() for w in watchers)), timeout)
    finally:
        refresher.cancel()
        await asyncio.gather(refresher, return_exceptions=True)
    errors = [w.error for w in watchers if w.error]
    if errors:
        raise SystemExit(f"{len(errors)} of {count} watchers failed to connect: {errors[0]}")
    return watchers, tasks, time.perf_counter() - started


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


def _ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q) * 1000:7.0f} ms" if values else "      - "


def report(
    windowed: dict | None, runs: list[dict], latency: dict | None, bursts: list[dict]
) -> None:
    if windowed:
        report_windows(windowed)
    if runs:
        report_throughput(runs)
    if latency:
        report_latency(latency)
    if bursts:
        print()
        print("Simultaneous plain requests (GET /api/jobs/{id}, a new token, nothing streaming):")
        for b in bursts:
            codes = ", ".join(f"{n} x {code}" for code, n in sorted(b["codes"].items()))
            use = "token used a moment before" if b["warm"] else "the token's first use"
            print(f"  {b['requests']:>3} at once, {use}: {b['seconds']:5.1f} s, {codes}")


def report_windows(result: dict) -> None:
    windows, n = result["windows"], result["watchers"]
    print()
    print(
        f"Training throughput in one job (tiny Llama, SFT + LoRA, a metric row every step),"
        f" {n} watchers connected in alternate windows:"
    )
    print(
        f"  {'cycle':>5} {'watchers':>8} {'steps':>6} {'seconds':>8} {'tokens/s':>9}"
        f" {'web CPU':>8} {'clients':>8}"
    )
    for w in windows:
        print(
            f"  {w['cycle']:>5} {w['watchers']:>8} {w['steps']:>6} {w['seconds']:>8.1f}"
            f" {w['tokens_per_s']:>9.0f} {w['web_cpu_share'] * 100:>7.0f}%"
            f" {w['client_cpu_share'] * 100:>7.0f}%"
        )

    def pooled(count: int) -> float:
        chosen = [w for w in windows if w["watchers"] == count]
        return sum(w["tokens"] for w in chosen) / sum(w["seconds"] for w in chosen)

    per_cycle = []
    for cycle in sorted({w["cycle"] for w in windows}):
        pair = {w["watchers"]: w["tokens_per_s"] for w in windows if w["cycle"] == cycle}
        per_cycle.append(pair[n] / pair[0])
    each = ", ".join(f"{r:.2f}x" for r in per_cycle)
    print(
        f"  tokens/s with {n} watchers / with none: {pooled(n) / pooled(0):.2f}x"
        f" ({pooled(n):.0f} / {pooled(0):.0f} tokens/s, all windows pooled;"
        f" median of cycles {statistics.median(per_cycle):.2f}x; each cycle: {each})"
    )
    lat = result["latencies"]
    print(
        f"  delivery to the {n} watchers during training: p50 {_ms(lat, 50).strip()},"
        f" p99 {_ms(lat, 99).strip()} ({len(lat)} deliveries)"
    )
    print(
        "  (CPU: share of one core used by the web process and by this script's clients"
        " during each window)"
    )


def report_throughput(runs: list[dict]) -> None:
    print()
    print("Training throughput (tiny Llama, SFT + LoRA, a metric row every step):")
    print(
        f"  {'job':>4} {'watchers':>8} {'steps':>6} {'tokens':>7} {'seconds':>8} {'tokens/s':>9}"
        f" {'web CPU':>8} {'clients':>8} {'load 1m':>10} {'delivery p50':>13} {'p99':>8}"
    )
    for r in runs:
        load = f"{r['load'][0]:.1f}-{r['load'][1]:.1f}"
        print(
            f"  {r['job_id']:>4} {r['watchers']:>8} {r['steps']:>6} {r['tokens']:>7.0f}"
            f" {r['seconds']:>8.1f} {r['tokens_per_s']:>9.0f} {r['web_cpu_share'] * 100:>7.0f}%"
            f" {r['client_cpu_share'] * 100:>7.0f}% {load:>10}"
            f" {_ms(r['latencies'], 50):>13} {_ms(r['latencies'], 99):>8}"
        )
    base = [r["tokens_per_s"] for r in runs if not r["watchers"]]
    watched = [r for r in runs if r["watchers"]]
    if not watched:
        return
    n = watched[0]["watchers"]
    pairs = [
        (runs[i], runs[i + 1]) if runs[i]["watchers"] else (runs[i + 1], runs[i])
        for i in range(0, len(runs) - 1, 2)
    ]
    each = ", ".join(f"{w['tokens_per_s'] / b['tokens_per_s']:.2f}x" for w, b in pairs)
    ratio = statistics.median(r["tokens_per_s"] for r in watched) / statistics.median(base)
    print(f"  tokens/s with {n} watchers / with none: {ratio:.2f}x (each round: {each})")
    print(
        f"  ({sum(len(r['latencies']) for r in watched)} deliveries to watchers,"
        f" {sum(r['missing'] for r in watched)} missing;"
        f" {sum(r['ended'] for r in watched)} of {n * len(watched)} streams closed with 'end';"
        " CPU: share of one core used by the web process and by this script's clients,"
        " from submission to the end; load 1m: the machine's load average before and after)"
    )


def report_latency(latency: dict) -> None:
    lat = latency["latencies"]
    print()
    print(
        f"Delivery latency, {latency['watchers']} watchers on one job, {latency['events']}"
        f" metric rows written at random 0.3-0.9 s gaps (connecting them took"
        f" {latency['connect_s']:.1f} s, {latency['ramp']} at a time):"
    )
    print(
        f"  p50 {_ms(lat, 50).strip()}, p90 {_ms(lat, 90).strip()}, p99 {_ms(lat, 99).strip()},"
        f" max {_ms(lat, 100).strip()}; {len(lat)} deliveries, {latency['missing']} missing;"
        f" CPU: web process {latency['web_cpu_share'] * 100:.0f}% of one core,"
        f" these clients {latency['client_cpu_share'] * 100:.0f}%"
    )


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
