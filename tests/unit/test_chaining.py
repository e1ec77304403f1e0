"""Chaining and resume rules without training: which parent checkpoints a run may start from
(422 with the reason otherwise), when a job may resume (and what resuming resets), the reaper's
resume, and what the job page and job form show. Real database rows and checkpoint directories;
the worker tests (tests/worker/test_chaining.py) train for real."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from app.base_models import register_model
from app.chaining import TRAINER_STATE
from app.db import session_scope
from app.jobs import ResumeRefused, create_job, reap_stale_jobs, resume_job, transition
from app.methods import next_stage_methods
from app.models import (
    BaseModel,
    Checkpoint,
    Job,
    JobEvent,
    JobStatus,
    Metric,
    User,
    utcnow,
)
from app.settings import get_settings
from tests.conftest import Account
from tests.support.datasets import upload_rows
from tests.support.html import page as logged_in_page

PAIR = {
    "prompt": [{"role": "user", "content": "Say hi."}],
    "chosen": [{"role": "assistant", "content": "Hi!"}],
    "rejected": [{"role": "assistant", "content": "No."}],
}


def upload_one(client, account: Account, kind: str, row: dict) -> int:
    return upload_rows(client, account, kind, [row])


@pytest.fixture(scope="module")
def datasets(client, alice: Account) -> dict[str, int]:
    return {
        "sft": upload_one(client, alice, "sft", {"instruction": "Say hi.", "output": "Hi!"}),
        "preference": upload_one(client, alice, "preference", PAIR),
    }


def _jobs_dir() -> Path:
    return get_settings().jobs_dir


def make_job(
    account: Account,
    dataset_id: int,
    *,
    method: str = "sft",
    adapter: str = "lora",
    status: JobStatus = JobStatus.succeeded,
    steps: tuple[int, ...] = (),
    final: bool = True,
    complete: bool = True,
    parent_checkpoint_id: int | None = None,
) -> tuple[int, dict[int, int]]:
    """A job row in ``status`` with checkpoint rows and directories at ``steps`` (intermediate,
    with trainer state when ``complete``) and a final one; returns (job id, {step: id})."""
    with session_scope() as session:
        owner = session.get(User, account.user_id)
        job = create_job(
            session,
            owner,
            base_model="tiny-llama",
            dataset_id=dataset_id,
            method=method,
            adapter=adapter,
            parent_checkpoint_id=parent_checkpoint_id,
        )
        job.status = status
        checkpoints = {}
        for step in steps:
            checkpoints[step] = _checkpoint(session, job, step, complete=complete)
        if final:
            checkpoints[max(steps, default=0) + 1] = _checkpoint(session, job, 0, final=True)
        return job.id, checkpoints


def _checkpoint(session, job: Job, step: int, *, final: bool = False, complete: bool = True) -> int:
    rel = f"{job.id}/output/{'final' if final else f'checkpoint-{step}'}"
    directory = _jobs_dir() / rel
    directory.mkdir(parents=True)
    (directory / "adapter_config.json").write_text("{}")
    if complete and not final:
        (directory / TRAINER_STATE).write_text(json.dumps({"global_step": step}))
    checkpoint = Checkpoint(job_id=job.id, step=step, is_final=final, path=rel)
    session.add(checkpoint)
    session.flush()
    return checkpoint.id


def _final(checkpoints: dict[int, int]) -> int:
    return checkpoints[max(checkpoints)]


def _estimate(client, account: Account, **body) -> tuple[int, dict]:
    response = client.post("/api/jobs/estimate", headers=account.headers, json=body)
    return response.status_code, response.json()


def _parent_error(client, account: Account, **body) -> str:
    status, data = _estimate(client, account, **body)
    assert status == 422, data
    errors = [e for e in data["detail"] if e["loc"] == ["parent_checkpoint_id"]]
    assert errors, data
    return errors[0]["msg"]


def test_a_run_may_start_from_an_owned_ended_compatible_checkpoint(
    client, alice: Account, bob: Account, tiny_model: str, datasets: dict[str, int]
) -> None:
    _, sft = make_job(alice, datasets["sft"])
    parent = _final(sft)
    dpo = {"dataset_id": datasets["preference"], "method": "dpo", "parent_checkpoint_id": parent}
    # Without base_model, the parent's is used; with it, it must be the same one.
    assert _estimate(client, alice, **dpo)[0] == 200
    assert _estimate(client, alice, base_model=tiny_model, **dpo)[0] == 200
    with session_scope() as session:
        copy = register_model(
            session,
            "tiny-llama-copy",
            Path(session.scalar(select(BaseModel.path).where(BaseModel.name == tiny_model))),
        )
        copy_id = copy.id
    assert "must use that base model" in _parent_error(client, alice, base_model=copy_id, **dpo)

    # Another user's checkpoint does not exist for bob; a missing one neither.
    bob_dataset = upload_one(client, bob, "preference", PAIR)
    bob_body = {**dpo, "dataset_id": bob_dataset}
    assert _parent_error(client, bob, **bob_body) == f"no checkpoint {parent}"
    assert "no checkpoint" in _parent_error(client, alice, **{**dpo, "parent_checkpoint_id": 10**6})

    # The stored job records its parent (create_job; the API test enqueues real ones).
    with session_scope() as session:
        owner = session.get(User, alice.user_id)
        job = create_job(session, owner, base_model=None, **dpo)
        assert (job.parent_checkpoint_id, job.base_model.name) == (parent, tiny_model)
        session.rollback()


@pytest.mark.parametrize(
    ("parent", "child_method", "reason"),
    [
        ({"adapter": "prefix"}, "dpo", "virtual tokens"),
        ({"adapter": "prompt"}, "sft", "virtual tokens"),
        ({"method": "reward"}, "dpo", "reward model"),
        ({"status": JobStatus.running}, "dpo", "still running"),
        ({"status": JobStatus.queued}, "dpo", "still queued"),
    ],
)
def test_incompatible_parents_are_refused_with_the_reason(
    client, alice: Account, datasets: dict[str, int], parent: dict, child_method: str, reason: str
) -> None:
    kind = "preference" if parent.get("method") == "reward" else "sft"
    _, checkpoints = make_job(alice, datasets[kind], **parent)
    kind = "preference" if child_method != "sft" else "sft"
    body = {
        "dataset_id": datasets[kind],
        "method": child_method,
        "parent_checkpoint_id": _final(checkpoints),
    }
    assert reason in _parent_error(client, alice, **body)


def test_a_reward_model_chains_only_into_reward_and_gone_files_are_refused(
    client, alice: Account, datasets: dict[str, int]
) -> None:
    _, reward = make_job(alice, datasets["preference"], method="reward")
    body = {"dataset_id": datasets["preference"], "parent_checkpoint_id": _final(reward)}
    assert _estimate(client, alice, method="reward", **body)[0] == 200
    assert next_stage_methods("reward") == ["reward"]
    assert next_stage_methods("sft")[0] == "dpo" and next_stage_methods("pretrain")[0] == "sft"

    _, sft = make_job(alice, datasets["sft"])
    with session_scope() as session:
        path = session.get(Checkpoint, _final(sft)).path
    (_jobs_dir() / path / "adapter_config.json").unlink()
    (_jobs_dir() / path).rmdir()
    body = {"dataset_id": datasets["sft"], "parent_checkpoint_id": _final(sft)}
    assert "files of checkpoint" in _parent_error(client, alice, **body)


def _resume(job_id: int) -> Job:
    with session_scope() as session:
        return resume_job(session, session.get(Job, job_id), _jobs_dir())


def test_resume_needs_a_failed_or_cancelled_job_with_a_complete_checkpoint(
    alice: Account, datasets: dict[str, int]
) -> None:
    refusals = {
        "succeeded": make_job(alice, datasets["sft"], steps=(2,))[0],
        "no checkpoint": make_job(alice, datasets["sft"], status=JobStatus.cancelled, final=False)[
            0
        ],
        "incomplete": make_job(
            alice,
            datasets["sft"],
            status=JobStatus.failed,
            steps=(2,),
            final=False,
            complete=False,
        )[0],
    }
    for what, job_id in refusals.items():
        expected = "only a failed or cancelled" if what == "succeeded" else "no complete checkpoint"
        with pytest.raises(ResumeRefused, match=expected):
            _resume(job_id)


def test_resume_requeues_a_new_attempt_from_the_last_complete_checkpoint(
    alice: Account, datasets: dict[str, int]
) -> None:
    job_id, checkpoints = make_job(
        alice, datasets["sft"], status=JobStatus.cancelled, steps=(2, 4), final=False
    )
    with session_scope() as session:
        job = session.get(Job, job_id)
        job.cancel_requested, job.error, job.step, job.finished_at = True, "x", 5, utcnow()
        session.add_all(Metric(job_id=job_id, step=s, loss=1.0 / s) for s in range(1, 6))
    job = _resume(job_id)
    assert (job.status, job.attempt, job.step) == (JobStatus.queued, 2, 4)
    assert job.resume_checkpoint_id == checkpoints[4]
    assert not job.cancel_requested and job.error is None and job.finished_at is None
    with session_scope() as session:
        steps = session.scalars(select(Metric.step).where(Metric.job_id == job_id)).all()
        event = session.scalar(select(JobEvent).where(JobEvent.job_id == job_id))
        assert sorted(steps) == [1, 2, 3, 4]  # step 5 is logged again by the resumed run
        assert (event.kind, event.step) == ("resumed", 4)
    with pytest.raises(ResumeRefused, match="only a failed or cancelled"):
        _resume(job_id)  # queued now; a stale second click changes nothing
    assert (_job(job_id).attempt, _job(job_id).status) == (2, JobStatus.queued)


def _job(job_id: int) -> Job:
    with session_scope() as session:
        return session.get(Job, job_id)


def test_resume_is_refused_while_another_run_starts_from_an_intermediate_checkpoint(
    alice: Account, datasets: dict[str, int]
) -> None:
    job_id, checkpoints = make_job(
        alice, datasets["sft"], status=JobStatus.failed, steps=(2,), final=False
    )
    make_job(alice, datasets["preference"], method="dpo", parent_checkpoint_id=checkpoints[2])
    with pytest.raises(ResumeRefused, match="intermediate checkpoint"):
        _resume(job_id)


def test_the_reaper_resumes_a_lost_job_from_its_last_complete_checkpoint(
    alice: Account, datasets: dict[str, int]
) -> None:
    job_id, checkpoints = make_job(
        alice, datasets["sft"], status=JobStatus.queued, steps=(3,), final=False
    )
    with session_scope() as session:
        transition(
            session,
            job_id,
            to=JobStatus.running,
            from_=[JobStatus.queued],
            heartbeat_at=utcnow() - timedelta(minutes=5),
        )
        session.add_all(Metric(job_id=job_id, step=s, loss=1.0) for s in range(1, 5))
        session.commit()
        assert reap_stale_jobs(session, timedelta(minutes=1))[job_id] == JobStatus.queued
        steps = session.scalars(select(Metric.step).where(Metric.job_id == job_id)).all()
    job = _job(job_id)
    assert (job.attempt, job.resume_checkpoint_id, job.step) == (2, checkpoints[3], 3)
    assert sorted(steps) == [1, 2, 3]


def test_job_pages_offer_next_stage_resume_and_show_lineage(
    client, alice: Account, datasets: dict[str, int]
) -> None:
    sft_id, sft = make_job(alice, datasets["sft"])
    page = logged_in_page(client, alice, f"/jobs/{sft_id}")
    form = page.select_one("form#next-stage")
    assert form["action"] == "/jobs/new" and form["method"] == "get"
    assert form.select_one("input[name=parent_checkpoint_id]")["value"] == str(_final(sft))
    assert form.select_one("select[name=method] option")["value"] == "dpo"
    assert page.select_one("#resume-job") is None

    # The form, pre-filled: the parent, its base model, DPO and the newest preference dataset.
    url = f"/jobs/new?parent_checkpoint_id={_final(sft)}&method=dpo"
    form = logged_in_page(client, alice, url).select_one("#job-form")
    assert form.select_one("#job-parent input[name=parent_checkpoint_id]")["value"] == str(
        _final(sft)
    )
    assert form.select_one(f"#job-parent a[href='/jobs/{sft_id}']")
    assert form.select_one("select[name=method] option[selected]")["value"] == "dpo"
    selected = form.select_one("select[name=dataset_id] option[selected]")
    assert "preference" in selected.text
    assert form.select_one("select[name=base_model] option[selected]").text == "tiny-llama"

    # A chained job shows its lineage; its parent lists it as a later stage.
    dpo_id, _ = make_job(
        alice, datasets["preference"], method="dpo", parent_checkpoint_id=_final(sft)
    )
    page = logged_in_page(client, alice, f"/jobs/{dpo_id}")
    parents = page.select("#job-lineage li.lineage-parent")
    assert [li["data-job-id"] for li in parents] == [str(sft_id)]
    assert logged_in_page(client, alice, f"/jobs/{sft_id}").select_one(
        f"#job-children a[href='/jobs/{dpo_id}']"
    )

    # A cancelled job with a complete checkpoint offers Resume (a POST carrying the CSRF token).
    cancelled_id, _ = make_job(
        alice, datasets["sft"], status=JobStatus.cancelled, steps=(2,), final=False
    )
    page = logged_in_page(client, alice, f"/jobs/{cancelled_id}")
    resume = page.select_one("form#resume-form")
    assert resume["action"] == f"/jobs/{cancelled_id}/resume" and resume["method"] == "post"
    assert resume.select_one("input[name=csrf_token]")["value"]
    assert "step 2" in resume.select_one("#resume-job").text
    assert page.select_one("#next-stage") is None
