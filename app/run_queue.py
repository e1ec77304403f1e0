"""The queue: which jobs wait in what order (the workers are in ``app.worker_registry``).

Pure domain code over the database (no web types); what the caller may not see of other
users' jobs is hidden here (positions counted, names and ids left out).
"""

from __future__ import annotations

from typing import Any

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
