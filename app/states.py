"""One guarded way to move a work item's status: jobs, exports, evaluations, comparisons and
generations all change state through ``move`` (or ``move_where`` for several rows at once).

A move is one conditional UPDATE: it applies only while the row is still in one of the
expected statuses (and, for jobs, at the expected attempt). A zombie worker, a late duplicate
delivery or a finished child process therefore can never overwrite a newer state: its write
matches no row and the caller learns so from the False it gets back. The caller's layer (the
request's session, or the task's ``session_scope``) commits.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, update
from sqlalchemy.orm import Session

from app.models import (
    Comparison,
    Evaluation,
    Export,
    ExportStatus,
    Generation,
    Job,
    JobStatus,
    utcnow,
)

Status = JobStatus | ExportStatus
WorkItem = type[Job] | type[Export] | type[Evaluation] | type[Comparison] | type[Generation]

ACTIVE = (JobStatus.queued, JobStatus.running)
ENDED = frozenset({"succeeded", "failed", "cancelled"})


def move(
    session: Session,
    model: WorkItem,
    ident: int,
    *,
    to: Status | None,
    from_: Status | Iterable[Status],
    attempt: int | None = None,
    **values: Any,
) -> bool:
    """Move item ``ident`` to ``to`` if it is still in ``from_`` (and at ``attempt``, for jobs),
    writing ``values`` with it; True when it moved. ``to=None`` writes ``values`` under the same
    guard without changing the status (a heartbeat, streamed text). ``attempt_`` writes a new
    attempt number (``attempt`` is the guard)."""
    moved = move_where(
        session, model, model.id == ident, to=to, from_=from_, attempt=attempt, **values
    )
    return moved == 1


def move_where(
    session: Session,
    model: WorkItem,
    *where: ColumnElement[bool],
    to: Status | None,
    from_: Status | Iterable[Status],
    attempt: int | None = None,
    **values: Any,
) -> int:
    """``move`` for every row matching ``where``; returns how many moved."""
    statuses = [from_] if isinstance(from_, enum.Enum) else list(from_)
    if "attempt_" in values:
        values["attempt"] = values.pop("attempt_")
    if to is not None:
        values = {**_stamps(model, to), **values, "status": to}
    if hasattr(model, "updated_at"):
        values.setdefault("updated_at", utcnow())
    stmt = update(model).where(*where, model.status.in_(statuses))
    if attempt is not None:
        stmt = stmt.where(model.attempt == attempt)  # type: ignore[union-attr]
    result = session.execute(stmt.values(**values).execution_options(synchronize_session=False))
    return result.rowcount  # type: ignore[attr-defined]


def _stamps(model: WorkItem, to: Status) -> dict[str, Any]:
    """The times a move records: started on running, finished on an end state."""
    if to == JobStatus.running and hasattr(model, "started_at"):
        return {"started_at": utcnow()}
    if to.value in ENDED and hasattr(model, "finished_at"):
        return {"finished_at": utcnow()}
    return {}
