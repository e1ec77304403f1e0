"""Watching and comparing runs: list filters, comparison, CSV, log tail (the queue and the
workers live in ``app.run_queue``).

Pure domain code over the database (no web types); every function that reads a user's jobs
takes the user and scopes by owner.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.access import owned
from app.launch import LAUNCH_FILE, launch_plan
from app.models import BaseModel, Job, JobEvent, JobStatus, Metric, User
from app.queries import job_metrics
from app.serialize import job_event_json, metric_json
from app.spec import TrainingSpec

# Columns every metric row has; other numeric keys come from the row's `values`.
BASE_COLUMNS = ("id", "step", "epoch", "loss", "learning_rate", "grad_norm", "num_tokens")
# Keys that are not curves (identifiers, axes, end-of-run totals).
NOT_CURVES = frozenset({"id", "step", "epoch", "time"})
MAX_LOG_TAIL = 5000
# The resolved TRL config (its to_dict), written by the training process into the output dir.
TRAINER_CONFIG_FILE = "trainer_config.json"


class FilterError(ValueError):
    pass


@dataclass(frozen=True)
class RunFilters:
    status: str = ""
    method: str = ""
    dataset_id: int | None = None
    base_model: str = ""

    @property
    def active(self) -> bool:
        return bool(self.status or self.method or self.dataset_id or self.base_model)

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "method": self.method,
            "dataset_id": self.dataset_id or "",
            "base_model": self.base_model,
        }


def parse_filters(
    status: str | None = None,
    method: str | None = None,
    dataset_id: str | int | None = None,
    base_model: str | int | None = None,
) -> RunFilters:
    """Query-string values (empty means "any") into filters; a bad value is a FilterError."""
    status = (status or "").strip()
    if status and status not in {s.value for s in JobStatus}:
        raise FilterError(f"unknown status {status!r}")
    dataset = str(dataset_id or "").strip()
    if dataset and not dataset.isdigit():
        raise FilterError("dataset_id must be a number")
    return RunFilters(
        status=status,
        method=(method or "").strip(),
        dataset_id=int(dataset) if dataset else None,
        base_model=str(base_model or "").strip(),
    )


def filter_jobs(session: Session, user: User, filters: RunFilters) -> Sequence[Job]:
    query = owned(Job, user)
    if filters.status:
        query = query.where(Job.status == JobStatus(filters.status))
    if filters.method:
        query = query.where(Job.method == filters.method)
    if filters.dataset_id:
        query = query.where(Job.dataset_id == filters.dataset_id)
    if filters.base_model:
        # The base model by id or by name.
        ref = filters.base_model
        model_ids = select(BaseModel.id).where(
            BaseModel.id == int(ref) if ref.isdigit() else BaseModel.name == ref
        )
        query = query.where(Job.base_model_id.in_(model_ids))
    return session.scalars(query.order_by(Job.id.desc())).all()


def filter_choices(session: Session, user: User) -> dict[str, list]:
    """What the runs list can be filtered by: the values the user's jobs actually have."""
    jobs = session.scalars(owned(Job, user)).all()
    return {
        "statuses": [s.value for s in JobStatus],
        "methods": sorted({j.method for j in jobs}),
        "datasets": sorted({(j.dataset_id, j.dataset.name) for j in jobs}),
        "base_models": sorted({j.base_model.name for j in jobs}),
    }


# --- metric series -----------------------------------------------------------------------


def metric_point(metric: Metric) -> dict[str, Any]:
    """A metric row as the pages and the stream send it: metric_json plus its wall time."""
    point = metric_json(metric)
    point["time"] = metric.created_at.timestamp() if metric.created_at else None
    return point


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def curve_keys(points: Iterable[dict[str, Any]]) -> list[str]:
    """Every numeric key some point has a value for, in a stable, readable order."""
    seen: dict[str, None] = {}
    for point in points:
        for key, value in point.items():
            if key not in NOT_CURVES and _number(value):
                seen.setdefault(key, None)
    first = [k for k in ("loss", "eval_loss", "learning_rate", "grad_norm") if k in seen]
    return first + sorted(k for k in seen if k not in first)


