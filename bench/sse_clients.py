"""SSE clients for bench_sse.py: the watchers that read a job's event stream, how they connect
(a few at a time, the token kept fresh), the delivery latencies they saw, and the training rows."""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field

import httpx

VOCABULARY = (
    "the model learns to follow instructions written by people who want clear answers about "
    "data training evaluation tokens gradients batches schedules adapters checkpoints and more"
)
WORDS = VOCABULARY.split()


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
