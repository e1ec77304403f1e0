"""The queue and the workers: which jobs wait in what order, and which workers are online.

Pure domain code over the database (no web types); what the caller may not see of other
users' jobs is hidden here (positions counted, names and ids left out).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Job, JobStatus, User
from app.queries import queued_jobs


def queue_entries(session: Session, user: User) -> list[dict[str, Any]]:
    """Queued jobs in the order the workers take them; the caller's with details, others
    counted only (their position matters, their names are not the caller's to see)."""
    entries = []
    for position, job in enumerate(queued_jobs(session), start=1):
        if job.owner_id == user.id:
            entries.append(
                {
                    "position": position,
                    "id": job.id,
                    "name": job.name,
                    "method": job.method,
                    "created_at": job.created_at.isoformat(),
                }
            )
    return entries


def queue_position(session: Session, job: Job) -> int | None:
    if job.status != JobStatus.queued:
        return None
    for position, queued in enumerate(queued_jobs(session), start=1):
        if queued.id == job.id:
            return position
    return None


def workers_from_database(session: Session, stale_after_seconds: float) -> list[dict[str, Any]]:
    """Workers as the database knows them: the hosts that ran jobs, their current job and last
    heartbeat; a worker with a running job whose heartbeat is old is marked stalled."""
    now = datetime.now(UTC)
    jobs = session.scalars(
        select(Job).where(Job.worker.is_not(None)).order_by(Job.started_at.desc(), Job.id.desc())
    ).all()
    workers: dict[str, dict[str, Any]] = {}
    for job in jobs:
        name = job.worker or ""
        entry = workers.setdefault(
            name,
            {
                "name": name,
                "current_job": None,
                "heartbeat_at": None,
                "last_seen": None,
                "stalled": False,
                "queues": [],
            },
        )
        beat = job.heartbeat_at or job.finished_at or job.started_at
        if beat is not None and beat.tzinfo is None:
            beat = beat.replace(tzinfo=UTC)
        if beat is not None and (entry["last_seen"] is None or beat > entry["last_seen"]):
            entry["last_seen"] = beat
        if job.status == JobStatus.running and entry["current_job"] is None:
            entry["current_job"] = job.id
            entry["heartbeat_at"] = beat
            entry["stalled"] = beat is None or (now - beat).total_seconds() > stale_after_seconds
    result = []
    for entry in workers.values():
        last = entry["last_seen"]
        entry["online"] = bool(entry["current_job"]) and not entry["stalled"]
        entry["last_seen"] = last.isoformat() if last else None
        entry["heartbeat_at"] = entry["heartbeat_at"].isoformat() if entry["heartbeat_at"] else None
        result.append(entry)
    return result


def workers_from_celery(celery: Any, timeout: float = 1.0) -> list[dict[str, Any]] | None:
    """Workers answering a Celery broadcast, or None when the broker has no broadcast."""
    try:
        inspect = celery.control.inspect(timeout=timeout)
        ping = inspect.ping() or {}
        if not ping:
            return None
        queues = inspect.active_queues() or {}
        active = inspect.active() or {}
    except Exception:
        return None
    workers = []
    for name in sorted(ping):
        tasks = active.get(name) or []
        current = None
        for task in tasks:
            args = task.get("args") or []
            if task.get("name") == "worker.tasks.run_job" and args:
                current = args[0]
        workers.append(
            {
                "name": name,
                "online": True,
                "stalled": False,
                "queues": [q.get("name") for q in queues.get(name) or []],
                "current_job": current,
                "active_tasks": len(tasks),
            }
        )
    return workers


def hide_others_jobs(session: Session, user: User, workers: list[dict[str, Any]]) -> None:
    """A worker's current job is shown by id only to its owner; others see the worker busy."""
    ids = [w["current_job"] for w in workers if isinstance(w.get("current_job"), int)]
    mine = set(session.scalars(select(Job.id).where(Job.id.in_(ids), Job.owner_id == user.id)))
    for worker in workers:
        worker["busy"] = worker.get("current_job") is not None
        if worker.get("current_job") not in mine:
            worker["current_job"] = None
