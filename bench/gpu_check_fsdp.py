"""The GPU check's FSDP step (issue 12): the studio's own FSDP settings train LoRA SFT on a GPU.

accelerate 1.15 runs FSDP for GPU processes only (a CPU process quietly gets plain DDP), so the
CPU tests cannot show that the studio's FSDP config trains; this does, on the lent GPU machine.
One H200 cannot hold two NCCL ranks, so it is one rank under torchrun: FSDP2 with a world of one
still wraps, shards (trivially), all-gathers, saves a full state dict and resumes as it does on
several GPUs. bench/gpu_check.sh runs it as its last step:

    python -m torch.distributed.run --standalone --nnodes=1 --nproc-per-node=1 \\
        bench/gpu_check_fsdp.py
    python -m torch.distributed.run --standalone --nnodes=1 --nproc-per-node=1 \\
        bench/gpu_check_fsdp.py --cpu-dry-run      # here: gloo, CPU, the tiny model

What it builds is the worker's (``worker.training.run.train``): the TRL SFTConfig from
``worker.training.mapping.method_config`` with the strategy's trainer arguments from
``app.launch.launch_plan`` (a 2-device FSDP spec, backend nccl: ``fsdp_arguments`` plus the
backend), precision bf16, the model from ``worker.training.run.load_model``, rows from the
studio's encoder, the LoRA config from ``worker.training.adapters.peft_config``. It trains 6
steps saving checkpoint-3 (and -6), saves the final adapter, loads it with peft and generates,
then resumes from checkpoint-3 in a second trainer to the last step. It prints one line,

    FSDP (1 process, nccl): ok; steps 6; loss a->b; peak memory X MiB; is_fsdp_enabled True

or ``FAILED <reason>``, and exits non-zero on failure.

The model: the bundled SmolLM2-135M-Instruct (``.data/models/smollm2-135m-instruct``) when it is
there, else random weights of its architecture from the shape carried in
``.cache/gpu_check/smollm2-shape`` (as bench/gpu_check.py does); ``--cpu-dry-run`` uses the
tiny random Llama of ``worker.tiny_model``.

``--cpu-dry-run`` patches accelerate so that a CPU process engages FSDP (``force_fsdp_on_cpu``):
that is for the dry run on a machine without a GPU ONLY. On the GPU no patch is applied: the
check there tests accelerate as the studio's worker runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO))

BUNDLED = REPO / ".data" / "models" / "smollm2-135m-instruct"
SHAPE_DIR = REPO / ".cache" / "gpu_check" / "smollm2-shape"
STEPS = 6
SAVE_AT = 3


class CheckFailed(Exception):
    """A check that did not hold: its message is the FAILED line's reason."""


def force_fsdp_on_cpu() -> None:
    """CPU DRY RUN ONLY (never called on the GPU): accelerate 1.15 turns MULTI_GPU (and a few
    accelerator types) into FSDP when an FSDP plugin is given, but not MULTI_CPU, so a CPU
    process would silently train under DDP. This makes a MULTI_CPU state with a plugin an FSDP
    one, so the dry run goes through the same FSDP code (wrap, save, load) as the GPU does."""
    import accelerate.state as state
    from accelerate.utils import DistributedType

    original = state.AcceleratorState.__init__
    plugins: list = []

    def patched(self, *args, fsdp_plugin=None, **kwargs):
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None:
            plugins[:] = [fsdp_plugin]
        if plugins and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = plugins[0]

    state.AcceleratorState.__init__ = patched


def model_dir(cpu: bool, work: Path) -> tuple[Path, str]:
    """(the model directory, a label)."""
    if cpu:
        from worker.tiny_model import build_tiny_llama

        source = BUNDLED if (BUNDLED / "tokenizer.json").exists() else SHAPE_DIR
        return build_tiny_llama(source, work / "tiny"), "tiny random Llama"
    if (BUNDLED / ".complete").exists() and any(BUNDLED.glob("*.safetensors")):
        return BUNDLED, "SmolLM2-135M-Instruct"
    if not (SHAPE_DIR / "config.json").exists():
        raise CheckFailed(f"no bundled model at {BUNDLED} and no carried shape at {SHAPE_DIR}")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out = work / "smollm2-random"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(SHAPE_DIR))
    model.to(torch.bfloat16).save_pretrained(out)
    AutoTokenizer.from_pretrained(SHAPE_DIR).save_pretrained(out)
    return out, "SmolLM2-135M architecture, random weights"


