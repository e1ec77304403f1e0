"""The training process for one job: ``python -m worker.training.run JOB_ID ERROR_FILE``.

It reloads the job, re-validates its stored spec, trains, and records checkpoints. The
supervising Celery task owns the job's status; this process reports failure through the
error file and its exit code.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from peft import prepare_model_for_kbit_training
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase, set_seed

from app.architecture import EstimateUnavailable, architecture, count_parameters, read_config
from app.chat.encoding import ChatFormat
from app.chat.rows import RowEncoder
from app.chat.tokenizer import load_model_tokenizer
from app.db import session_scope
from app.estimate import TokenCount, checkpointing_choice, dataset_tokens, sequence_length
from app.methods import get_method, is_reward_model, packs
from app.models import Checkpoint, Dataset, Job, JobStatus
from app.settings import get_settings
from app.spec import TrainingSpec
from app.states import move
from worker.checkpoints import load_weights, materialize_start, training_dtype
from worker.child import ReportedFailure, run_child_main
from worker.db_retry import retry_database
from worker.devices import current_cuda_device, detect_devices, resolved_device_config
from worker.kernels import liger_model_types, resolve_liger
from worker.training.adapters import apply_freeze, freeze_plan
from worker.training.batch_rows import watch_batches
from worker.training.callbacks import HealthCallback, StudioCallback, attempt_over
from worker.training.chaining import (
    START_DIR,
    forget_resume_checkpoint,
    lineage_stages,
    resume_dir,
)
from worker.training.data import (
    DataSource,
    Preparation,
    load_rows,
    start_preparing,
)
from worker.training.distributed import (
    SyncStopCallback,
    agree,
    barrier,
    is_main,
    local_rank,
    main_first,
    rank,
    start_process_group,
    trainer_arguments,
)
from worker.training.mapping import (
    early_stopping_callback,
    method_config,
    peft_config,
    quantization_config,
)
from worker.training.methods import worker_method
from worker.training.oom import reporting_out_of_memory
from worker.training.packing import quiet_isolation_warnings
from worker.training.phases import PhaseCallback, PhaseClock, process_started_at
from worker.training.preemption import PreemptionCallback
from worker.training.rl import reward_model_dir
from worker.training.stop_check import run_stop_check

PARAMETERS_FILE = "parameters.json"  # in the job's output dir
# Out of memory before the spec is read; later, ``worker.training.oom`` names its batch and length.
OOM_ADVICE = (
    "lower per_device_train_batch_size or max_length, turn gradient_checkpointing on, or train a "
    "QLoRA adapter"
)


def load_model(
    spec: TrainingSpec,
    model_path: Path,
    tokenizer: PreTrainedTokenizerBase,
    *,
    use_cpu: bool,
    precision: str = "fp32",
    attention: str = "sdpa",
    checkpointing: bool = False,
) -> PreTrainedModel:
    """The base model as the method and adapter need it: a causal LM, or for a reward model the
    same body with a new score head; quantized and prepared for k-bit training (qlora), with all
    but the last blocks frozen (freeze), or as is (full and peft adapters)."""
    quantization = quantization_config(spec)
    placement = {}
    if quantization is not None and not use_cpu:  # each rank's quantized copy on its own GPU
        placement["device_map"] = {"": local_rank()}
    model = load_weights(
        model_path,
        scores=is_reward_model(spec.method),
        # fp16 mixed precision keeps fp32 master copies of what it trains whole: the full and
        # frozen-prefix runs, and a reward model's new score head (peft trains a copy of it)
        dtype=training_dtype(
            use_cpu,
            precision,
            full_weights=spec.adapter in ("full", "freeze") or is_reward_model(spec.method),
        ),
        pad_token_id=tokenizer.pad_token_id,
        quantization_config=quantization,
        attn_implementation=attention,
        **placement,
    )
    if spec.adapter == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    plan = freeze_plan(spec, model.config.get_text_config().num_hidden_layers)
    if plan is not None:
        apply_freeze(model, plan)
    return model


def record_parameters(model: torch.nn.Module, path: Path) -> dict:
    """Write (and print) what the run trains: the counts the pre-launch estimate predicts, and
    the names of the trainable parameters."""
    names = [name for name, param in model.named_parameters() if param.requires_grad]
    if hasattr(model, "get_nb_trainable_parameters"):  # peft: counts 4-bit weights unpacked
        trainable, total = model.get_nb_trainable_parameters()
    else:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
    quantized: dict[str, int] = {}
    for module in model.modules():
        kind = type(module).__name__
        if type(module).__module__.startswith("bitsandbytes"):
            quantized[kind] = quantized.get(kind, 0) + 1
    quantization = getattr(getattr(model, "config", None), "quantization_config", None)
    record = {
        "trainable": trainable,
        "total": total,
        "trainable_names": names,
        "quantized_modules": quantized,
        "quantization": quantization.to_dict() if hasattr(quantization, "to_dict") else None,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    print(f"trainable parameters: {trainable:,} of {total:,}", flush=True)
    return record


def resolve_checkpointing(
    spec: TrainingSpec, model_path: Path, device_bytes: int, tokens: TokenCount | None
) -> tuple[bool, str]:
    """Whether the run recomputes activations on a device with ``device_bytes``: the
    pre-launch estimate's rule (``app.estimate.checkpointing_choice``) on the same numbers."""
    if spec.gradient_checkpointing != "auto":
        return spec.gradient_checkpointing == "on", f"{spec.gradient_checkpointing} (as asked)"
    try:
        arch = architecture(read_config(model_path))
    except EstimateUnavailable as exc:
        return False, f"off: no memory estimate for this model ({exc})"
    count = count_parameters(arch, spec)
    seq_len = sequence_length(spec, tokens)
    return checkpointing_choice(arch, spec, count, seq_len, device_bytes)


