"""How a run's processes are launched: one process, or ``torchrun`` with one process per device
and the distributed strategy's settings for transformers' Trainer (DDP, FSDP, DeepSpeed ZeRO).

Pure functions from a TrainingSpec to plain dicts (no torch): the worker writes the plan to the
job's folder (``launch.json``, and ``deepspeed.json`` for ZeRO) and starts the processes with
it; ``GET /api/jobs/{id}`` and the run page show it as ``launch``.
"""

from __future__ import annotations

from typing import Any

from app.spec import TrainingSpec

LAUNCH_FILE = "launch.json"  # in the job's folder
DEEPSPEED_FILE = "deepspeed.json"
ZERO_STAGES = {"deepspeed_zero2": 2, "deepspeed_zero3": 3}


def launcher_arguments(processes: int) -> list[str]:
    """``python`` arguments that start ``processes`` ranks on this host (torchrun): a free
    rendezvous port is chosen for each run, so several runs share a host."""
    return [
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes=1",
        f"--nproc-per-node={processes}",
    ]


def fsdp_arguments(activation_checkpointing: bool = False) -> dict[str, Any]:
    """TrainingArguments' FSDP settings for transformers 5 (``fsdp=True``, the rest in
    ``fsdp_config``; a string ``fsdp`` is deprecated): FSDP2, every parameter, gradient and
    optimizer state sharded, each decoder block its own unit, checkpoints saved as one full state
    dict (so chaining, resume, export and evaluation read them as any other).

    The blocks are found by the model: TRANSFORMER_BASED_WRAP with no class names makes accelerate
    (``FullyShardedDataParallelPlugin.set_auto_wrap_policy``) wrap the model's
    ``_no_split_modules`` (``LlamaDecoderLayer`` for Llama and SmolLM2). FSDP2 keeps the original
    parameters, frozen and trainable together, so peft adapters need no ``use_orig_params``.
    Recomputing activations is FSDP's own (the Trainer's would all-gather again in backward)."""
    return {
        "fsdp": True,
        "fsdp_config": {
            "version": 2,
            "reshard_after_forward": True,  # full shard (False: shard gradients and states only)
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "state_dict_type": "FULL_STATE_DICT",
            "cpu_ram_efficient_loading": False,
            "activation_checkpointing": activation_checkpointing,
        },
        "activation_checkpointing": False,  # transformers refuses both at once
    }


def deepspeed_config(stage: int) -> dict[str, Any]:
    """A DeepSpeed ZeRO config whose batch, accumulation, clipping, precision and bucket values
    are "auto": transformers (``HfTrainerDeepSpeedConfig``) fills them from the TrainingArguments
    and the model's hidden size, so the spec stays the one source. No optimizer or scheduler
    section: the Trainer's own run under ZeRO. Stage 3 gathers the 16-bit weights when saving (a
    consolidated checkpoint)."""
    zero: dict[str, Any] = {
        "stage": stage,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if stage == 3:
        zero |= {
            "stage3_prefetch_bucket_size": "auto",
            "stage3_param_persistence_threshold": "auto",
            "stage3_gather_16bit_weights_on_model_save": True,
        }
    return {
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "zero_optimization": zero,
    }


def launch_plan(spec: TrainingSpec, backend: str | None = None) -> dict[str, Any]:
    """``{"processes", "strategy", "config"}``: ``config`` is None for one process; else the
    launcher's arguments, the process group's backend (``gloo`` on CPU, ``nccl`` on CUDA; None
    until a worker chooses it) and the Trainer's arguments for the strategy."""
    processes = spec.num_devices
    if processes == 1:
        return {"processes": 1, "strategy": None, "config": None}
    strategy = spec.distributed_strategy
    trainer: dict[str, Any] = {"ddp_backend": backend, "ddp_find_unused_parameters": False}
    config: dict[str, Any] = {"launcher": launcher_arguments(processes), "backend": backend}
    if strategy == "fsdp":
        # auto is resolved on the device: the training process sets FSDP's checkpointing then
        trainer |= fsdp_arguments(spec.gradient_checkpointing == "on")
    elif strategy in ZERO_STAGES:
        trainer["deepspeed"] = DEEPSPEED_FILE  # written next to launch.json
        config["deepspeed"] = deepspeed_config(ZERO_STAGES[strategy])
    config["trainer_arguments"] = trainer
    return {"processes": processes, "strategy": strategy, "config": config}
