"""`ftstudio token create|list|revoke`, `up`'s admin token kept instead of minted at every start,
and the data dir readable by the studio's user alone: real subprocesses on a fresh data dir."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path


def _ftstudio(data_dir: Path, *args: str) -> str:
    env = {**os.environ, "FTSTUDIO_DATA_DIR": str(data_dir), "FTSTUDIO_DATABASE_URL": ""}
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", *args], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_tokens_are_listed_revoked_and_files_are_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _ftstudio(data, "migrate")
    out = _ftstudio(data, "token", "create", "--user", "gina", "--expires-days", "2")
    token = out.strip().splitlines()[-1]
    assert token.startswith("fts_")
    (line,) = [row for row in _ftstudio(data, "token", "list").splitlines() if "\tgina\t" in row]
    token_id = line.split("\t")[0]
    assert "expires 20" in line and token not in line
    _ftstudio(data, "token", "revoke", token_id)
    assert "\tgina\t" not in _ftstudio(data, "token", "list")

    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "studio.db").stat().st_mode) == 0o600


def test_up_reuses_its_admin_token(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _ftstudio(data, "migrate")
    env = {**os.environ, "FTSTUDIO_DATA_DIR": str(data), "FTSTUDIO_DATABASE_URL": ""}
    code = "from app.cli import admin_token, private_umask; private_umask(); print(admin_token())"
    first, second = (
        subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    )
    assert first == second and first.startswith("fts_")
    assert stat.S_IMODE((data / "admin_token").stat().st_mode) == 0o600
    admins = [row for row in _ftstudio(data, "token", "list").splitlines() if "ftstudio up" in row]
    assert len(admins) == 1