def progress(job: Job, points: Sequence[dict[str, Any]], now: datetime | None = None) -> dict:
    """Step, epoch, fraction done, seconds per step and ETA from the logged step timing."""
    now = now or datetime.now(UTC)
    timed = [p for p in points if p.get("time") is not None]
    seconds_per_step = None
    if len(timed) >= 2 and timed[-1]["step"] > timed[0]["step"]:
        seconds_per_step = (timed[-1]["time"] - timed[0]["time"]) / (
            timed[-1]["step"] - timed[0]["step"]
        )
    elif job.started_at and job.step:
        started = job.started_at if job.started_at.tzinfo else job.started_at.replace(tzinfo=UTC)
        seconds_per_step = (now - started).total_seconds() / job.step
    eta = None
    if job.status == JobStatus.running and job.max_steps and seconds_per_step is not None:
        eta = max(0.0, (job.max_steps - job.step) * seconds_per_step)
    epochs = [p["epoch"] for p in points if p.get("epoch") is not None]
    return {
        "step": job.step,
        "max_steps": job.max_steps,
        "fraction": (job.step / job.max_steps) if job.max_steps else None,
        "epoch": epochs[-1] if epochs else None,
        "seconds_per_step": seconds_per_step,
        "eta_seconds": eta,
    }


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return ""
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


PHASE_EVENT = "phase"  # written by worker.training.phases


def timeline(job: Job, events: Sequence[JobEvent] = ()) -> list[dict[str, Any]]:
    """The job's history: created, started, its events (health alarms with their advice, early
    stopping, resumes; not the phases) and finished (with the final status), oldest first."""
    entries: list[dict[str, Any]] = [{"event": "created", "at": job.created_at.isoformat()}]
    if job.started_at:
        entries.append({"event": "started", "at": job.started_at.isoformat()})
    entries += [
        {"event": "job_event", "at": e.created_at.isoformat(), **job_event_json(e)}
        for e in events
        if e.kind != PHASE_EVENT  # the run page lists the phases on their own
    ]
    if job.finished_at:
        entries.append({"event": job.status.value, "at": job.finished_at.isoformat()})
    return sorted(entries, key=lambda entry: entry["at"])


def trainer_config(jobs_dir: Path, job: Job) -> dict[str, Any] | None:
    """The trainer config the run resolved, once its training process has started."""
    # Built from the job's integer id only, never from a user string.
    path = jobs_dir / str(int(job.id)) / "output" / TRAINER_CONFIG_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def launch(jobs_dir: Path, job: Job) -> dict[str, Any]:
    """How the run's processes are launched: the plan its worker kept in the job's folder, or,
    before a worker took it, the plan its spec gives (the backend is the worker's to choose)."""
    path = jobs_dir / str(int(job.id)) / LAUNCH_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    try:
        return launch_plan(TrainingSpec.from_stored(job.spec, job.spec_version))
    except ValueError:  # a stored spec this version refuses
        return {"processes": None, "strategy": None, "config": None}


# --- CSV ---------------------------------------------------------------------------------


