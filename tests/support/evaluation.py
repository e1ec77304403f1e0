"""Datasets and checkpoint rows for the evaluation tests."""

from __future__ import annotations

from app.auth import get_or_create_user
from app.db import session_scope
from app.jobs import create_job
from app.models import Checkpoint
from tests.support.accounts import Account
from tests.support.datasets import COLOURS, PAIRS

TEXT_ROWS = [{"text": f"The {colour} flower grew."} for colour in COLOURS]
PROMPTS_WITHOUT_REFERENCE = [{"prompt": pair["prompt"]} for pair in PAIRS]


def fake_run(
    account: Account, model: str, dataset_id: int, method: str = "sft"
) -> tuple[int, list[int]]:
    """A job row with checkpoint rows at steps 1, 2, 3 (nothing trained: for requests and
    tables only); the job's id and its checkpoints' ids."""
    with session_scope() as session:
        user = get_or_create_user(session, account.name)
        job = create_job(
            session, user, base_model=model, dataset_id=dataset_id, method=method, name=method
        )
        checkpoints = [
            Checkpoint(job_id=job.id, step=step, is_final=step == 3, path=f"{job.id}/x{step}")
            for step in (1, 2, 3)
        ]
        session.add_all(checkpoints)
        session.flush()
        return job.id, [c.id for c in checkpoints]
