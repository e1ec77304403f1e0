"""Static checks of the production deployment files (docker-compose.yml, Dockerfile).

Nothing here starts Docker: the compose file is parsed with PyYAML and cross-checked against the
CLI's declared subcommands and the Settings fields. App code is imported inside the tests only.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

SERVICES = {"postgres", "redis", "migrate", "web", "worker"}
APP_SERVICES = {"migrate", "web", "worker"}


@pytest.fixture(scope="module")
def compose() -> dict:
    assert COMPOSE.is_file(), "docker-compose.yml is missing"
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def _cli_subcommands() -> set[str]:
    from app.cli import build_parser

    parser = build_parser()
    names: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            names.update(action.choices)
    assert names, "build_parser() declares no subcommands"
    return names


def _as_argv(command) -> list[str]:
    if isinstance(command, str):
        return shlex.split(command)
    assert isinstance(command, list), f"unexpected command form: {command!r}"
    return [str(part) for part in command]


def _depends_on(service: dict) -> dict:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):  # short form: no conditions
        return {name: {} for name in deps}
    return deps


def test_services_exist(compose):
    assert set(compose["services"]) >= SERVICES


def test_worker_reserves_nvidia_gpus(compose):
    worker = compose["services"]["worker"]
    devices = (
        worker.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices") or []
    )
    assert any(
        dev.get("driver") == "nvidia" and "gpu" in (dev.get("capabilities") or [])
        for dev in devices
    ), f"worker has no nvidia GPU reservation: {devices!r}"


def test_healthchecks_have_a_test(compose):
    for name, service in compose["services"].items():
        if "healthcheck" in service:
            test = (service["healthcheck"] or {}).get("test")
            assert test, f"{name}: healthcheck without a test"
            if isinstance(test, list):
                assert test[0] in {"CMD", "CMD-SHELL", "NONE"}, f"{name}: bad healthcheck {test!r}"
                assert len(test) > 1 or test[0] == "NONE", f"{name}: empty healthcheck {test!r}"
    # The ones the rest of the stack waits on.
    for name in ("postgres", "redis", "web"):
        assert "healthcheck" in compose["services"][name], f"{name} has no healthcheck"


def test_migrate_runs_first(compose):
    services = compose["services"]
    assert str(services["migrate"].get("restart", "no")) == "no"
    assert (
        _depends_on(services["migrate"]).get("postgres", {}).get("condition") == "service_healthy"
    )
    for name in ("web", "worker"):
        deps = _depends_on(services[name])
        assert deps.get("migrate", {}).get("condition") == "service_completed_successfully", name
        assert deps.get("redis", {}).get("condition") == "service_healthy", name


def test_web_and_worker_share_the_data_volume(compose):
    assert "studio-data" in (compose.get("volumes") or {})
    for name in APP_SERVICES:
        volumes = compose["services"][name].get("volumes") or []
        targets = {
            v.split(":")[1] if isinstance(v, str) else v.get("target")
            for v in volumes
            if (v.split(":")[0] if isinstance(v, str) else v.get("source")) == "studio-data"
        }
        assert "/data" in targets, f"{name} does not mount studio-data at /data"


def test_app_commands_use_declared_subcommands(compose):
    subcommands = _cli_subcommands()
    for name in APP_SERVICES:
        service = compose["services"][name]
        assert "command" in service, f"{name} has no command"
        argv = _as_argv(service["command"])
        assert argv[0] == "ftstudio", f"{name}: command does not start with ftstudio: {argv!r}"
        assert len(argv) > 1 and argv[1] in subcommands, (
            f"{name}: {argv[1:2]!r} is not a CLI subcommand (declared: {sorted(subcommands)})"
        )


def test_compose_env_vars_are_settings_fields(compose):
    from app.settings import Settings

    fields = set(Settings.model_fields)
    text = COMPOSE.read_text()
    names = set(re.findall(r"\bFTSTUDIO_[A-Z0-9_]+\b", text))
    for service in compose["services"].values():
        env = service.get("environment") or {}
        if isinstance(env, list):
            names.update(item.split("=", 1)[0] for item in env)
        else:
            names.update(env)
    names = {n for n in names if n.startswith("FTSTUDIO_")}
    assert names, "compose file sets no FTSTUDIO_* variables"
    unknown = sorted(n for n in names if n.removeprefix("FTSTUDIO_").lower() not in fields)
    assert not unknown, f"not fields of Settings: {unknown}"


def _dockerfile_cmd() -> list[str]:
    # Join continuation lines, then take the last CMD (the one that counts).
    text = re.sub(r"\\\s*\n", " ", DOCKERFILE.read_text())
    cmds = [
        line.strip()[3:].strip()
        for line in text.splitlines()
        if re.match(r"\s*CMD\s", line, flags=re.IGNORECASE)
    ]
    assert cmds, "Dockerfile has no CMD"
    raw = cmds[-1]
    return json.loads(raw) if raw.startswith("[") else shlex.split(raw)


def test_dockerfile_default_cmd_is_web():
    assert DOCKERFILE.is_file(), "Dockerfile is missing"
    argv = _dockerfile_cmd()
    assert argv[:2] == ["ftstudio", "web"], argv
    assert "web" in _cli_subcommands()


def _worker_services(compose: dict) -> dict[str, dict]:
    return {
        name: service
        for name, service in compose["services"].items()
        if _as_argv(service.get("command") or ["-"])[1:2] == ["worker"]
    }


def test_workers_own_their_devices(compose):
    """Every worker says which devices it owns (a valid --devices value); the default worker
    takes them all, the per-GPU examples one each, and no two per-GPU workers share one."""
    from app.worker_registry import parse_devices

    workers = _worker_services(compose)
    assert "worker" in workers and len(workers) >= 3, sorted(workers)
    owned: dict[int, str] = {}
    for name, service in workers.items():
        env = service.get("environment") or {}
        assert isinstance(env, dict), f"{name}: environment as a mapping, please"
        value = str(env.get("FTSTUDIO_WORKER_DEVICES", ""))
        assert value, f"{name}: no FTSTUDIO_WORKER_DEVICES"
        plan = parse_devices(value)
        # the merged environment still carries the shared settings
        assert env.get("FTSTUDIO_DATABASE_URL") and env.get("FTSTUDIO_DATA_DIR") == "/data", name
        if name == "worker":
            assert plan.mode == "auto"
            assert not service.get("profiles"), "the default worker must start by default"
            continue
        assert plan.mode == "indices", f"{name}: {value!r}"
        assert service.get("profiles"), f"{name}: an example must not start by default"
        for index in plan.indices:
            assert index not in owned, f"{name} and {owned[index]} both own GPU {index}"
            owned[index] = name
    assert sorted(owned) == list(range(len(owned))), owned


def test_workers_have_time_to_checkpoint_when_stopped(compose):
    """SIGTERM checkpoints and requeues the run (worker.training.preemption): the grace before
    Docker's SIGKILL must be long enough to save."""
    workers = [name for name in compose["services"] if name.startswith("worker")]
    assert workers
    for name in workers:
        grace = compose["services"][name].get("stop_grace_period", "10s")
        assert grace.endswith("m") and int(grace[:-1]) >= 2, (name, grace)
