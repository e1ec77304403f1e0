"""The web tier under load: the studio vs a bare FastAPI app serving the same bytes.

Starts the real studio in a temporary data directory (embedded mode: SQLite), as ``ftstudio
web`` runs it (uvicorn, one process), and seeds it through the app's models: a user and a
token, a base model row, a dataset, one ended run with ``--metrics`` (500) metric rows and
``--jobs`` (50) more runs for the list. It captures each endpoint's response from the studio,
then starts a bare FastAPI app under the same uvicorn settings (one process, this script run
with ``--serve-bare``) that answers each path with those exact bytes and content type, and no
database, auth or templates.

For each endpoint (the run page ``/jobs/{id}``, ``GET /api/jobs/{id}/metrics``, ``GET
/api/jobs``), ``--clients`` (50) concurrent clients send requests for ``--seconds`` per round,
alternating studio and bare rounds (the order swapped every round), ``--rounds`` (3) times.
Each client keeps one HTTP/1.1 keep-alive connection and checks every answer is a 200 of the
captured length; the clients are a small asyncio HTTP/1.1 client in this process (cheaper than
httpx, so the load generator takes less of the two cores the servers need). Prints requests/s,
p50 and p99 for each side, and the studio/bare ratio of requests/s, min and median over rounds.

    .venv/bin/python bench/bench_web.py [--clients 50] [--rounds 3] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from live_studio import (
    REPO,
    _die_with_parent,
    _free_port,
    configure,
    percentile,
    raise_fd_limit,
    wait_for,
)

# --- the bare peer ------------------------------------------------------------------------


def serve_bare(captured: Path, port: int) -> None:
    """A bare FastAPI app answering each captured path with its bytes, as uvicorn runs the
    studio (``app.cli`` web: one process, log_level info)."""
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()
    for entry in json.loads(captured.read_text()):
        body = bytes.fromhex(entry["body"])
        media = entry["content_type"]

        app.add_api_route(entry["path"].split("?")[0], _answer(body, media), methods=["GET"])

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="info")


def _answer(body: bytes, media: str):
    from fastapi.responses import Response

    def handler() -> Response:
        return Response(body, headers={"content-type": media})

    return handler


# --- seeding ------------------------------------------------------------------------------


def seed(metrics: int, jobs: int) -> tuple[str, int]:
    """A user and token, a dataset, one ended run with ``metrics`` rows and ``jobs`` others."""
    from app.auth import create_token, get_or_create_user
    from app.db import session_scope
    from app.migrate import upgrade_to_head
    from app.models import BaseModel, Dataset, Job, JobStatus, Metric
    from app.spec import SPEC_VERSION, TrainingSpec

    upgrade_to_head()
    spec = TrainingSpec(max_steps=metrics).model_dump(mode="json")
    statuses = [JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled, JobStatus.queued]
    start = datetime.now(UTC) - timedelta(hours=2)
    with session_scope() as session:
        user = get_or_create_user(session, "bench", admin=True)
        token = create_token(session, user, "bench")
        model = BaseModel(name="tiny-llama", path=str(REPO / ".data" / "none"), source="local")
        dataset = Dataset(owner_id=user.id, name="alpaca.jsonl", kind="sft", format="alpaca")
        session.add_all([model, dataset])
        session.flush()

        def job(name: str, status: JobStatus, steps: int) -> Job:
            return Job(
                owner_id=user.id,
                name=name,
                method="sft",
                adapter="lora",
                base_model_id=model.id,
                dataset_id=dataset.id,
                spec=spec,
                spec_version=SPEC_VERSION,
                status=status,
                step=steps,
                max_steps=metrics,
                worker="bench@host",
                created_at=start,
                started_at=start + timedelta(seconds=3),
                finished_at=None if status == JobStatus.queued else start + timedelta(hours=1),
            )

        for i in range(jobs):
            session.add(job(f"run {i}", statuses[i % len(statuses)], i))
        ended = job("watched run", JobStatus.succeeded, metrics)
        session.add(ended)
        session.flush()
        session.add_all(
            Metric(
                job_id=ended.id,
                step=step,
                epoch=step / metrics * 3,
                loss=2.5 / (1 + step / 50) + 0.01 * (step % 7),
                learning_rate=2e-4 * (1 - step / metrics),
                grad_norm=1.0 + 0.1 * (step % 5),
                num_tokens=float(step * 512),
                values={"mean_token_accuracy": 0.5 + step / (4 * metrics), "entropy": 1.5},
                created_at=start + timedelta(seconds=3 + step * 0.5),
            )
            for step in range(1, metrics + 1)
        )
        return token, ended.id


# --- the load -----------------------------------------------------------------------------


class Conn:
    """One HTTP/1.1 keep-alive connection that sends GETs and reads Content-Length bodies."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port, self.headers = host, port, headers
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, int]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length, chunked, close = 0, False, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        if chunked:
            length = 0
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                await self.reader.readexactly(size + 2)
                length += size
                if size == 0:
                    break
        else:
            await self.reader.readexactly(length)
        if close:
            await self.close()
        return status, length

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


