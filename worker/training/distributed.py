"""One run over several processes (``torchrun``, one per device): the launch plan in the job's
folder, this process's rank, and keeping the ranks in step.

Rank 0 alone writes to the studio (metrics, events, checkpoint records, files besides the
Trainer's own saves); every rank trains. Decisions one rank makes (cancel, a NaN loss) reach
the others through ``SyncStopCallback`` at every step, so all stop at the same step and no rank
waits forever on a collective the others skipped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from app.launch import DEEPSPEED_FILE, LAUNCH_FILE


def write_launch(job_dir: Path, plan: dict[str, Any]) -> None:
    """Keep the plan in the job's folder (and the DeepSpeed config as its own file)."""
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / LAUNCH_FILE).write_text(json.dumps(plan, indent=1))
    deepspeed = (plan.get("config") or {}).get("deepspeed")
    if deepspeed is not None:
        (job_dir / DEEPSPEED_FILE).write_text(json.dumps(deepspeed, indent=1))


def trainer_arguments(job_dir: Path) -> dict[str, Any]:
    """The strategy's TrainingArguments from the plan the supervising task wrote (empty for one
    process); the DeepSpeed config is passed as its file's path."""
    path = job_dir / LAUNCH_FILE
    if not path.exists():
        return {}
    config = json.loads(path.read_text()).get("config") or {}
    arguments = dict(config.get("trainer_arguments") or {})
    if "deepspeed" in arguments:
        arguments["deepspeed"] = str(job_dir / arguments["deepspeed"])
    return arguments


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def start_process_group(use_cpu: bool) -> None:
    """Join the run's process group (torchrun set the rendezvous in the environment) before
    anything else, so loading can be ordered; the Trainer then uses this group."""
    if world_size() == 1 or dist.is_initialized():
        return
    if not use_cpu:
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend="gloo" if use_cpu else "nccl")


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (it writes shared files); the others then find them."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def agree(flag: bool) -> bool:
    """True on every rank when any rank says True."""
    if not dist.is_initialized():
        return flag
    device = "cpu" if dist.get_backend() == "gloo" else torch.device("cuda", local_rank())
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def gather(items: list[Any]) -> list[Any]:
    """Every rank's ``items``, on every rank (``items`` itself in a one-process run)."""
    if not dist.is_initialized():
        return items
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in part]


class SyncStopCallback(TrainerCallback):
    """Last in the callbacks: after every step, if any rank stops (cancel, NaN), all stop, and
    none saves or evaluates unless all would."""

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: object
    ) -> None:
        if not dist.is_initialized():
            return
        device = "cpu" if dist.get_backend() == "gloo" else args.device
        flags = torch.tensor(
            [
                int(control.should_training_stop),
                int(not control.should_save),
                int(not control.should_evaluate),
            ],
            device=device,
        )
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        stop, no_save, no_evaluate = (bool(v) for v in flags.tolist())
        control.should_training_stop = stop
        control.should_save = control.should_save and not no_save
        control.should_evaluate = control.should_evaluate and not no_evaluate
