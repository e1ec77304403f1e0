"""A job's metric rows, read once and shared by every request that shows them.

The run page, ``GET /api/jobs/{id}/metrics`` (as a list, columnar, or downsampled for charts)
and the CSV all start from the same rows. Rows are only ever appended within one attempt (a
resume deletes the rows past its checkpoint and starts a new attempt), so ``(job id, attempt,
row count, last row id)`` names one exact set of rows: one cheap aggregate query finds it, and
the rows, their encodings and their ETag are kept for it in a small in-process cache. An ended
run's rows never change, so every request after the first costs that one query.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Job, Metric
from app.runs import BASE_COLUMNS, curve_keys, metric_point
from app.serialize import json_bytes

# Columns read for a point: plain tuples, no ORM objects (500 rows cost ~1/3 as much).
_COLUMNS = (
    Metric.id,
    Metric.step,
    Metric.epoch,
    Metric.loss,
    Metric.learning_rate,
    Metric.grad_norm,
    Metric.num_tokens,
    Metric.values,
    Metric.created_at,
)
FORMATS = ("list", "columnar", "chart")
# The chart format keeps at most this many points per curve unless asked for fewer or more.
CHART_POINTS = 2000
MAX_CHART_POINTS = 20_000
# Derived on the chart, as the run page draws it live: tokens/s between two logged points.
TOKENS_PER_SECOND = "tokens_per_second"
TIMING_POINTS = 20  # the (step, time) pairs the run page's ETA starts from
_CACHE_SIZE = 64


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def downsample(xs: Sequence[Any], ys: Sequence[float], max_points: int) -> tuple[list, list]:
    """At most ``max_points`` of a curve for drawing: the first and last point, and in each of
    ``max_points // 4`` equal buckets its first, last, lowest and highest point (in order), so
    spikes and the overall shape survive. Short curves come back whole."""
    n = len(xs)
    if n <= max_points:
        return list(xs), list(ys)
    buckets = max(1, max_points // 4)
    size = math.ceil(n / buckets)
    keep: set[int] = {0, n - 1}
    for start in range(0, n, size):
        stop = min(start + size, n)
        window = range(start, stop)
        keep.update(
            (start, stop - 1, min(window, key=ys.__getitem__), max(window, key=ys.__getitem__))
        )
    order = sorted(keep)
    return [xs[i] for i in order], [ys[i] for i in order]


class MetricSeries:
    """One exact set of a job's metric rows, with its encodings made once."""

    def __init__(self, key: tuple[int, int, int, int], points: list[dict[str, Any]]) -> None:
        # points: app.runs.metric_point of each row (metric_json plus its wall time).
        self.key = key
        self.points = points
        self._encoded: dict[tuple[str, int], bytes] = {}
        self._curves: list[str] | None = None

    @property
    def etag(self) -> str:
        job_id, attempt, count, last_id = self.key
        return f'"m{job_id}.{attempt}.{count}.{last_id}"'

    def format_etag(self, fmt: str, max_points: int = CHART_POINTS) -> str:
        suffix = f"-{fmt}" + (f"{max_points}" if fmt == "chart" else "")
        return self.etag[:-1] + suffix + '"'

    @property
    def curves(self) -> list[str]:
        if self._curves is None:
            self._curves = curve_keys(self.points)
        return self._curves

    @property
    def loss_points(self) -> int:
        return sum(1 for p in self.points if p.get("loss") is not None)

    def encoded(self, fmt: str, max_points: int = CHART_POINTS) -> bytes:
        """The JSON body of ``GET /api/jobs/{id}/metrics?format=...``, made once."""
        cache_key = (fmt, max_points if fmt == "chart" else 0)
        body = self._encoded.get(cache_key)
        if body is None:
            body = json_bytes(self._payload(fmt, max_points))
            self._encoded[cache_key] = body
        return body

    def _payload(self, fmt: str, max_points: int) -> Any:
        if fmt == "list":
            return [{k: v for k, v in p.items() if k != "time"} for p in self.points]
        if fmt == "columnar":
            return self.columnar()
        if fmt == "chart":
            return self.chart(max_points)
        raise ValueError(f"unknown format {fmt!r}")

    def columnar(self) -> dict[str, Any]:
        """Every key as one list aligned with ``id`` (null where a row has no value)."""
        extra = sorted({k for p in self.points for k in p} - set(BASE_COLUMNS) - {"time"})
        names = [*BASE_COLUMNS, *extra, "time"]
        return {
            "format": "columnar",
            "count": len(self.points),
            "columns": {name: [p.get(name) for p in self.points] for name in names},
        }

    def chart(self, max_points: int = CHART_POINTS) -> dict[str, Any]:
        """What the run page draws: each curve as ``[steps, values]``, downsampled to at most
        ``max_points`` (every point stays in the list, columnar and CSV downloads); tokens/s
        derived between logged points as the page does live; the last id to stream after."""
        raw: dict[str, tuple[list, list]] = {key: ([], []) for key in self.curves}
        derive = TOKENS_PER_SECOND not in raw
        rate: tuple[list, list] = ([], [])
        previous = None
        for p in self.points:
            step = p["step"]
            for key, (xs, ys) in raw.items():
                value = p.get(key)
                if _number(value):
                    xs.append(step)
                    ys.append(value)
            tokens, time = p.get("num_tokens"), p.get("time")
            if derive and _number(tokens) and _number(time):
                if previous and time > previous[1] and tokens >= previous[0]:
                    rate[0].append(step)
                    rate[1].append((tokens - previous[0]) / (time - previous[1]))
                previous = (tokens, time)
        if rate[0]:
            raw[TOKENS_PER_SECOND] = rate
        series = {key: list(downsample(xs, ys, max_points)) for key, (xs, ys) in raw.items()}
        timed = [[p["step"], p["time"]] for p in self.points if p.get("time") is not None]
        return {
            "format": "chart",
            "count": len(self.points),
            "last_id": self.points[-1]["id"] if self.points else 0,
            "max_points": max_points,
            "downsampled": any(len(series[k][0]) < len(raw[k][0]) for k in raw),
            "curves": list(raw),
            "series": series,
            # Where the page's live tokens/s and ETA carry on from.
            "last_tokens": list(previous) if previous else None,
            "timing": timed[-TIMING_POINTS:],
        }


_CACHE: OrderedDict[tuple[int, int, int, int], MetricSeries] = OrderedDict()
_LOCK = threading.Lock()


def metric_series(session: Session, job: Job) -> MetricSeries:
    """The job's metric rows now: one aggregate query when they are cached, else one read."""
    count, last_id = session.execute(
        select(func.count(Metric.id), func.max(Metric.id)).where(Metric.job_id == job.id)
    ).one()
    key = (job.id, job.attempt, count, last_id or 0)
    with _LOCK:
        series = _CACHE.get(key)
        if series is not None:
            _CACHE.move_to_end(key)
            return series
    rows = session.execute(
        select(*_COLUMNS).where(Metric.job_id == job.id).order_by(Metric.id)
    ).all()
    points = [metric_point(row) for row in rows]
    # Rows written between the two queries belong to a later set: name what was read.
    key = (job.id, job.attempt, len(points), points[-1]["id"] if points else 0)
    series = MetricSeries(key, points)
    with _LOCK:
        _CACHE[key] = series
        _CACHE.move_to_end(key)
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return series


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()
