"""The training process itself fails: it runs out of memory, or it crashes (a segfault in native
code). Both run on one worker whose processes have a capped address space (RLIMIT_AS, which its
training processes inherit): an allocation past the cap fails at once, as it would on a device
that is full, without the machine's memory ever being used up."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
from collections.abc import Iterator

import pytest

from tests.conftest import Account
from tests.faults.conftest import job_body, new_device_class, submit, wait_for_steps
from tests.support.datasets import upload_bytes
from tests.support.jobs import wait_for_job
from tests.support.processes import registered_worker, start_class_worker, stop

pytestmark = pytest.mark.faults

# A training process of the tiny model maps ~2.8 GB; the cap leaves it room for that but not for
# one step of 32 x 2048 tokens, whose logits alone (x 49152 vocabulary x 4 bytes) are 12.9 GB.
ADDRESS_SPACE_BYTES = 6 * 1024**3
BATCH, MAX_LENGTH = 32, 2048


def _cap_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_BYTES, ADDRESS_SPACE_BYTES))


@pytest.fixture(scope="module")
def capped_worker(client, alice: Account, tiny_model: str) -> Iterator[str]:
    """A worker (and so its training processes) under the address-space cap; its class."""
    device_class, log = new_device_class("process")
    proc: subprocess.Popen = start_class_worker(log, device_class, _cap_address_space)
    try:
        registered_worker(client, alice, device_class, proc, log)
        yield device_class
    finally:
        stop(proc)


def _long_rows() -> bytes:
    """Rows of ~1,200 tokens each, enough for 32 packed sequences of 2048 tokens."""
    count = " ".join(str(i) for i in range(1, 601))
    rows = [{"instruction": f"Count to 600 ({i}).", "output": count} for i in range(80)]
    return "\n".join(json.dumps(row) for row in rows).encode()


def _training_processes(job_id: int) -> list[int]:
    from worker.job_processes import marked_processes, marker

    return marked_processes(marker(job_id, 1))


def test_out_of_memory_names_the_batch_and_length_and_what_to_change(
    client, alice: Account, tiny_model: str, capped_worker: str
) -> None:
    dataset_id = upload_bytes(client, alice, "faults-long.jsonl", _long_rows())
    body = job_body(tiny_model, dataset_id, capped_worker, max_steps=3, save_steps=100,
                    per_device_train_batch_size=BATCH, max_length=MAX_LENGTH,
                    gradient_checkpointing="off")  # fmt: skip
    done = wait_for_job(client, alice, submit(client, alice, body), timeout=180)

    assert done["status"] == "failed"
    error = done["error"]
    assert error.startswith("out of memory"), error
    assert f"per_device_train_batch_size={BATCH}" in error
    assert f"max_length={MAX_LENGTH}" in error
    for advice in ("lower per_device_train_batch_size", "gradient_checkpointing on", "QLoRA"):
        assert advice in error
    assert "can't allocate memory" in error  # what the allocator said, kept


def test_a_crashed_training_process_leaves_its_last_log_lines_on_the_job(
    client, alice: Account, tiny_model: str, capped_worker: str, counting_dataset: int
) -> None:
    from app.settings import get_settings

    body = job_body(tiny_model, counting_dataset, capped_worker, max_steps=10_000,
                    save_steps=10_000)  # fmt: skip
    job_id = submit(client, alice, body)
    wait_for_steps(client, alice, job_id, 2)
    (pid,) = _training_processes(job_id)
    os.kill(pid, signal.SIGSEGV)  # faulthandler reports it as it would a crash in native code

    done = wait_for_job(client, alice, job_id, timeout=60)
    assert done["status"] == "failed"
    error = done["error"]
    assert "killed by SIGSEGV (a segmentation fault" in error, error
    log = (get_settings().jobs_dir / str(job_id) / "train.log").read_text()
    tail = error.split("its last output:\n", 1)[1]
    assert log.rstrip().endswith(tail.splitlines()[-1])  # the log's very last lines
    assert "Fatal Python error: Segmentation fault" in tail
    assert "File " in tail  # the Python stack of the thread that crashed
