"""The estimate on devices (issue 12): what a run on ``num_devices`` devices keeps on each one
under its ``distributed_strategy``, and how much memory one device has, from the setting or
from the online workers that can hold the job.

Per device, with N devices:

* ddp: every device holds the full weights, gradients and optimizer state;
* deepspeed_zero2: gradients and optimizer state sharded N ways, the weights whole;
* fsdp and deepspeed_zero3: weights, gradients and optimizer state sharded N ways, plus the
  whole weights of the units being gathered for the current forward/backward step (the current
  one and the prefetched next one). A frozen reference model is sharded too.

Activations are per device batch (``per_device_train_batch_size`` rows) whatever the strategy.
Only the trainable part has gradients and optimizer state (``app.estimate`` splits them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.architecture import Architecture
from app.models import Worker
from app.routing import holds
from app.spec import TrainingSpec
from app.worker_registry import is_online

SHARDED: dict[str, tuple[str, ...]] = {
    "ddp": (),
    "deepspeed_zero2": ("gradients", "optimizer"),
    "deepspeed_zero3": ("weights", "reference_model", "gradients", "optimizer"),
    "fsdp": ("weights", "reference_model", "gradients", "optimizer"),
}
GATHERED_UNITS = 2  # the unit computing now and the one prefetched


def strategy(spec: TrainingSpec) -> str | None:
    """The strategy that applies: None on one device (nothing is shared or sharded)."""
    return spec.distributed_strategy if spec.num_devices > 1 else None


def sharded_parts(spec: TrainingSpec) -> tuple[str, ...]:
    name = strategy(spec)
    return SHARDED[name] if name else ()


def gathered_weights(arch: Architecture, weights: float, num_devices: int) -> float:
    """Whole weights of the units FSDP / ZeRO-3 gather at once: the largest unit (a block, the
    embeddings or an untied head) twice, at the run's bytes per weight, never more than the
    shards the device does not hold."""
    head = 0 if arch.tied else arch.head.params
    unit = max(arch.block_params, arch.embedding_params, head)
    share = unit / arch.total_params if arch.total_params else 0.0
    return min(GATHERED_UNITS * share * weights, weights * (num_devices - 1) / num_devices)


def per_device(arch: Architecture, spec: TrainingSpec, parts: dict[str, float]) -> dict[str, float]:
    """``parts`` (one device's memory by part, as on a single device) as each of the run's
    devices holds them, plus ``gathered_weights``."""
    n = spec.num_devices
    sharded = sharded_parts(spec)
    result = {part: size / n if part in sharded else size for part, size in parts.items()}
    result["gathered_weights"] = (
        gathered_weights(arch, parts["weights"], n) if "weights" in sharded else 0.0
    )
    return result


def rows_per_step(spec: TrainingSpec) -> int:
    """Rows per optimizer step: each device takes per_device_train_batch_size rows a micro-step."""
    return spec.per_device_train_batch_size * spec.gradient_accumulation_steps * spec.num_devices


# --- how much memory one device has ------------------------------------------------------------


@dataclass(frozen=True)
class DeviceMemory:
    """The memory of one of the run's devices and where the figure came from."""

    bytes: int = 0  # 0: unknown
    source: str | None = None  # "setting", "worker <name>" or None
    device_class: str | None = None  # the class the figure is of (the asked-for one if known)
    smallest: tuple[int, str] | None = None  # another worker that could take the job, with less


def worker_device_memory(worker: Worker, num_devices: int) -> int:
    """What one of the job's devices has on ``worker`` (0: unknown). A GPU run takes the
    worker's first ``num_devices`` GPUs (its ranks' local indices), so the smallest of those
    counts; on a CPU worker the processes share the host's memory."""
    devices = list(worker.devices or [])
    gpus = [d for d in devices if d.get("index") is not None]
    if gpus:
        taken = gpus[:num_devices]
        if len(taken) < num_devices:
            return 0
        return min(int(d.get("memory_bytes") or 0) for d in taken)
    host = max((int(d.get("memory_bytes") or 0) for d in devices), default=0)
    return host // max(num_devices, 1)


def from_workers(
    workers: Iterable[Worker],
    device_class: str | None,
    num_devices: int,
    stale_after_seconds: float,
    *,
    gpus: bool = False,
) -> DeviceMemory:
    """The largest device memory among the online workers that can hold the job (the job may
    still land on a smaller one when it asks for any class: ``smallest`` names it)."""
    known = [
        (memory, worker)
        for worker in workers
        if holds(worker, device_class, num_devices, gpus) and is_online(worker, stale_after_seconds)
        if (memory := worker_device_memory(worker, num_devices)) > 0
    ]
    if not known:
        return DeviceMemory(device_class=device_class)
    memory, best = max(known, key=lambda pair: pair[0])  # the first of equals, in given order
    low, small = min(known, key=lambda pair: pair[0])
    return DeviceMemory(
        bytes=memory,
        source=f"worker {best.name}",
        device_class=best.device_class,
        smallest=(low, f"worker {small.name} ({small.device_class})") if low < memory else None,
    )


def device_memory(
    session: Session,
    device_class: str | None,
    num_devices: int,
    setting_bytes: int = 0,
    stale_after_seconds: float | None = None,
    *,
    gpus: bool = False,
) -> DeviceMemory:
    """FTSTUDIO_DEVICE_MEMORY_BYTES when set (explicit wins), else the online workers' (with
    ``stale_after_seconds``; None: the setting alone)."""
    if setting_bytes > 0:
        return DeviceMemory(setting_bytes, "setting", device_class)
    if stale_after_seconds is None:
        return DeviceMemory(device_class=device_class)
    workers = session.scalars(
        select(Worker).where(Worker.stopped_at.is_(None)).order_by(Worker.name)
    ).all()
    return from_workers(workers, device_class, num_devices, stale_after_seconds, gpus=gpus)
