"""A second, private studio for the fault tests: its own data folder, database and broker (the
embedded ones, or private servers), its own web server and worker, reached over HTTP. Faults
that would break the test session's own studio (a database restart, a full artifacts disk)
are injected here."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.accounts import Account
from tests.support.processes import REPO, running_web, running_worker

# Run in the studio's environment: its database migrated, the tiny model registered, an admin
# account with a token (printed).
SET_UP = """
import sys
from pathlib import Path
from app.base_models import register_model
from app.db import session_scope
from app.migrate import upgrade_to_head
from tests.support.accounts import make_account
upgrade_to_head()
with session_scope() as session:
    register_model(session, "tiny-llama", Path(sys.argv[1]))
account = make_account("faults", admin=True)
print(account.token, account.user_id)
"""


@dataclass
class Studio:
    url: str
    client: httpx.Client
    account: Account
    data_dir: Path
    env: dict[str, str]
    logs: Path
    worker: subprocess.Popen | None = None

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def exports_dir(self) -> Path:
        return self.data_dir / "exports"


def studio_environment(data_dir: Path, database_url: str = "", broker_url: str = "") -> dict:
    """The FTSTUDIO_* settings of a studio in ``data_dir`` (empty URLs: embedded)."""
    return {
        **os.environ,
        "FTSTUDIO_DATA_DIR": str(data_dir),
        "FTSTUDIO_DATABASE_URL": database_url,
        "FTSTUDIO_BROKER_URL": broker_url,
        "FTSTUDIO_QUEUE": f"faults-{uuid.uuid4().hex[:8]}",
        "FTSTUDIO_HEARTBEAT_SECONDS": "1",
    }


def set_up(env: dict[str, str], model_path: Path) -> Account:
    done = subprocess.run(
        [sys.executable, "-c", SET_UP, str(model_path)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    token, user_id = done.stdout.split()[-2:]
    return Account("faults", token, int(user_id))


@contextmanager
def private_studio(root: Path, model_path: Path, **urls: str) -> Iterator[Studio]:
    """A studio in ``root`` (``database_url`` / ``broker_url``: its servers), web and worker
    running; stopped when the block ends. The caller prepares ``root/data`` (mounts) first."""
    data_dir = root / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    env = studio_environment(data_dir, **urls)
    account = set_up(env, model_path)
    with ExitStack() as stack:
        url = stack.enter_context(running_web(root / "web.log", env))
        client = stack.enter_context(httpx.Client(base_url=url, timeout=30))
        studio = Studio(url, client, account, data_dir, env, root)
        studio.worker = stack.enter_context(running_worker(root / "worker.log", env))
        yield studio
