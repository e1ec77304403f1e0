"""Jobs through the API: submit one, wait for it (or for an export, comparison, generation),
read its checkpoints and metrics."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.support.accounts import Account

ENDED = ("succeeded", "failed", "cancelled")


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.25
) -> None:
    """Poll ``predicate`` until it is true; TimeoutError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def wait_until_ended(client, account: Account, url: str, timeout: float = 300) -> dict:
    """GET ``url`` until its ``status`` is final; returns the last JSON."""
    state: dict = {}

    def ended() -> bool:
        state.update(client.get(url, headers=account.headers).json())
        return state["status"] in ENDED

    wait_for(ended, timeout, url, interval=0.5)
    return state


def wait_for_job(client, account: Account, job_id: int, timeout: float = 300) -> dict:
    """Poll the API until the job ends; returns its final JSON."""
    return wait_until_ended(client, account, f"/api/jobs/{job_id}", timeout)


def wait_for_export(client, account: Account, export_id: int, timeout: float = 300) -> dict:
    return wait_until_ended(client, account, f"/api/exports/{export_id}", timeout)


def submit_job(client, account: Account, **body: Any) -> dict:
    """POST /api/jobs and expect 201; returns the job's JSON."""
    response = client.post("/api/jobs", headers=account.headers, json=body)
    assert response.status_code == 201, response.text
    return response.json()


def checkpoints(client, account: Account, job_id: int) -> list[dict]:
    return client.get(f"/api/jobs/{job_id}/checkpoints", headers=account.headers).json()


def metrics(client, account: Account, job_id: int) -> list[dict]:
    return client.get(f"/api/jobs/{job_id}/metrics", headers=account.headers).json()


def loss_rows(client, account: Account, job_id: int) -> list[dict]:
    """The job's metric rows that carry a training loss (not evaluations or summaries)."""
    return [m for m in metrics(client, account, job_id) if m.get("loss") is not None]


def metric_values(rows: list[dict], key: str) -> list[float]:
    """The numeric values of one metric, in step order, top level or under ``values``."""
    found = []
    for row in rows:
        value = row.get(key, (row.get("values") or {}).get(key))
        if isinstance(value, int | float):
            found.append(float(value))
    return found
