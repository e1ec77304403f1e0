"""The worker's own devices and its heartbeat in the ``workers`` table.

``ftstudio worker --devices auto|cpu|0|0,1`` (``FTSTUDIO_WORKER_DEVICES``) names the devices the
worker owns. Its training, export and evaluation processes see only those
(``CUDA_VISIBLE_DEVICES`` in their environment, empty for ``cpu``); ``auto`` leaves the
environment as it is (every GPU this process sees, or the CPU when there is none). When the
worker is ready it detects what it owns (``worker.devices.detect_devices``: torch, here in the
worker and never in ``app``), registers it, and a thread beats every ``heartbeat_seconds`` with
its busy state and current job until it shuts down.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from celery.signals import celeryd_after_setup, worker_ready, worker_shutdown

from app import routing, worker_registry
from app.db import session_scope
from app.settings import get_settings
from worker.devices import DeviceInfo, detect_devices, host_memory_bytes

logger = logging.getLogger(__name__)


def child_device_env() -> dict[str, str]:
    """What a child process's environment gets so it sees only the worker's devices."""
    visible = worker_registry.parse_devices(get_settings().worker_devices).cuda_visible_devices()
    return {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}


def owned_devices() -> list[dict[str, Any]]:
    """The devices this worker owns, as registered: [{index, name, memory_bytes}]. ``index`` is
    the host's CUDA index (what ``--devices`` names), None for the CPU."""
    plan = worker_registry.parse_devices(get_settings().worker_devices)
    if plan.mode == worker_registry.CPU:
        found = [DeviceInfo.cpu(host_memory_bytes(), os.cpu_count())]
    else:
        visible = plan.cuda_visible_devices()
        if visible is not None:  # before torch initialises CUDA in this process
            os.environ["CUDA_VISIBLE_DEVICES"] = visible
        found = detect_devices()
    if plan.mode == "indices" and not any(d.is_cuda for d in found):
        logger.error(
            "--devices %s names CUDA devices but torch sees none here: registering the CPU",
            get_settings().worker_devices,
        )
    host_indices = _host_indices(os.environ.get("CUDA_VISIBLE_DEVICES"))
    devices = []
    for position, device in enumerate(found):
        index = None
        if device.is_cuda:
            index = host_indices[position] if position < len(host_indices) else device.index
        devices.append({"index": index, "name": device.name, "memory_bytes": device.memory_bytes})
    return devices


def _host_indices(visible: str | None) -> list[int]:
    if not visible:
        return []
    parts = [part.strip() for part in visible.split(",")]
    return [int(part) for part in parts] if all(p.isdigit() for p in parts) else []


def max_devices(devices: list[dict[str, Any]]) -> int:
    """The most devices one job may ask of this worker: its GPUs, or on a CPU worker its cores
    (one process each, over gloo)."""
    gpus = [d for d in devices if d.get("index") is not None]
    return len(gpus) if gpus else max(1, os.cpu_count() or 1)


def owns_cuda() -> bool:
    return any(d.get("index") is not None for d in registration.devices)


def device_class(devices: list[dict[str, Any]]) -> str:
    """The configured class, else the first device's name ("cpu" for the CPU)."""
    configured = get_settings().worker_device_class.strip()
    if configured:
        return configured
    return str(devices[0]["name"]) if devices else "cpu"


class _Registration:
    """This worker's name, devices and current job; the heartbeat thread writes them."""

    def __init__(self) -> None:
        self.name: str | None = None
        self.devices: list[dict[str, Any]] = []
        self.device_class = "cpu"
        self.max_devices = 1
        self.job_id: int | None = None
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def beat(self, *, started: bool = False) -> None:
        if self.name is None:
            return
        with self.lock:
            job_id = self.job_id
        try:
            with session_scope() as session:
                worker_registry.heartbeat(
                    session,
                    self.name,
                    host=socket.gethostname(),
                    device_class=self.device_class,
                    devices=self.devices,
                    max_devices=self.max_devices,
                    busy=job_id is not None,
                    job_id=job_id,
                    started=started,
                )
        except Exception:  # a database hiccup must not stop the worker; the next beat retries
            logger.exception("worker heartbeat failed")

    def _loop(self) -> None:
        from worker.reaper import REAP_EVERY_BEATS

        beats = 0
        reaping: threading.Thread | None = None
        while not self.stop.wait(get_settings().heartbeat_seconds):
            self.beat()
            beats += 1
            if beats % REAP_EVERY_BEATS == 0 and (reaping is None or not reaping.is_alive()):
                # its own thread: stopping a lost job's processes may take a while, and the
                # beat must go on meanwhile
                reaping = threading.Thread(target=_reap, name="ftstudio-reaper", daemon=True)
                reaping.start()

    def detect(self) -> None:
        self.devices = owned_devices()
        self.device_class = device_class(self.devices)
        self.max_devices = max_devices(self.devices)

    def start(self, name: str) -> None:
        if not self.devices:
            self.detect()
        self.name = name
        self.beat(started=True)
        self.thread = threading.Thread(target=self._loop, name="ftstudio-heartbeat", daemon=True)
        self.thread.start()
        logger.info("worker %s owns %s (%s)", name, self.devices, self.device_class)

    def shutdown(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=5)
        if self.name is not None:
            try:
                with session_scope() as session:
                    worker_registry.stopped(session, self.name)
            except Exception:
                logger.exception("could not mark worker %s stopped", self.name)


def _reap() -> None:
    from worker.reaper import reap_lost_jobs
    from worker.redispatch import redispatch_if_lost

    try:
        reap_lost_jobs()  # a dead host's jobs are requeued without a restart there
    except Exception:
        logger.exception("reaping lost jobs failed")
    try:
        redispatch_if_lost()  # Redis came back empty: what was queued is sent again
    except Exception:
        logger.exception("sending queued items again failed")


registration = _Registration()


def set_current_job(job_id: int | None) -> None:
    """Called by the training task as it takes a job (and with None when it ends)."""
    with registration.lock:
        registration.job_id = job_id
    registration.beat()


@celeryd_after_setup.connect
def _take_training_queues(sender: Any = None, instance: Any = None, **_: object) -> None:
    """Before consuming: take the training queues of this worker's device class and of every
    device count it can hold (``app.routing``), so it only receives jobs it can run."""
    registration.detect()
    base = get_settings().queue
    owned = (registration.device_class, registration.max_devices, owns_cuda())
    for queue in routing.worker_queues(base, *owned):
        instance.app.amqp.queues.select_add(queue)
    logger.info(
        "worker takes jobs for up to %s x %s", registration.max_devices, registration.device_class
    )


@worker_ready.connect
def _register(sender: Any = None, **_: object) -> None:
    name = getattr(sender, "hostname", None) or f"worker@{socket.gethostname()}"
    registration.start(name)


@worker_shutdown.connect
def _unregister(**_: object) -> None:
    registration.shutdown()
