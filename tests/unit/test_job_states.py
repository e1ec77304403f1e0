"""The job state machine: conditional transitions, cancel, and the reaper for lost workers."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app.db import session_scope
from app.jobs import (
    MAX_ATTEMPTS,
    PREEMPTED,
    JobAlreadyEnded,
    create_job,
    reap_job,
    reap_stale_jobs,
    request_cancel,
    transition,
)
from app.models import Dataset, Job, JobStatus, User, utcnow


@pytest.fixture
def job_id(alice, tiny_model: str) -> int:
    with session_scope() as session:
        owner = session.get(User, alice.user_id)
        dataset = Dataset(owner_id=owner.id, name="d", kind="sft", format="alpaca")
        session.add(dataset)
        session.flush()
        return create_job(session, owner, base_model=tiny_model, dataset_id=dataset.id).id


def _job(job_id: int) -> Job:
    with session_scope() as session:
        return session.get(Job, job_id)


def test_a_stale_attempt_cannot_overwrite_a_newer_one(job_id: int) -> None:
    with session_scope() as session:
        assert transition(
            session, job_id, to=JobStatus.running, from_=[JobStatus.queued], attempt=1
        )
        assert transition(
            session, job_id, to=JobStatus.queued, from_=[JobStatus.running], attempt=1, attempt_=2
        )
        # The zombie of attempt 1 finishes late: its write is refused.
        assert not transition(
            session, job_id, to=JobStatus.succeeded, from_=[JobStatus.running], attempt=1
        )
    assert (_job(job_id).status, _job(job_id).attempt) == (JobStatus.queued, 2)


def test_cancel_of_a_queued_job_is_immediate_and_final(job_id: int) -> None:
    with session_scope() as session:
        job = request_cancel(session, session.get(Job, job_id))
        assert job.status == JobStatus.cancelled and job.finished_at is not None
        assert not transition(session, job_id, to=JobStatus.running, from_=[JobStatus.queued])
        with pytest.raises(JobAlreadyEnded, match="has already cancelled"):
            request_cancel(session, job)


def test_reaper_requeues_lost_jobs_then_gives_up(job_id: int) -> None:
    with session_scope() as session:
        transition(
            session,
            job_id,
            to=JobStatus.running,
            from_=[JobStatus.queued],
            heartbeat_at=utcnow() - timedelta(minutes=5),
        )
        assert reap_stale_jobs(session, timedelta(minutes=1)) == {job_id: JobStatus.queued}
    assert (_job(job_id).status, _job(job_id).attempt) == (JobStatus.queued, 2)

    with session_scope() as session:
        for attempt in range(2, MAX_ATTEMPTS + 1):
            transition(
                session,
                job_id,
                to=JobStatus.running,
                from_=[JobStatus.queued],
                attempt=attempt,
                heartbeat_at=utcnow() - timedelta(minutes=5),
            )
            reap_stale_jobs(session, timedelta(minutes=1))
    job = _job(job_id)
    assert job.status == JobStatus.failed and "worker was lost" in job.error


def test_a_job_preempted_at_the_attempt_cap_says_so(job_id: int) -> None:
    with session_scope() as session:
        session.get(Job, job_id).attempt = MAX_ATTEMPTS
        transition(
            session, job_id, to=JobStatus.running, from_=[JobStatus.queued], attempt=MAX_ATTEMPTS
        )
        assert reap_job(session, job_id, MAX_ATTEMPTS, PREEMPTED) == {job_id: JobStatus.failed}
    error = _job(job_id).error
    assert "shut down during the run" in error and "worker was lost" not in error


def test_reaper_leaves_live_jobs_alone(job_id: int) -> None:
    with session_scope() as session:
        transition(
            session, job_id, to=JobStatus.running, from_=[JobStatus.queued], heartbeat_at=utcnow()
        )
        assert job_id not in reap_stale_jobs(session, timedelta(minutes=1))
