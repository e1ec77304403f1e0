"""Queues per device class and count (app.routing): a worker takes exactly the queues of the
jobs it can hold, and the training dtype follows the resolved precision."""

from __future__ import annotations

import pytest
import torch

from app.models import Worker
from app.routing import class_key, holds, training_queue, worker_queues
from worker.checkpoints import training_dtype


def test_a_device_class_compares_without_case_or_punctuation() -> None:
    assert class_key("NVIDIA H100 80GB HBM3") == class_key("nvidia-h100-80gb-hbm3")
    assert class_key("NVIDIA H100 80GB HBM3") != class_key("NVIDIA A10")


def test_a_worker_takes_the_queues_of_every_job_it_can_hold_and_no_other() -> None:
    queues = set(worker_queues("gpu", "NVIDIA A10", 2))
    can = [(None, 1), (None, 2), ("NVIDIA A10", 1), ("nvidia a10", 2)]
    cannot = [(None, 3), ("NVIDIA A10", 3), ("NVIDIA H100 80GB HBM3", 1), ("cpu", 1)]
    assert {training_queue("gpu", c, n) for c, n in can} == queues
    assert not {training_queue("gpu", c, n) for c, n in cannot} & queues
    worker = Worker(name="w", host="h", device_class="NVIDIA A10", devices=[], max_devices=2)
    assert all(holds(worker, c, n) for c, n in can)
    assert not any(holds(worker, c, n) for c, n in cannot)


def test_queues_of_two_studios_do_not_mix() -> None:
    assert training_queue("studio-a", None, 1) != training_queue("studio-b", None, 1)


@pytest.mark.parametrize(
    ("use_cpu", "precision", "full", "dtype"),
    [
        (True, "bf16", False, torch.float32),  # CPU runs compute in fp32
        (False, "fp32", False, torch.float32),
        (False, "bf16", True, torch.bfloat16),
        (False, "fp16", False, torch.float16),  # a frozen base under an adapter
        (False, "fp16", True, torch.float32),  # fp16 mixed precision keeps fp32 master weights
        (False, None, False, "auto"),
    ],
)
def test_the_weights_load_in_the_dtype_the_precision_needs(use_cpu, precision, full, dtype):
    assert training_dtype(use_cpu, precision, full_weights=full) == dtype


def test_sharded_runs_go_only_to_workers_with_gpus() -> None:
    from app.routing import needs_gpu

    assert needs_gpu(2, "fsdp") and needs_gpu(4, "deepspeed_zero3")
    assert not needs_gpu(2, "ddp") and not needs_gpu(1, "fsdp")
    sharded = training_queue("gpu", None, 2, needs_gpu=True)
    assert sharded not in worker_queues("gpu", "cpu", 2)  # a CPU worker never receives it
    assert sharded in worker_queues("gpu", "NVIDIA A10", 2, gpus=True)
    gpu = [{"index": 0, "name": "NVIDIA A10", "memory_bytes": 1}, {"index": 1, "name": "A10"}]
    cpu = [{"index": None, "name": "cpu", "memory_bytes": 1}]
    a10 = Worker(name="g", host="h", device_class="NVIDIA A10", devices=gpu, max_devices=2)
    cores = Worker(name="c", host="h", device_class="cpu", devices=cpu, max_devices=16)
    assert holds(a10, None, 2, gpus=True) and not holds(cores, None, 2, gpus=True)
    assert holds(cores, None, 2)  # ddp runs there


def test_a_class_named_any_is_not_the_any_class_queue() -> None:
    assert training_queue("gpu", "Any", 1) != training_queue("gpu", None, 1)
