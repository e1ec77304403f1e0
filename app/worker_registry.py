"""The workers' registry: each worker writes what it owns and does (its heartbeat), the web reads
it for ``GET /api/workers`` and the Workers page.

Pure domain code over the database, no torch: the worker detects its devices
(``worker.registration``) and hands them here as plain dicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Job, User, Worker, utcnow

AUTO, CPU = "auto", "cpu"


@dataclass(frozen=True)
class DevicePlan:
    """What ``--devices`` asked for: ``auto``, ``cpu`` or CUDA indices."""

    mode: str  # "auto" | "cpu" | "indices"
    indices: tuple[int, ...] = ()

    def cuda_visible_devices(self) -> str | None:
        """The CUDA_VISIBLE_DEVICES its processes get: None (unchanged) for auto, "" for cpu."""
        if self.mode == AUTO:
            return None
        return ",".join(str(i) for i in self.indices)


def parse_devices(value: str) -> DevicePlan:
    """``auto``, ``cpu``, ``0`` or ``0,1,...`` (distinct, non-negative); ValueError otherwise."""
    text = value.strip().lower()
    if text in (AUTO, CPU):
        return DevicePlan(text)
    parts = [part.strip() for part in text.split(",")]
    if not parts or not all(part.isdigit() for part in parts):
        raise ValueError(
            f"--devices {value!r}: expected auto, cpu, or CUDA device indices such as 0 or 0,1"
        )
    indices = tuple(int(part) for part in parts)
    if len(set(indices)) != len(indices):
        raise ValueError(f"--devices {value!r} names a device twice")
    return DevicePlan("indices", indices)


def share_out(gpu_count: int, per_worker: int) -> list[str]:
    """How ``ftstudio up`` shares a host's GPUs among workers: the ``--devices`` of each. One
    group of ``per_worker`` GPUs per worker (the last may be smaller); ``per_worker`` 0, or no
    GPU, gives one worker with the configured devices (None)."""
    if per_worker <= 0 or gpu_count <= 0:
        return []
    return [
        ",".join(str(i) for i in range(start, min(start + per_worker, gpu_count)))
        for start in range(0, gpu_count, per_worker)
    ]


def heartbeat(
    session: Session,
    name: str,
    *,
    host: str,
    device_class: str,
    devices: list[dict[str, Any]],
    max_devices: int = 1,
    busy: bool,
    job_id: int | None,
    started: bool = False,
) -> None:
    """Insert or update the worker's row (one writer per name: the worker itself)."""
    row = session.scalar(select(Worker).where(Worker.name == name))
    now = utcnow()
    if row is None:
        row = Worker(name=name, started_at=now)
        session.add(row)
    elif started:
        row.started_at = now
    row.host, row.device_class, row.devices = host, device_class, devices
    row.max_devices = max_devices
    row.busy, row.job_id, row.last_seen, row.stopped_at = busy, job_id, now, None
    session.flush()


def stopped(session: Session, name: str) -> None:
    """A clean shutdown: the worker is offline at once, not after its heartbeat goes stale."""
    row = session.scalar(select(Worker).where(Worker.name == name))
    if row is not None:
        row.stopped_at, row.busy, row.job_id = utcnow(), False, None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def is_online(row: Worker, stale_after_seconds: float, now: datetime | None = None) -> bool:
    """Running and beating: not shut down, and seen within ``stale_after_seconds``."""
    now = now or datetime.now(UTC)
    fresh = now - _aware(row.last_seen) <= timedelta(seconds=stale_after_seconds)
    return row.stopped_at is None and fresh


def workers_view(session: Session, user: User, stale_after_seconds: float) -> list[dict[str, Any]]:
    """Every registered worker, online first: its devices, busy state and job. Another user's
    job id is hidden (the worker shows busy only)."""
    now = datetime.now(UTC)
    rows = session.scalars(select(Worker).order_by(Worker.name)).all()
    job_ids = [row.job_id for row in rows if row.job_id is not None]
    mine = set(session.scalars(select(Job.id).where(Job.id.in_(job_ids), Job.owner_id == user.id)))
    result = []
    for row in rows:
        last_seen = _aware(row.last_seen)
        fresh = now - last_seen <= timedelta(seconds=stale_after_seconds)
        online = is_online(row, stale_after_seconds, now)
        busy = bool(row.busy) and online
        result.append(
            {
                "name": row.name,
                "host": row.host,
                "online": online,
                "devices": [
                    {
                        "index": device.get("index"),
                        "name": device.get("name"),
                        "memory_bytes": device.get("memory_bytes"),
                    }
                    for device in row.devices or []
                ],
                "device_class": row.device_class,
                "busy": busy,
                "job_id": row.job_id if busy and row.job_id in mine else None,
                # a worker that said it was busy, then stopped beating without shutting down
                "stalled": bool(row.busy) and row.stopped_at is None and not fresh,
                "last_seen": last_seen.isoformat(),
                "started_at": _aware(row.started_at).isoformat(),
            }
        )
    result.sort(key=lambda w: (not w["online"], w["name"]))
    return result