async def load_round(
    url: str, path: str, headers: dict[str, str], clients: int, seconds: float, length: int
) -> dict:
    host, port = url.removeprefix("http://").split(":")
    conns = [Conn(host, int(port), headers) for _ in range(clients)]
    latencies: list[float] = []
    errors: list[str] = []
    deadline = 0.0

    async def client(conn: Conn) -> None:
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            status, got = await conn.get(path)
            latencies.append(time.perf_counter() - sent)
            if status != 200 or got != length:
                errors.append(f"{status} ({got} bytes, expected {length})")

    for conn in conns:  # connect before the clock starts
        conn.reader, conn.writer = await asyncio.open_connection(conn.host, conn.port)
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(client(c) for c in conns))
    elapsed = time.perf_counter() - started
    for conn in conns:
        await conn.close()
    if errors:
        raise SystemExit(f"{url}{path}: {len(errors)} bad answers, first: {errors[0]}")
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
    }


# --- the run ------------------------------------------------------------------------------


def start_server(args: list[str], log: Path, url: str) -> subprocess.Popen:
    import httpx

    out = log.open("wb")
    proc = subprocess.Popen(
        [sys.executable, *args],
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        preexec_fn=_die_with_parent,
    )

    def up() -> bool:
        if proc.poll() is not None:
            raise SystemExit(f"{args} exited:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 60, f"{args}")
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def summarise(name: str, rounds: list[dict]) -> list[str]:
    def side(key: str, stat: str) -> list[float]:
        return [r[key][stat] for r in rounds]

    ratios = [r["studio"]["rps"] / r["bare"]["rps"] for r in rounds]
    rows = []
    for key in ("studio", "bare"):
        rps, p50, p99 = side(key, "rps"), side(key, "p50"), side(key, "p99")
        rows.append(
            f"| {name} | {key} | {min(rps):,.0f} / {statistics.median(rps):,.0f} "
            f"| {min(p50) * 1000:,.1f} / {statistics.median(p50) * 1000:,.1f} "
            f"| {min(p99) * 1000:,.1f} / {statistics.median(p99) * 1000:,.1f} |"
        )
    ratio = f"{min(ratios):.2f}x / {statistics.median(ratios):.2f}x"
    rows.append(f"| {name} | studio/bare req/s | {ratio} | | |")
    return rows


async def run(args: argparse.Namespace) -> None:
    import httpx

    root = Path(tempfile.mkdtemp(prefix="ftstudio-bench-web-"))
    configure(root / "data")
    raise_fd_limit(4096)
    token, job_id = seed(args.metrics, args.jobs)
    headers = {"Authorization": f"Bearer {token}"}
    endpoints = [
        ("run page", f"/jobs/{job_id}"),
        ("metrics", f"/api/jobs/{job_id}/metrics"),
        ("jobs list", "/api/jobs"),
    ]
    studio_url = f"http://127.0.0.1:{_free_port()}"
    studio = start_server(
        ["-m", "app.cli", "web", "--port", studio_url.rsplit(":", 1)[1]],
        root / "web.log",
        studio_url,
    )
    bare = None
    try:
        captured = []
        for _, path in endpoints:
            response = httpx.get(studio_url + path, headers=headers, timeout=30)
            response.raise_for_status()
            captured.append(
                {
                    "path": path,
                    "content_type": response.headers["content-type"],
                    "body": response.content.hex(),
                }
            )
        capture_file = root / "captured.json"
        capture_file.write_text(json.dumps(captured))
        bare_url = f"http://127.0.0.1:{_free_port()}"
        bare = start_server(
            [
                str(Path(__file__).resolve()),
                "--serve-bare",
                str(capture_file),
                bare_url.rsplit(":", 1)[1],
            ],
            root / "bare.log",
            bare_url,
        )
        sides = {"studio": (studio_url, headers), "bare": (bare_url, {})}
        print(
            f"{args.clients} clients, {args.rounds} rounds of {args.seconds:.0f} s per side, "
            f"{args.metrics} metric rows, {args.jobs + 1} jobs; load {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        table = [
            "| endpoint | side | req/s min / median | p50 ms min / median | p99 ms min / median |",
            "|---|---|---|---|---|",
        ]
        for (name, path), entry in zip(endpoints, captured, strict=True):
            length = len(entry["body"]) // 2
            for url, hdrs in sides.values():  # warm both: imports, template cache, pool
                await load_round(url, path, hdrs, args.clients, 1.0, length)
            rounds = []
            for i in range(args.rounds):
                order = ("studio", "bare") if i % 2 == 0 else ("bare", "studio")
                result = {}
                for key in order:
                    url, hdrs = sides[key]
                    result[key] = await load_round(
                        url, path, hdrs, args.clients, args.seconds, length
                    )
                rounds.append(result)
                print(
                    f"  {name} round {i + 1}: "
                    + ", ".join(
                        f"{k} {v['rps']:,.0f} req/s p50 {v['p50'] * 1000:.1f} ms "
                        f"p99 {v['p99'] * 1000:.1f} ms"
                        for k, v in result.items()
                    ),
                    flush=True,
                )
            table += summarise(f"{name} ({length:,} B)", rounds)
        print()
        print("\n".join(table))
    finally:
        stop(studio)
        if bare is not None:
            stop(bare)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve-bare":
        serve_bare(Path(sys.argv[2]), int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="per round and side")
    parser.add_argument("--metrics", type=int, default=500, help="metric rows of the run")
    parser.add_argument("--jobs", type=int, default=50, help="other runs in the list")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
