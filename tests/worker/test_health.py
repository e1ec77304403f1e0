"""Training health alarms through the real API and worker, on planted problems (see
tests/support/health.py): a NaN loss must stop the run at that very step (before any logging
step), fail it with a reason naming the step and the batch's rows, and keep no model; a loss
spike raises a warning naming the batch's rows; overfitting triggers early stopping, and the
model kept is the checkpoint with the lowest eval loss.

The three runs are queued at once (one worker trains them in turn); the job page, the API, the
live stream and the TensorBoard event files are checked on the finished runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from bs4 import BeautifulSoup
from safetensors.torch import load_file
from sqlalchemy import select

from app.db import session_scope
from app.jobs import find_base_model
from app.models import Checkpoint
from app.settings import get_settings
from tests.conftest import RUN_DIR, Account, wait_for_job
from tests.support.datasets import upload_bytes
from tests.support.health import (
    COMMON,
    NAN_LOGGING_STEPS,
    OVERFIT_MAX_STEPS,
    OVERFIT_PATIENCE,
    POISONED_ROW,
    SPIKE_ROWS,
    colour_rows,
    nan_job,
    nan_rows,
    overfit_job,
    poisoned_model,
    spike_job,
    spike_rows,
)
from tests.support.html import post_login
from tests.support.jobs import submit_job

pytestmark = pytest.mark.worker


@pytest.fixture(scope="module")
def runs(client, alice: Account, worker: Path, tiny_model: str) -> dict[str, dict]:
    """The three planted runs, finished: {"nan" | "spike" | "overfit": final job JSON}."""
    from app.base_models import register_model

    with session_scope() as session:
        tiny_dir = Path(find_base_model(session, tiny_model).path)
    poisoned = poisoned_model(tiny_dir, RUN_DIR / "models" / "tiny-llama-nan")
    with session_scope() as session:
        register_model(session, "tiny-llama-nan", poisoned)
    bodies = {
        "nan": nan_job("tiny-llama-nan", upload_bytes(client, alice, "zebra.jsonl", nan_rows())),
        "spike": spike_job(tiny_model, upload_bytes(client, alice, "ok.jsonl", spike_rows())),
        "overfit": overfit_job(
            tiny_model,
            upload_bytes(client, alice, "red.jsonl", colour_rows("red", 16)),
            upload_bytes(client, alice, "blue.jsonl", colour_rows("blue", 4)),
        ),
    }
    ids = {name: submit_job(client, alice, **body)["id"] for name, body in bodies.items()}
    return {name: wait_for_job(client, alice, job_id, timeout=600) for name, job_id in ids.items()}


def _events(job: dict, kind: str) -> list[dict]:
    return [e for e in job["events"] if e["kind"] == kind]


def _weights(checkpoint_dir: Path) -> dict[str, torch.Tensor]:
    files = sorted(checkpoint_dir.glob("*.safetensors"))
    assert files, f"no weights in {checkpoint_dir}"
    return {name: t for f in files for name, t in load_file(f).items()}


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def test_a_nan_loss_fails_the_run_at_its_step_naming_the_batch_rows(
    client, alice: Account, runs: dict[str, dict]
) -> None:
    job = runs["nan"]
    assert job["status"] == "failed"
    (alarm,) = _events(job, "nan_loss")
    step = alarm["step"]
    # Caught at the step itself: no logging step (every 5th) had come yet.
    assert 1 <= step < NAN_LOGGING_STEPS
    assert alarm["severity"] == "error"
    assert POISONED_ROW in alarm["details"]["rows"]
    assert len(alarm["details"]["rows"]) == COMMON["per_device_train_batch_size"]
    assert f"step {step}" in job["error"] and "nan" in job["error"]
    rows_text = ", ".join(map(str, alarm["details"]["rows"]))
    assert f"dataset rows {rows_text}" in job["error"]
    assert "learning rate" in job["error"]  # what to do
    checkpoints = client.get(f"/api/jobs/{job['id']}/checkpoints", headers=alice.headers).json()
    assert checkpoints == []  # neither an intermediate nor a final model of a NaN run
    assert client.get(f"/api/jobs/{job['id']}/metrics", headers=alice.headers).json() == []


def test_a_loss_spike_raises_an_alarm_naming_the_batch_rows(runs: dict[str, dict]) -> None:
    job = runs["spike"]
    assert job["status"] == "succeeded", job["error"]
    spikes = _events(job, "loss_spike")
    assert spikes, job["events"]
    for spike in spikes:
        assert spike["severity"] == "warning"
        assert set(spike["details"]["rows"]) & set(SPIKE_ROWS), spike
        assert spike["details"]["loss"] > 3 * spike["details"]["median"]
        assert "warmup" in spike["details"]["advice"]
        assert "max_grad_norm" in spike["details"]["advice"]
    assert not _events(job, "nan_loss")


def test_overfitting_triggers_early_stopping(client, alice: Account, runs: dict[str, dict]) -> None:
    job = runs["overfit"]
    assert job["status"] == "succeeded", job["error"]
    (stopped,) = _events(job, "early_stopping")
    assert stopped["severity"] == "info"
    assert job["progress"]["step"] == stopped["step"] < OVERFIT_MAX_STEPS
    (overfitting,) = _events(job, "overfitting")
    assert overfitting["step"] <= stopped["step"]
    eval_losses = overfitting["details"]["eval_loss"]
    train_losses = overfitting["details"]["train_loss"]
    assert eval_losses == sorted(eval_losses) and train_losses[-1] < train_losses[0]
    metrics = client.get(f"/api/jobs/{job['id']}/metrics", headers=alice.headers).json()
    evaluations = [m for m in metrics if m.get("eval_loss") is not None]
    # Stopped after `patience` evaluations without a new best eval loss.
    best = min(range(len(evaluations)), key=lambda i: evaluations[i]["eval_loss"])
    assert len(evaluations) - 1 - best == OVERFIT_PATIENCE
    # The kept final model is the best checkpoint (lowest eval loss), not the last one trained.
    best_step = evaluations[best]["step"]
    assert best_step < stopped["step"]
    with session_scope() as session:
        stored = session.scalars(select(Checkpoint).where(Checkpoint.job_id == job["id"])).all()
        paths = {(c.step, c.is_final): get_settings().jobs_dir / c.path for c in stored}
    (final,) = [path for (_, is_final), path in paths.items() if is_final]
    kept = _weights(final)
    assert _same_weights(kept, _weights(paths[best_step, False]))
    assert not _same_weights(kept, _weights(paths[stopped["step"], False]))


def test_the_resolved_trainer_config_is_stored_and_served(runs: dict[str, dict]) -> None:
    config = runs["overfit"]["trainer_config"]
    assert config["learning_rate"] == 0.01 and config["max_steps"] == OVERFIT_MAX_STEPS
    assert config["load_best_model_at_end"] is True
    assert config["metric_for_best_model"] == "eval_loss"
    assert config["report_to"] == ["tensorboard"]
    assert config["eval_steps"] == config["save_steps"] == 2
    assert config["packing"] is False and config["packed_rows"] == "off"  # asked for
    # The fast defaults as a CPU run resolves them: packed rows, no Liger off a GPU.
    default = runs["spike"]["trainer_config"]
    assert default["packing"] is True and default["packing_strategy"] == "bfd"
    assert default["packed_rows"] == "best-fit, padding-free (rows isolated)"
    assert default["use_liger_kernel"] is False
    assert default["fused_kernels"].startswith("none: not on CPU")
    # auto: a tiny model fits the host's memory, so activations are not recomputed
    assert default["checkpointing"].startswith("off: fits in")
    assert default["recompute_activations"] is False
    assert default["activation_checkpointing"] is False


def test_tensorboard_event_files_hold_the_logged_curves(
    client, alice: Account, runs: dict[str, dict]
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    job = runs["spike"]
    output = get_settings().jobs_dir / str(job["id"]) / "output"
    (run_dir,) = {path.parent for path in output.glob("runs/*/events.out.tfevents.*")}
    events = EventAccumulator(str(run_dir))
    events.Reload()
    loss = {event.step: event.value for event in events.Scalars("train/loss")}
    metrics = client.get(f"/api/jobs/{job['id']}/metrics", headers=alice.headers).json()
    assert loss.keys() == {m["step"] for m in metrics}
    for metric in metrics:
        assert loss[metric["step"]] == pytest.approx(metric["loss"], rel=1e-5)


def test_alarms_are_streamed_live(client, alice: Account, runs: dict[str, dict]) -> None:
    job = runs["spike"]
    url = f"/api/jobs/{job['id']}/events"
    with client.stream("GET", url, headers=alice.headers) as response:
        body = "".join(response.iter_text())
    streamed = [
        json.loads(block.split("data: ", 1)[1])
        for block in body.split("\n\n")
        if block.startswith("event: alarm")
    ]
    assert [e["id"] for e in streamed] == [e["id"] for e in job["events"]]
    last = job["events"][-1]["id"]
    with client.stream("GET", f"{url}?events_after={last}", headers=alice.headers) as response:
        assert "event: alarm" not in "".join(response.iter_text())


def test_early_stopping_needs_an_eval_dataset(client, alice: Account, tiny_model: str) -> None:
    body = {
        "base_model": tiny_model,
        "dataset_id": upload_bytes(client, alice, "red.jsonl", colour_rows("red", 4)),
        "hyperparameters": {"early_stopping_patience": 2},
    }
    response = client.post("/api/jobs", headers=alice.headers, json=body)
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["hyperparameters", "early_stopping_patience"]
    assert "eval dataset" in error["msg"]


@pytest.fixture
def as_alice(client, alice: Account) -> Iterator:
    client.cookies.clear()
    response = post_login(client, {"token": alice.token}, follow_redirects=False)
    assert response.status_code == 303
    yield client
    client.cookies.clear()


def test_the_job_page_shows_alarms_on_the_timeline_and_chart(
    as_alice, runs: dict[str, dict]
) -> None:
    job = runs["spike"]
    soup = BeautifulSoup(as_alice.get(f"/jobs/{job['id']}").text, "html.parser")
    spike = _events(job, "loss_spike")[0]
    item = soup.select_one(f'#job-timeline li.timeline-event[data-event-id="{spike["id"]}"]')
    assert item is not None and item["data-event"] == "loss_spike"
    assert item["data-step"] == str(spike["step"]) and "severity-warning" in item["class"]
    assert item.select_one(".event-message").get_text() == spike["message"]
    assert "warmup" in item.select_one(".event-advice").get_text()
    links = item.select("a.event-row")
    assert [int(a["data-row"]) for a in links] == spike["details"]["rows"]
    assert all(a["href"].startswith(f"/datasets/{job['dataset_id']}?page=") for a in links)
    marker = soup.select_one(f'#chart-markers li[data-event-id="{spike["id"]}"]')
    assert marker is not None and marker["data-step"] == str(spike["step"])
    payload = json.loads(soup.select_one("#job-data").get_text())
    assert [e["id"] for e in payload["events"]] == [e["id"] for e in job["events"]]
    statuses = [li["data-event"] for li in soup.select("#job-timeline li:not(.timeline-event)")]
    assert statuses == ["created", "started", "succeeded"]
    config = json.loads(soup.select_one("details#trainer-config-panel pre#trainer-config").text)
    assert config["report_to"] == ["tensorboard"]

    failed = BeautifulSoup(as_alice.get(f"/jobs/{runs['nan']['id']}").text, "html.parser")
    nan_item = failed.select_one('#job-timeline li.timeline-event[data-event="nan_loss"]')
    assert nan_item is not None and "severity-error" in nan_item["class"]
    assert str(POISONED_ROW) in [a["data-row"] for a in nan_item.select("a.event-row")]
    assert "dataset rows" in failed.select_one("#job-error").get_text()
