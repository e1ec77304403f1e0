"""A real studio for benchmarks: migrates a temporary data directory, builds a tiny random Llama,
and runs ``ftstudio web`` (uvicorn) and ``ftstudio worker`` (Celery) as child processes that die
with the benchmark. Call ``configure`` before anything imports ``app``."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE (inherited by the server we start) as far as allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def configure(data_dir: Path) -> None:
    """Settings are read once per process: set the environment before importing ``app``."""
    os.environ["FTSTUDIO_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("FTSTUDIO_MODELS_DIR", str(REPO / ".data" / "models"))
    os.environ["FTSTUDIO_QUEUE"] = f"bench-{uuid.uuid4().hex[:8]}"
    os.environ["FTSTUDIO_SECRET_KEY"] = "bench-secret"
    os.environ.pop("FTSTUDIO_DATABASE_URL", None)
    os.environ.pop("FTSTUDIO_BROKER_URL", None)
    sys.path.insert(0, str(REPO))


def _die_with_parent() -> None:
    """Linux: a server or worker we start gets SIGTERM when this script exits, however it exits."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (not its children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def this_process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class Studio:
    root: Path
    url: str = ""
    token: str = ""
    web: subprocess.Popen | None = None
    worker: subprocess.Popen | None = None
    logs: list = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def start(self) -> None:
        from app.auth import create_token, get_or_create_user
        from app.base_models import register_model
        from app.cli import worker_command
        from app.db import session_scope
        from app.migrate import upgrade_to_head
        from app.settings import get_settings

        upgrade_to_head()
        bundled = get_settings().bundled_model_dir
        if not (bundled / ".complete").exists():
            raise SystemExit(f"the bundled model is missing at {bundled}: run `make setup` first")
        tiny = self.root / "models" / "tiny-llama"
        # torch stays out of this process (it runs the clients): build the model in a child.
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys, pathlib; from worker.tiny_model import build_tiny_llama; "
                "build_tiny_llama(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]))",
                str(bundled),
                str(tiny),
            ],
            cwd=REPO,
            check=True,
        )
        with session_scope() as session:
            register_model(session, "tiny-llama", tiny)
            user = get_or_create_user(session, "bench", admin=True)
            self.token = create_token(session, user, "bench")

        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        web_log = (self.root / "web.log").open("wb")
        worker_log = (self.root / "worker.log").open("wb")
        self.logs += [web_log, worker_log]
        self.web = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "web", "--port", str(port)],
            stdout=web_log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            preexec_fn=_die_with_parent,
        )
        self.worker = subprocess.Popen(
            worker_command(),
            stdout=worker_log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            preexec_fn=_die_with_parent,
        )

        def web_up() -> bool:
            if self.web.poll() is not None:
                raise SystemExit(f"the web server exited:\n{self._tail('web.log')}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        def worker_up() -> bool:
            if self.worker.poll() is not None:
                raise SystemExit(f"the worker exited:\n{self._tail('worker.log')}")
            return b"ready." in (self.root / "worker.log").read_bytes()

        wait_for(web_up, 60, "the web server")
        wait_for(worker_up, 120, "the worker")

    def _tail(self, name: str) -> str:
        return (self.root / name).read_text(errors="replace")[-3000:]

    def stop_worker(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.terminate()
            try:
                self.worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait()

    def stop(self) -> None:
        self.stop_worker()
        if self.web is not None and self.web.poll() is None:
            self.web.terminate()
            try:
                self.web.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.web.kill()
                self.web.wait()
        for log in self.logs:
            log.close()


# --- shared by the training benches (bench_overhead.py, bench_packing.py) ------------------


def machine_facts() -> list[str]:
    """What a figure was measured on: cores, load, library versions, date (no torch import)."""
    from datetime import datetime
    from importlib.metadata import version

    libs = ", ".join(f"{name} {version(name)}" for name in ("torch", "transformers", "trl", "peft"))
    return [
        f"date {datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"cpus {os.cpu_count()} (usable {len(os.sched_getaffinity(0))}), "
        f"loadavg {Path('/proc/loadavg').read_text().strip()}",
        f"python {sys.version.split()[0]}, {libs}",
    ]


def register_base_model(name: str, path: Path) -> None:
    """Register one more model directory in the studio's database (as ``ftstudio setup`` does)."""
    from app.base_models import register_model
    from app.db import session_scope

    with session_scope() as session:
        register_model(session, name, path)


def utc_timestamp(value) -> float:
    """A stored time as seconds since the epoch: SQLite hands back naive UTC datetimes."""
    from datetime import UTC, datetime

    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def job_metric_rows(job_id: int) -> list[dict]:
    """The job's training metric rows with the time each was written (``created_at``, which
    ``GET /api/jobs/{id}/metrics`` does not carry), from the database the worker writes to."""
    from app.db import session_scope
    from app.queries import job_metrics

    with session_scope() as session:
        return [
            {
                "step": m.step,
                "loss": m.loss,
                "num_tokens": m.num_tokens,
                "time": utc_timestamp(m.created_at),
            }
            for m in job_metrics(session, job_id)
            if m.num_tokens is not None
        ]