def resolve_device(
    spec: TrainingSpec, use_cpu: bool, model_path: Path, tokens: TokenCount | None = None
) -> dict[str, Any]:
    """The device this process trains on and what the run gets there: precision, attention
    kernel (``worker.devices``), fused kernels (``worker.kernels``), packing and gradient
    checkpointing (``tokens``: the dataset's, for the longest row of an unpacked run). A
    precision or kernel the device cannot do is refused with the reason."""
    device = detect_devices()[0] if use_cpu else current_cuda_device()
    liger, kernels = False, "none"
    try:
        resolved = resolved_device_config(spec.precision, device)
        if "liger_kernels" in get_method(spec.method).fields:
            model_type = json.loads((model_path / "config.json").read_text()).get("model_type")
            liger, kernels = resolve_liger(
                spec.liger_kernels, device, model_type, liger_model_types()
            )
    except ValueError as exc:
        raise ReportedFailure(str(exc)) from None
    packed = "best-fit, padding-free (rows isolated)" if packs(spec) else "off"
    checkpointing, why = resolve_checkpointing(spec, model_path, device.memory_bytes, tokens)
    return resolved | {
        "liger_kernels": liger,
        "fused_kernels": kernels,
        "packed_rows": packed,
        "recompute_activations": checkpointing,
        "checkpointing": why,
    }


def check_strategy_engaged(spec: TrainingSpec, trainer: Any) -> None:
    """A sharded run must really be sharded: accelerate quietly falls back to DDP where it does
    not run FSDP / DeepSpeed (on CPU processes), which would train under a wrong label."""
    if spec.num_devices == 1 or spec.distributed_strategy == "ddp":
        return
    engaged = (
        getattr(trainer, "is_fsdp_enabled", False)
        if spec.distributed_strategy == "fsdp"
        else getattr(trainer, "is_deepspeed_enabled", False)
    )
    if not engaged:
        raise ReportedFailure(
            f"{spec.distributed_strategy} did not engage on this worker's devices (accelerate "
            "runs it on GPUs only): use ddp here, or a GPU worker"
        )


