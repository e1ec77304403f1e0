"""Where a training job goes: a Celery queue per device class and device count, the queues a
worker takes, whether any registered worker can ever hold a job, and what a queued job waits
for.

A job asking for ``num_devices`` devices of class C (or of any class) is sent to
``<queue>.train.<C|any>.<num_devices>``. A worker of class C that can give ``max_devices``
devices (its GPUs, or its cores on a CPU worker) takes ``<queue>.train.any.1..max_devices`` and
``<queue>.train.C.1..max_devices``, so it only receives jobs it can hold, and runs one at a time:
no two running jobs share a device. A sharded run (FSDP, DeepSpeed ZeRO) needs GPUs (accelerate
runs those strategies on GPU devices only): its queue ends in ``.gpu`` and only workers that own
CUDA devices take those. Pure domain code over the database.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Job, User, Worker
from app.worker_registry import is_online

ANY_CLASS = "any"
SHARDED_STRATEGIES = ("fsdp", "deepspeed_zero2", "deepspeed_zero3")


def class_key(device_class: str) -> str:
    """A device class as a queue name part: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'
    (classes are compared by this key, so case and punctuation do not matter)."""
    key = re.sub(r"[^a-z0-9]+", "-", device_class.lower()).strip("-")[:80]
    return f"c-{key}"  # never "any", whatever the class is called


def training_queue(
    base: str, device_class: str | None, num_devices: int, needs_gpu: bool = False
) -> str:
    kind = class_key(device_class) if device_class else ANY_CLASS
    return f"{base}.train.{kind}.{num_devices}" + (".gpu" if needs_gpu else "")


def worker_queues(base: str, device_class: str, max_devices: int, gpus: bool = False) -> list[str]:
    """The training queues a worker of ``device_class`` with ``max_devices`` devices takes (and,
    owning GPUs, the sharded runs' queues too)."""
    return [
        training_queue(base, kind, count, needs_gpu)
        for needs_gpu in ((False, True) if gpus else (False,))
        for kind in (None, device_class)
        for count in range(1, max(1, max_devices) + 1)
    ]


def job_devices(job: Job) -> int:
    return int((job.spec or {}).get("num_devices", 1))


def needs_gpu(num_devices: int, strategy: str | None) -> bool:
    """A run sharded across devices (FSDP, ZeRO) needs GPUs; DDP also runs on a CPU worker."""
    return num_devices > 1 and strategy in SHARDED_STRATEGIES


def job_needs_gpu(job: Job) -> bool:
    return needs_gpu(job_devices(job), (job.spec or {}).get("distributed_strategy"))


def job_queue(base: str, job: Job) -> str:
    return training_queue(base, job.device_class, job_devices(job), job_needs_gpu(job))


def has_gpus(worker: Worker) -> bool:
    return any(device.get("index") is not None for device in worker.devices or [])


def holds(worker: Worker, device_class: str | None, num_devices: int, gpus: bool = False) -> bool:
    """Whether ``worker`` can ever run a job asking for these devices (``gpus``: GPU ones)."""
    same_class = device_class is None or class_key(worker.device_class) == class_key(device_class)
    fits = (worker.max_devices or 1) >= num_devices
    return same_class and fits and (has_gpus(worker) or not gpus)


def _describe(worker: Worker) -> str:
    return f"{worker.name} ({worker.max_devices or 1} x {worker.device_class})"


def placement_errors(
    session: Session, device_class: str | None, num_devices: int, strategy: str | None = None
) -> list[dict[str, Any]]:
    """Why no registered worker can ever hold the job (empty when one can). A job for one device
    of any class is always accepted: every worker can hold it, even one not started yet."""
    if device_class is None and num_devices == 1:
        return []
    gpus = needs_gpu(num_devices, strategy)
    workers = session.scalars(select(Worker).order_by(Worker.name)).all()
    if any(holds(worker, device_class, num_devices, gpus) for worker in workers):
        return []
    registered = ", ".join(_describe(w) for w in workers) or "none yet"
    if gpus and any(holds(worker, device_class, num_devices) for worker in workers):
        msg = (
            f"{strategy} shards the run across GPUs (accelerate runs it on GPU devices only) and "
            f"no registered GPU worker can hold it; registered: {registered}. Use ddp, which "
            "also runs on CPU workers"
        )
        return [
            {"loc": ["hyperparameters", "distributed_strategy"], "msg": msg, "type": "no_worker"}
        ]
    if device_class is not None and not any(holds(w, device_class, 1) for w in workers):
        msg = f"no registered worker has device class '{device_class}'; registered: {registered}"
        return [{"loc": ["device_class"], "msg": msg, "type": "no_worker"}]
    of_class = f" of class '{device_class}'" if device_class else ""
    msg = (
        f"no registered worker{of_class} has {num_devices} devices; registered: {registered}. "
        "Ask for fewer devices, or start a worker that owns more (ftstudio worker --devices)"
    )
    return [{"loc": ["hyperparameters", "num_devices"], "msg": msg, "type": "no_worker"}]


def _wanted(job: Job) -> str:
    count = job_devices(job)
    if job.device_class:
        return f"{count} x {job.device_class}"
    return f"{count} devices" if count > 1 else "a free device"


def _runs(job_ids: list[int | None], mine: set[int]) -> str:
    own = [f"{job_id}" for job_id in job_ids if job_id in mine]
    others = len(job_ids) - len(own)
    parts = []
    if own:
        parts.append(f"run{'s' if len(own) > 1 else ''} {', '.join(own)}")
    if others:
        parts.append(
            f"{others} other user{'s' if others > 1 else ''}' run{'s' if others > 1 else ''}"
        )
    return " and ".join(parts)


def waiting_for(session: Session, job: Job, user: User, stale_after_seconds: float) -> str | None:
    """What a queued job waits for, in words; None when a worker that can hold it is free (it
    is taken in queue order). Other users' run ids are not shown."""
    workers = [
        w
        for w in session.scalars(select(Worker).order_by(Worker.name))
        if holds(w, job.device_class, job_devices(job), job_needs_gpu(job))
    ]
    wanted = f"waiting for a worker with {_wanted(job)}"
    if not workers:
        return f"{wanted}: none is registered"
    online = [w for w in workers if is_online(w, stale_after_seconds)]
    if not online:
        names = ", ".join(w.name for w in workers)
        return f"{wanted}: none is online ({names} offline)"
    if any(not w.busy for w in online):
        return None
    job_ids = [w.job_id for w in online]
    mine = set(
        session.scalars(
            select(Job.id).where(Job.id.in_([i for i in job_ids if i]), Job.owner_id == user.id)
        )
    )
    count = {1: "busy", 2: "both busy"}.get(len(online), f"all {len(online)} busy")
    return f"{wanted}: {count} with {_runs(job_ids, mine)}"
