"""The ftstudio command as a user runs it."""

from __future__ import annotations

import subprocess
import sys

from app.cli import build_parser


def _ftstudio(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )


def test_token_create_prints_a_working_token_last(client) -> None:
    result = _ftstudio("token", "create", "--user", "dave")
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("fts_")
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/jobs", headers=headers).status_code == 200
    assert (
        client.post("/api/models", headers=headers, json={"name": "x", "path": "/"}).status_code
        == 403
    )


def test_admin_token_can_register_models(client, bundled_model_dir) -> None:
    token = (
        _ftstudio("token", "create", "--user", "erin", "--admin").stdout.strip().splitlines()[-1]
    )
    headers = {"Authorization": f"Bearer {token}"}
    response = client.post(
        "/api/models", headers=headers, json={"name": "smol", "path": str(bundled_model_dir)}
    )
    assert response.status_code == 201
    assert "smol" in [m["name"] for m in client.get("/api/models", headers=headers).json()]
    bad = client.post("/api/models", headers=headers, json={"name": "bad", "path": "/tmp"})
    assert bad.status_code == 422 and "config.json" in bad.json()["detail"]


def test_up_and_web_take_host_and_port() -> None:
    args = build_parser().parse_args(["up", "--host", "0.0.0.0", "--port", "8123"])
    assert (args.host, args.port) == ("0.0.0.0", 8123)