def train(job_id: int) -> None:
    entered = time.time()
    preemption = PreemptionCallback()
    preemption.listen()
    settings = get_settings()
    quiet_isolation_warnings()
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None, f"job {job_id} does not exist"
        spec = TrainingSpec.from_stored(job.spec, job.spec_version)
        attempt = job.attempt  # progress is written only while this attempt runs
        model_path = Path(job.base_model.path)
        chat_template, dataset_id, eval_id = job.chat_template, job.dataset_id, job.eval_dataset_id
        chain = lineage_stages(session, job, settings.jobs_dir)  # chaining: the parent's weights
        resume_from = resume_dir(session, job, settings.jobs_dir)
        submitted, taken = job.created_at, job.started_at
        tokens = None  # an unpacked run's longest row, for gradient checkpointing's auto
        if spec.gradient_checkpointing == "auto" and not packs(spec):
            tokens = dataset_tokens(session, job.dataset, job.base_model_id, spec.max_length)
        train_source = DataSource(dataset_id, job.dataset.content_hash, named_rows=True)
        eval_source = None
        if eval_id is not None:
            eval_dataset = session.get(Dataset, eval_id)
            assert eval_dataset is not None
            eval_source = DataSource(eval_id, eval_dataset.content_hash, named_rows=False)

    use_cpu = not torch.cuda.is_available()
    start_process_group(use_cpu)  # several processes (num_devices > 1): join the others
    clock = PhaseClock(job_id, record=is_main())
    record_start_up(clock, attempt, submitted, taken, entered)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model_tokens = load_model_tokenizer(model_path)  # what the studio's encoder tokenizes with
    if chat_template:
        tokenizer.chat_template = chat_template  # the template lock: saved with every checkpoint
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    resolved = resolve_device(spec, use_cpu, model_path, tokens)
    precision, attention = resolved["precision"], resolved["attn_implementation"]
    print(f"device {resolved['device']}: {precision}, attention {attention}", flush=True)
    job_dir = settings.jobs_dir / str(job_id)
    start_dir = job_dir / START_DIR
    chat_format = ChatFormat(chat_template, model_tokens.special_tokens)
    encoder = RowEncoder.for_spec(spec, chat_format, model_tokens)
    cache_dir = settings.data_dir / "cache" / "tokenized"
    preparation = Preparation(spec, encoder, chat_template, model_path, cache_dir, is_main())
    prepared = start_preparing(preparation, train_source, eval_source, clock)
    with clock.phase("model load"):
        with main_first():  # rank 0 writes the chained start; the others read it
            start_dtype = training_dtype(use_cpu, precision)
            start_path = materialize_start(
                model_path, chain, start_dir, dtype=start_dtype, write=is_main()
            )
        set_seed(spec.seed)  # a reward model's new score head is initialised while loading
        model = load_model(
            spec,
            start_path,
            tokenizer,
            use_cpu=use_cpu,
            precision=precision,
            attention=attention,
            checkpointing=resolved["recompute_activations"],
        )
    train_ds, eval_ds = prepared.result()

    output_dir = job_dir / "output"
    health = HealthCallback(
        job_id, early_stopping=early_stopping_callback(spec, eval_ds is not None)
    )
    with main_first(), session_scope() as session:  # PPO / GRPO: the model that scores answers
        reward_dir = reward_model_dir(
            session, spec, settings.jobs_dir, start_dir / "reward", write=is_main()
        )
    # The trainers initialise the LoRA weights before Trainer seeds the RNGs: seed first, so the
    # same spec gives the same run.
    set_seed(spec.seed)
    entry = worker_method(spec)
    args = method_config(
        spec,
        output_dir,
        has_eval=eval_ds is not None,
        use_cpu=use_cpu,
        precision=precision,
        strategy=trainer_arguments(job_dir),
        liger=resolved["liger_kernels"],
        checkpointing=resolved["recompute_activations"],
    )
    studio = StudioCallback(job_id, attempt, settings.jobs_dir, resolved)
    phases = PhaseCallback(clock)
    trainer = entry.trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=peft_config(spec, model_path),
        callbacks=[preemption, studio, *health.callbacks(), SyncStopCallback(), phases],
        **entry.trainer_extras(spec, reward_dir, tokenizer),
    )
    check_strategy_engaged(spec, trainer)
    if not get_method(spec.method).generates:  # RL trainers batch generations, not dataset rows
        watch_batches(trainer, health.micro_batch)
    barrier()  # every rank has loaded the start (and any reference model) and read the job
    if is_main():
        with session_scope() as session:
            forget_resume_checkpoint(session, job_id, attempt)
        shutil.rmtree(start_dir, ignore_errors=True)
        record_parameters(trainer.model, output_dir / PARAMETERS_FILE)
    # Resume: the trainer reloads the weights, optimizer, scheduler, RNG and global step.
    resume = str(resume_from) if resume_from and entry.resumes else None
    phases.start()
    try:
        with reporting_out_of_memory(spec, resolved["recompute_activations"]):
            trainer.train(**({"resume_from_checkpoint": resume} if entry.resumes else {}))
    except BaseException:
        with contextlib.suppress(Exception):  # keep the metrics logged before the failure,
            studio.close()  # but report the failure, not a database error on the way out
        raise
    studio.close()
    health.raise_on_failure()  # a NaN loss: the run fails, no final model
    preemption.raise_if_stopped()  # saved a checkpoint for the worker's shutdown: no final model

    # cancelled, or requeued meanwhile
    over = retry_database(lambda: _attempt_over(job_id, attempt), "checking the job")
    if agree(over):  # every rank takes the same way: saving is collective under sharding
        return
    final_dir = output_dir / "final"
    with clock.phase("saving"):
        trainer.save_model(str(final_dir))  # consolidated: FSDP full state dict, ZeRO-3 gathered
        if is_main():
            tokenizer.save_pretrained(str(final_dir))
    if not is_main():
        return
    if spec.num_devices > 1 and spec.distributed_strategy in ("fsdp", "deepspeed_zero3"):
        stop_check = {"error": "not run: the weights are sharded across the run's processes"}
    else:
        # The first rows hold the prompts: a few more in case some have no answer to cut.
        rows = load_rows(eval_id or dataset_id, limit=4 * spec.stop_check_prompts)
        with clock.phase("stop check") as details:
            stop_check = check_stopping(spec, trainer.model, encoder, rows)
            details["prompts"] = (stop_check or {}).get("prompts", 0)
    final_path = str(final_dir.resolve().relative_to(settings.jobs_dir.resolve()))
    final = (job_id, attempt, trainer.state.global_step, final_path, stop_check)
    retry_database(lambda: record_final(*final), "recording the final model")