def peak_memory_mib(cpu: bool) -> str:
    import torch

    if cpu:  # ru_maxrss is KiB on Linux
        return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (process RSS)"
    return f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"


def run(cpu: bool, work: Path, facts: dict) -> None:
    import torch
    from gpu_check_data import sft_rows
    from transformers import AutoTokenizer, set_seed

    from app.chat.encoding import ChatFormat
    from app.chat.rows import RowEncoder
    from app.chat.tokenizer import load_model_tokenizer
    from app.launch import launch_plan
    from app.spec import TrainingSpec
    from worker.devices import detect_devices, resolved_device_config
    from worker.training.adapters import peft_config
    from worker.training.mapping import method_config
    from worker.training.methods import build_dataset, worker_method
    from worker.training.run import load_model

    if not cpu and not torch.cuda.is_available():
        raise CheckFailed("no CUDA device (use --cpu-dry-run on a machine without one)")
    if not cpu:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    path, label = model_dir(cpu, work)
    facts["model"] = label

    spec_fields = {
        "method": "sft",
        "adapter": "lora",
        "max_steps": STEPS,
        "logging_steps": 1,
        "save_steps": SAVE_AT,
        "save_total_limit": 3,
        "per_device_train_batch_size": 4,
        "max_length": 128,
        "learning_rate": 2e-4,
        "warmup_steps": 0,
        "lora_r": 16,
        "lora_alpha": 32,
        "precision": "fp32" if cpu else "bf16",
        "seed": 7,
    }
    spec = TrainingSpec(**spec_fields)
    backend = "gloo" if cpu else "nccl"
    # The studio's plan for this spec on two devices: its trainer arguments are what a 2-GPU
    # FSDP job's ranks get (fsdp_arguments, ddp_backend, ddp_find_unused_parameters).
    plan = launch_plan(
        TrainingSpec(**spec_fields, num_devices=2, distributed_strategy="fsdp"), backend
    )
    strategy = plan["config"]["trainer_arguments"]
    if not strategy.get("fsdp"):
        raise CheckFailed(f"launch_plan gave no FSDP arguments: {strategy}")

    resolved = resolved_device_config(spec.precision, detect_devices()[0])
    precision, attention = resolved["precision"], resolved["attn_implementation"]
    facts["precision"] = f"{precision}, attention {attention}"

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model_tokens = load_model_tokenizer(path)
    encoder = RowEncoder.for_spec(
        spec, ChatFormat(tokenizer.chat_template, model_tokens.special_tokens), model_tokens
    )
    train_ds = build_dataset(sft_rows(64), spec, encoder)
    out = work / "output"
    entry = worker_method(spec)

    def make_trainer():
        set_seed(spec.seed)
        model = load_model(
            spec, path, tokenizer, use_cpu=cpu, precision=precision, attention=attention
        )
        args = method_config(spec, out, use_cpu=cpu, precision=precision, strategy=strategy)
        args.report_to = []  # no tensorboard event files: nothing reads them here
        return entry.trainer(
            model=model,
            args=args,
            train_dataset=train_ds,
            processing_class=tokenizer,
            peft_config=peft_config(spec, path),
        )

    trainer = make_trainer()
    facts["is_fsdp_enabled"] = bool(getattr(trainer, "is_fsdp_enabled", False))
    if not facts["is_fsdp_enabled"]:
        raise CheckFailed(
            f"trainer.is_fsdp_enabled is False (distributed type "
            f"{trainer.accelerator.distributed_type})"
        )
    if not cpu:
        torch.cuda.reset_peak_memory_stats()
    started = time.monotonic()
    trainer.train()
    facts["train_s"] = time.monotonic() - started
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    facts["steps"] = trainer.state.global_step
    if losses:
        facts["loss"] = f"{losses[0]:.3f}->{losses[-1]:.3f}"
    facts["peak"] = peak_memory_mib(cpu)
    facts["wrapped"] = type(trainer.model_wrapped).__name__
    if trainer.state.global_step != STEPS:
        raise CheckFailed(f"trained {trainer.state.global_step} steps, not {STEPS}")
    if not losses or not all(loss == loss for loss in losses):  # NaN != NaN
        raise CheckFailed(f"losses {losses}")
    checkpoint = out / f"checkpoint-{SAVE_AT}"
    if not checkpoint.is_dir():
        raise CheckFailed(f"no {checkpoint.name} in {sorted(p.name for p in out.iterdir())}")
    final = out / "final"
    trainer.save_model(str(final))  # consolidated: FSDP full state dict
    tokenizer.save_pretrained(str(final))
    del trainer

    # The final adapter, as export / evaluation / chat load it: peft over a fresh base model.
    from peft import PeftModel
    from safetensors.torch import load_file

    adapter_file = final / "adapter_model.safetensors"
    if not adapter_file.exists():
        raise CheckFailed(f"no adapter_model.safetensors in final/: {sorted(os.listdir(final))}")
    weights = load_file(str(adapter_file))
    lora_b = sum(float(v.float().abs().sum()) for k, v in weights.items() if "lora_B" in k)
    if not weights or lora_b == 0.0:  # lora_B starts at zero: zero means nothing was saved
        raise CheckFailed(f"the saved adapter is untrained ({len(weights)} tensors, lora_B 0)")
    device = "cpu" if cpu else "cuda"
    base = load_model(spec, path, tokenizer, use_cpu=cpu, precision=precision, attention=attention)
    loaded = PeftModel.from_pretrained(base, str(final)).to(device).eval()
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Describe a quiet river."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    ).to(device)
    with torch.no_grad():
        generated = loaded.generate(**prompt, max_new_tokens=8, do_sample=False)
    new_tokens = generated.shape[-1] - prompt["input_ids"].shape[-1]
    if new_tokens < 1:
        raise CheckFailed("the loaded adapter generated no tokens")
    facts["generated"] = f"{new_tokens} tokens"
    del loaded, base

    # Resume: a second trainer reloads checkpoint-3 (weights, optimizer, scheduler, step).
    trainer = make_trainer()
    trainer.train(resume_from_checkpoint=str(checkpoint))
    resumed = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    last = f"{resumed[-1]:.3f}" if resumed else "?"
    facts["resumed"] = f"from {checkpoint.name} to step {trainer.state.global_step}, loss {last}"
    if trainer.state.global_step != STEPS:
        raise CheckFailed(
            f"resumed from {checkpoint.name} to step {trainer.state.global_step}, not {STEPS}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cpu-dry-run",
        action="store_true",
        help="no GPU: gloo, CPU, the tiny model, accelerate patched to engage FSDP on CPU",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    cpu = args.cpu_dry_run
    if "RANK" not in os.environ:
        print(
            "run under torchrun: python -m torch.distributed.run --standalone --nnodes=1 "
            "--nproc-per-node=1 bench/gpu_check_fsdp.py",
            file=sys.stderr,
        )
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    name = "FSDP (1 process, gloo, CPU dry run)" if cpu else "FSDP (1 process, nccl)"
    facts: dict = {}
    work = Path(tempfile.mkdtemp(prefix="ftstudio-fsdp-check-"))
    started = time.monotonic()
    status = "ok"
    try:
        if cpu:
            force_fsdp_on_cpu()  # the CPU dry run only: see force_fsdp_on_cpu
        run(cpu, work, facts)
    except CheckFailed as exc:
        status = f"FAILED {exc}"
    except BaseException as exc:  # the report reads the line; the traceback goes above it
        traceback.print_exc()
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        status = f"FAILED {type(exc).__name__}: {first}"
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            with contextlib.suppress(Exception):  # the summary line below matters more
                dist.destroy_process_group()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    details = ", ".join(
        f"{key} {facts[key]}"
        for key in ("model", "precision", "wrapped", "generated", "resumed")
        if key in facts
    )
    print(f"  ({details + '; ' if details else ''}{time.monotonic() - started:.0f} s)", flush=True)
    print(
        f"{name}: {status}; steps {facts.get('steps', '?')}; loss {facts.get('loss', '?')}; "
        f"peak memory {facts.get('peak', '?')}; "
        f"is_fsdp_enabled {facts.get('is_fsdp_enabled', '?')}",
        flush=True,
    )
    return 0 if status == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
