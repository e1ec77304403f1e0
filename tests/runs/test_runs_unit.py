"""Pure pieces of app.runs: log tail offsets, progress bars, ETA, CSV columns, curve keys."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

from app.models import JobStatus
from app.runs import (
    curve_keys,
    format_duration,
    log_chunk,
    log_tail_at,
    metrics_csv,
    progress,
    screen_text,
)


def test_log_tail_and_chunk_carry_on_without_gaps(tmp_path: Path) -> None:
    path = tmp_path / "train.log"
    assert log_tail_at(path, 5) == ("", 0)
    path.write_bytes(b"one\ntwo\nthree\npartial")
    text, offset = log_tail_at(path, 2)
    assert text == "two\nthree\n" and offset == len(b"one\ntwo\nthree\n")
    assert log_chunk(path, offset) == ("", offset)  # an unfinished line waits
    with path.open("ab") as f:
        f.write(b" line\nfour\n")
    assert log_chunk(path, offset) == ("partial line\nfour\n", path.stat().st_size)
    assert log_chunk(path, 10_000) == ("one\ntwo\nthree\npartial line\nfour\n", path.stat().st_size)


def test_screen_text_keeps_the_last_progress_bar_redraw() -> None:
    assert screen_text("a\n 10%\r 50%\r100%\nb\n") == "a\n100%\nb\n"


def test_progress_eta_from_step_timing() -> None:
    now = datetime.now(UTC)
    job = SimpleNamespace(
        status=JobStatus.running, step=10, max_steps=40, started_at=now - timedelta(seconds=60)
    )
    points = [{"step": s, "time": 1000.0 + 2 * s, "epoch": s / 40} for s in range(1, 11)]
    result = progress(job, points, now)
    assert result["seconds_per_step"] == 2.0
    assert result["eta_seconds"] == 60.0
    assert result["epoch"] == 0.25 and result["fraction"] == 0.25
    assert format_duration(60.0) == "1m 00s" and format_duration(3725) == "1h 02m"
    job.status = JobStatus.succeeded
    assert progress(job, points, now)["eta_seconds"] is None


def test_curve_keys_and_csv_columns_include_extra_values() -> None:
    points = [
        {"id": 1, "step": 1, "epoch": 0.1, "loss": 1.0, "learning_rate": None, "time": 1.0},
        {"id": 2, "step": 2, "loss": None, "eval_loss": 0.9, "rewards/margins": 0.3, "time": 2.0},
    ]
    assert curve_keys(points) == ["loss", "eval_loss", "rewards/margins"]
    rows = list(csv.DictReader(io.StringIO(metrics_csv(points))))
    assert rows[0]["loss"] == "1.0" and rows[0]["eval_loss"] == ""
    assert rows[1]["rewards/margins"] == "0.3" and rows[1]["time"].startswith("1970-01-01")
