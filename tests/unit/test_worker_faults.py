"""The worker's fault helpers on their own (issue 14); the faults battery (tests/faults) runs
them end to end with real processes. Here: a write retried through a real locked SQLite
database and refused at once for a real fault; the out-of-memory message and what counts as
out of memory; the preemption callback on a real TrainerState."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import torch
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError, OperationalError
from transformers import TrainerControl, TrainerState, TrainingArguments

from app.spec import TrainingSpec
from worker.db_retry import is_database_outage, retry_database
from worker.supervise import EXIT_PREEMPTED
from worker.training.oom import TrainingOutOfMemory, out_of_memory_message, reporting_out_of_memory
from worker.training.preemption import Preempted, PreemptionCallback


@pytest.fixture
def locked_database(tmp_path: Path):
    """An engine on a SQLite file whose write lock another connection holds until released."""
    path = tmp_path / "locked.db"
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05})
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    yield engine, holder
    holder.close()
    engine.dispose()


def _insert(engine) -> int:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
        return conn.execute(text("SELECT count(*) FROM t")).scalar_one()


def test_a_write_is_retried_until_the_database_answers(locked_database) -> None:
    engine, holder = locked_database
    threading.Timer(0.5, lambda: holder.execute("ROLLBACK")).start()
    started = time.monotonic()
    assert retry_database(lambda: _insert(engine), "test write", seconds=10, pause=0.1) == 1
    assert 0.4 < time.monotonic() - started < 10


def test_a_write_gives_up_after_its_time(locked_database) -> None:
    engine, _ = locked_database
    with pytest.raises(OperationalError) as raised:
        retry_database(lambda: _insert(engine), "test write", seconds=0.3, pause=0.1)
    assert is_database_outage(raised.value)


def test_a_fault_in_what_was_written_is_not_retried(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'plain.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER NOT NULL)"))
    calls = []

    def write() -> None:
        calls.append(1)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (NULL)"))

    with pytest.raises(DBAPIError) as raised:
        retry_database(write, "test write", seconds=10, pause=0.1)
    assert not is_database_outage(raised.value) and calls == [1]


def test_the_out_of_memory_message_names_the_cause_and_only_what_would_help() -> None:
    lora = TrainingSpec(per_device_train_batch_size=8, max_length=2048)
    message = out_of_memory_message(lora, checkpointing=False, exc=MemoryError("no room"))
    assert "per_device_train_batch_size=8" in message and "max_length=2048" in message
    assert "gradient_checkpointing" in message and "QLoRA" in message
    assert "MemoryError: no room" in message
    qlora = TrainingSpec(adapter="qlora")
    already = out_of_memory_message(qlora, checkpointing=True, exc=MemoryError())
    assert "gradient_checkpointing" not in already and "QLoRA" not in already


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        MemoryError(),
        RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory"),
    ],
)
def test_out_of_memory_becomes_the_reported_failure(error: BaseException) -> None:
    refused = pytest.raises(TrainingOutOfMemory, match="out of memory with")
    with refused, reporting_out_of_memory(TrainingSpec(), checkpointing=False):
        raise error


def test_other_errors_pass_through_unchanged() -> None:
    passed_on = pytest.raises(RuntimeError, match="shape mismatch")
    with passed_on, reporting_out_of_memory(TrainingSpec(), checkpointing=False):
        raise RuntimeError("shape mismatch")
    assert type(passed_on.excinfo.value) is RuntimeError  # not made an out-of-memory failure


def _step(callback: PreemptionCallback, step: int, max_steps: int = 10) -> TrainerControl:
    state, control = TrainerState(), TrainerControl()
    state.global_step, state.max_steps = step, max_steps
    callback.on_step_end(TrainingArguments(output_dir="unused", report_to=[]), state, control)
    return control


def test_sigterm_saves_and_stops_at_the_end_of_the_step(tmp_path: Path) -> None:
    callback = PreemptionCallback()
    before = signal.getsignal(signal.SIGTERM)
    try:
        callback.listen()
        untouched = _step(callback, 3)
        assert not untouched.should_save and not untouched.should_training_stop
        callback.raise_if_stopped()  # nothing asked yet: no failure
        os.kill(os.getpid(), signal.SIGTERM)  # the real signal, caught by the callback
        assert callback.requested.wait(5)
        control = _step(callback, 4)
        assert control.should_save and control.should_training_stop
        with pytest.raises(Preempted, match="step 4") as raised:
            callback.raise_if_stopped()
        assert raised.value.exit_code == EXIT_PREEMPTED
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_sigterm_at_the_last_step_lets_the_run_finish() -> None:
    callback = PreemptionCallback()
    callback.requested.set()
    control = _step(callback, 10, max_steps=10)
    assert not control.should_training_stop
    callback.raise_if_stopped()  # the final save is the ordinary one: nothing to requeue
