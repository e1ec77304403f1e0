"""Queued items whose message the broker no longer holds are sent again.

A message goes missing two ways: Redis restarts without persistence (it comes back empty, and
every queued job, export, evaluation, comparison and playground turn in the database waits for
a message that will never come), or a send of the worker's own (the requeue of a lost or
preempted job) finds Redis down. So every queued item is sent again, when a worker starts and
at each reap, if Redis lost its mark (``app.broker.broker_lost_messages``) or a send of this
worker failed since the last one. (A worker that died with a failed send of its own leaves
that job queued until Redis next loses its mark; cancelling and resuming it sends it again.)

A duplicate message is harmless: every task takes its item with a conditional move (queued to
running), so one delivery runs it and the others skip.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import broker
from app.db import session_scope
from app.models import Comparison, Evaluation, Export, ExportStatus, Generation, Job, JobStatus
from app.states import Status, WorkItem

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_unsent = False


def note_unsent() -> None:
    """A send of this worker failed: send everything queued again at the next reap."""
    global _unsent
    with _lock:
        _unsent = True


def redispatch_if_lost() -> int:
    """Send every queued item again if Redis lost its messages or a send of ours failed;
    how many were sent (0 while Redis is still down: the next reap tries again)."""
    global _unsent
    try:
        lost = broker.broker_lost_messages()
    except broker.BROKER_ERRORS:
        return 0
    with _lock:
        due, _unsent = lost or _unsent, False
    if not due:
        return 0
    logger.warning("the broker lost messages or a send failed: sending every queued item again")
    return redispatch_queued()


def redispatch_queued() -> int:
    """Send every queued item's task again; how many were sent. A send that fails leaves the
    rest for the next reap."""
    try:
        return _send_all()
    except broker.BrokerUnavailable:
        note_unsent()
        return 0


def _send_all() -> int:
    with session_scope() as session:
        jobs = session.scalars(select(Job).where(Job.status == JobStatus.queued)).all()
        for job in jobs:
            broker.enqueue_job(job)
        others = [
            (broker.enqueue_export, _queued(session, Export, ExportStatus.queued)),
            (broker.enqueue_evaluation, _queued(session, Evaluation, JobStatus.queued)),
            (broker.enqueue_comparison, _queued(session, Comparison, JobStatus.queued)),
            # a comparison's answers are its own task's; a playground turn has a task of its own
            (broker.enqueue_generation, _queued(session, Generation, JobStatus.queued)),
        ]
        sent = len(jobs)
        for send, ids in others:
            for ident in ids:
                send(ident)
            sent += len(ids)
    return sent


def _queued(session: Session, model: WorkItem, status: Status) -> list[int]:
    where = [model.status == status]
    if model is Generation:
        where.append(Generation.comparison_id.is_(None))
    return list(session.scalars(select(model.id).where(*where)))
