"""Private Redis and Postgres servers for the fault tests, on free ports in a temporary folder,
to stop and restart mid-run. The machine's shared servers on 5432/6379 are never touched."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.jobs import wait_for
from tests.support.processes import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_USER = "postgres"  # initdb and postgres refuse to run as root


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class PrivateRedis:
    """``redis-server`` without persistence: a restart loses what it held, as a crashed cache
    node would."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.root)]
        with (self.root / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: _accepts(self.port), 20, "redis to accept connections")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        self.proc = None


class PrivatePostgres:
    """A cluster of its own (``initdb`` as the postgres user, in a folder it owns), trust
    authentication on 127.0.0.1, fsync off."""

    def __init__(self) -> None:
        # Not under pytest's tmp_path: the postgres user cannot enter root's 0700 folders.
        self.root = Path(tempfile.mkdtemp(prefix="ftstudio-faults-pg-"))
        self.data = self.root / "data"
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        done = subprocess.run(
            ["runuser", "-u", PG_USER, "--", *argv], capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}")

    def init(self) -> None:
        user = pwd.getpwnam(PG_USER)
        os.chown(self.root, user.pw_uid, user.pw_gid)
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", PG_USER,
                  "--no-sync", "--no-instructions")  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.root / "postgres.log")
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", log, "-o", options, "-w",
                  "start")  # fmt: skip

    def stop(self) -> None:
        """A fast shutdown, as a restart by an operator or an orchestrator does it: open
        connections are cut."""
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def redis_unavailable() -> str | None:
    """Why a private Redis cannot run here (None when it can)."""
    return None if shutil.which("redis-server") else "no redis-server on PATH"


def postgres_unavailable() -> str | None:
    """Why a private Postgres cannot run here (None when it can)."""
    if not (PG_BIN / "initdb").exists():
        return f"no Postgres 15 server binaries in {PG_BIN}"
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        return f"no '{PG_USER}' user to run initdb as"
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        return "starting a private Postgres needs root (to run it as the postgres user)"
    return None


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.remove()


@contextmanager
def private_redis(root: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