def _attempt_over(job_id: int, attempt: int) -> bool:
    with session_scope() as session:
        return attempt_over(session, job_id, attempt)


def record_final(job_id: int, attempt: int, step: int, path: str, stop_check: dict | None) -> None:
    """The final model's checkpoint and the stop check, while this attempt still runs the job."""
    with session_scope() as session:
        running = JobStatus.running
        if not move(
            session, Job, job_id, to=None, from_=running, attempt=attempt, stop_check=stop_check
        ):
            return  # no longer this attempt's job: its final model is not recorded
        session.add(
            Checkpoint(job_id=job_id, step=step, is_final=True, path=path, stop_check=stop_check)
        )


def record_start_up(
    clock: PhaseClock,
    attempt: int,
    submitted: datetime,
    taken: datetime | None,
    entered: float,
) -> None:
    """The phases before this function: queued (the first attempt only: a requeued attempt's
    submit is long past), starting (the worker took the job -> this process exists) and
    imports (-> the training code is loaded)."""
    created = process_started_at()
    if taken is None or created is None:
        return
    taken_at = _unix(taken)
    if attempt == 1:
        clock.record("queued", _unix(submitted), taken_at)
    clock.record("starting", taken_at, created)
    clock.record("imports", created, entered)


def _unix(moment: datetime) -> float:
    """A stored time as a Unix time (SQLite hands back naive UTC)."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def check_stopping(
    spec: TrainingSpec, model: PreTrainedModel, encoder: RowEncoder, rows: list[dict]
) -> dict | None:
    """The stop check for chat methods; its failure is recorded, never fails the run."""
    if not get_method(spec.method).stop_check or spec.stop_check_prompts == 0:
        return None
    try:
        result = run_stop_check(model, encoder, rows, spec.stop_check_prompts)
    except Exception as exc:  # a generation problem must not lose a finished run
        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {exc}"}
    print(
        f"stop check: {result['stopped']}/{result['prompts']} answers ended "
        f"({result.get('seconds', 0)} s)",
        flush=True,
    )
    return result


def main() -> None:
    run_child_main(lambda job_id: train(int(job_id)), oom_advice=OOM_ADVICE, rank=rank())


if __name__ == "__main__":
    main()
