"""Running out of memory in training, reported with what caused it and what to change."""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from contextlib import contextmanager

from app.spec import TrainingSpec
from worker.child import ReportedFailure, is_out_of_memory


class TrainingOutOfMemory(ReportedFailure):
    """The device (or the host, on CPU) could not hold a step of this run."""


def out_of_memory_message(spec: TrainingSpec, checkpointing: bool, exc: BaseException) -> str:
    """Names the batch size and sequence length that did not fit and the ways to fit them,
    leaving out those the run already takes."""
    advice = [
        "lower per_device_train_batch_size (raise gradient_accumulation_steps to keep the "
        "effective batch size) or max_length"
    ]
    if not checkpointing:
        advice.append("turn gradient_checkpointing on")
    if spec.adapter != "qlora":
        advice.append("train a QLoRA adapter (4-bit base weights)")
    return (
        f"out of memory with per_device_train_batch_size={spec.per_device_train_batch_size} and "
        f"max_length={spec.max_length}. To fit: {'; or '.join(advice)}. "
        f"({type(exc).__name__}: {exc})"
    )


@contextmanager
def reporting_out_of_memory(spec: TrainingSpec, checkpointing: bool) -> Iterator[None]:
    """An out-of-memory error in the block becomes a ``TrainingOutOfMemory`` the job stores;
    its traceback goes to the log."""
    try:
        yield
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        traceback.print_exc()
        raise TrainingOutOfMemory(out_of_memory_message(spec, checkpointing, exc)) from exc