def metrics_csv(points: Sequence[dict[str, Any]]) -> str:
    """One row per logged step; the base columns first, then every other key, sorted."""
    extra = sorted({k for p in points for k in p} - set(BASE_COLUMNS) - {"time"})
    columns = [*BASE_COLUMNS, *extra, "time"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for point in points:
        row = []
        for column in columns:
            value = point.get(column)
            if column == "time" and value is not None:
                value = datetime.fromtimestamp(value, UTC).isoformat()
            row.append("" if value is None else value)
        writer.writerow(row)
    return out.getvalue()


# --- compare -----------------------------------------------------------------------------


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = value


def run_settings(job: Job) -> dict[str, Any]:
    """Everything that configures a run, flat: method, adapter, model, datasets, the spec."""
    flat: dict[str, Any] = {
        "method": job.method,
        "adapter": job.adapter,
        "base_model": job.base_model.name,
        "dataset_id": job.dataset_id,
        "eval_dataset_id": job.eval_dataset_id,
    }
    _flatten("", job.spec or {}, flat)
    return flat


def hyperparameter_differences(jobs: Sequence[Job]) -> list[dict[str, Any]]:
    """The settings whose values are not the same in every run: [{name, values: [...]}]."""
    settings = [run_settings(j) for j in jobs]
    names = sorted({k for s in settings for k in s})
    missing = object()
    rows = []
    for name in names:
        values = [s.get(name, missing) for s in settings]
        if any(v != values[0] for v in values[1:]):
            rows.append({"name": name, "values": [None if v is missing else v for v in values]})
    return rows


def final_metrics(points: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The last logged value of every curve (and the step it was logged at)."""
    final: dict[str, Any] = {}
    for point in points:
        for key, value in point.items():
            if key not in NOT_CURVES and _number(value):
                final[key] = value
    if points:
        final["step"] = points[-1]["step"]
    return final


def parse_ids(raw: str) -> list[int]:
    ids: list[int] = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit():
            raise FilterError(f"ids must be numbers separated by commas, got {part!r}")
        if int(part) not in ids:
            ids.append(int(part))
    if not ids:
        raise FilterError("give the runs to compare as ids=1,2")
    if len(ids) > 12:
        raise FilterError("compare at most 12 runs at once")
    return ids


def compare_runs(session: Session, jobs: Sequence[Job]) -> dict[str, Any]:
    runs = []
    for job in jobs:
        points = [metric_point(m) for m in job_metrics(session, job.id)]
        runs.append(
            {
                "id": job.id,
                "name": job.name,
                "status": job.status.value,
                "method": job.method,
                "adapter": job.adapter,
                "base_model": job.base_model.name,
                "dataset_id": job.dataset_id,
                "final_metrics": final_metrics(points),
                "metrics": points,
            }
        )
    keys: dict[str, None] = {}
    for run in runs:
        keys.update(dict.fromkeys(curve_keys(run["metrics"])))
    final_keys = sorted({k for r in runs for k in r["final_metrics"]} - {"step"})
    return {
        "ids": [j.id for j in jobs],
        "runs": runs,
        "curves": list(keys),
        "final_metric_keys": final_keys,
        "differences": hyperparameter_differences(jobs),
    }


# --- log tail ----------------------------------------------------------------------------


def log_path(jobs_dir: Path, job: Job) -> Path:
    # Built from the job's integer id only, never from a user string.
    return jobs_dir / str(int(job.id)) / "train.log"


def log_tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of the training log ('' when the process has not started)."""
    return log_tail_at(path, lines)[0]


def log_tail_at(path: Path, lines: int) -> tuple[str, int]:
    """The last ``lines`` complete lines and the byte offset just after them, where a live
    stream of the log (``log_chunk``) carries on without a gap or a repeat."""
    lines = max(1, min(lines, MAX_LOG_TAIL))
    if not path.exists():
        return "", 0
    with path.open("rb") as f:
        f.seek(0, 2)
        end = size = f.tell()
        block, data = 64 * 1024, b""
        while size > 0 and data.count(b"\n") <= lines:
            read = min(block, size)
            size -= read
            f.seek(size)
            data = f.read(read) + data
    complete = data.rfind(b"\n") + 1  # a line still being written comes with the stream
    end -= len(data) - complete
    text = data[:complete].decode("utf-8", errors="replace")
    # Lines end at "\n" only: progress bars redraw with "\r" inside one line.
    kept = text[:-1].split("\n")[-lines:] if text else []
    return ("\n".join(kept) + "\n") if kept else "", end


def screen_text(text: str) -> str:
    """The log as a terminal shows it: a progress bar's "\r" redraws keep only the last one."""
    out = []
    for line in text.split("\n"):
        parts = [p for p in line.split("\r") if p]
        out.append(parts[-1] if parts else "")
    return "\n".join(out)


def log_chunk(path: Path, offset: int, limit: int = 64 * 1024) -> tuple[str, int]:
    """Complete lines written after byte ``offset`` (at most ``limit`` bytes); the new offset."""
    if not path.exists():
        return "", offset
    with path.open("rb") as f:
        f.seek(0, 2)
        size = f.tell()
        if offset > size:  # the log was replaced (a new attempt): start again
            offset = 0
        f.seek(offset)
        data = f.read(min(limit, size - offset))
    end = data.rfind(b"\n")
    if end < 0:
        return "", offset
    return data[: end + 1].decode("utf-8", errors="replace"), offset + end + 1


def phases(events: Sequence[JobEvent]) -> list[dict[str, Any]]:
    """Where the job's wall clock went: each recorded phase (queued, starting, imports, model
    load, data preparation, first step, training, stop check, saving) in the order it ended."""
    return [dict(e.details) for e in events if e.kind == PHASE_EVENT and "phase" in e.details]
