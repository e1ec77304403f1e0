"""The training process for one job: ``python -m worker.training.run JOB_ID ERROR_FILE``.

It reloads the job, re-validates its stored spec, trains, and records checkpoints. The
supervising Celery task owns the job's status; this process reports failure through the
error file and its exit code.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import torch
from peft import prepare_model_for_kbit_training
from sqlalchemy import select
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase, set_seed

from app.db import session_scope
from app.jobs import cancel_requested
from app.models import Checkpoint, DatasetRow, Job
from app.settings import get_settings
from app.spec import TrainingSpec
from worker.training.adapters import apply_freeze, freeze_plan
from worker.training.callbacks import StudioCallback
from worker.training.mapping import method_config, peft_config, quantization_config
from worker.training.methods import build_dataset, model_class, model_kwargs, trainer_class

PARAMETERS_FILE = "parameters.json"  # in the job's output dir


def load_rows(dataset_id: int) -> list[dict]:
    with session_scope() as session:
        return list(
            session.scalars(
                select(DatasetRow.data)
                .where(DatasetRow.dataset_id == dataset_id)
                .order_by(DatasetRow.index)
            )
        )


def load_model(
    spec: TrainingSpec, model_path: Path, tokenizer: PreTrainedTokenizerBase, *, use_cpu: bool
) -> PreTrainedModel:
    """The base model as the method and adapter need it: a causal LM, or for a reward model the
    same body with a new score head; quantized and prepared for k-bit training (qlora), with all
    but the last blocks frozen (freeze), or as is (full and peft adapters)."""
    model = model_class(spec).from_pretrained(
        model_path,
        dtype=torch.float32 if use_cpu else "auto",
        quantization_config=quantization_config(spec),
        **model_kwargs(spec),
    )
    if spec.method == "reward" and model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id  # it scores the last non-pad token
    if spec.adapter == "qlora":
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=spec.gradient_checkpointing
        )
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


def train(job_id: int) -> None:
    settings = get_settings()
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None, f"job {job_id} does not exist"
        spec = TrainingSpec.model_validate(job.spec)
        model_path = Path(job.base_model.path)
        chat_template, dataset_id, eval_id = job.chat_template, job.dataset_id, job.eval_dataset_id

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if chat_template:
        tokenizer.chat_template = chat_template  # the template lock: saved with every checkpoint
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    use_cpu = not torch.cuda.is_available()
    set_seed(spec.seed)  # a reward model's new score head is initialised while loading
    model = load_model(spec, model_path, tokenizer, use_cpu=use_cpu)

    output_dir = settings.jobs_dir / str(job_id) / "output"
    train_ds = build_dataset(load_rows(dataset_id), spec)
    eval_ds = build_dataset(load_rows(eval_id), spec) if eval_id else None
    # The trainers initialise the LoRA weights before Trainer seeds the RNGs: seed first, so the
    # same spec gives the same run.
    set_seed(spec.seed)
    trainer = trainer_class(spec)(
        model=model,
        args=method_config(spec, output_dir, has_eval=eval_ds is not None, use_cpu=use_cpu),
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=peft_config(spec, model_path),
        callbacks=[StudioCallback(job_id, settings.jobs_dir)],
    )
    record_parameters(trainer.model, output_dir / PARAMETERS_FILE)
    trainer.train()

    with session_scope() as session:
        if cancel_requested(session, job_id):
            return
    final_dir = output_dir / "final"
    trainer.save_model(str(final_dir))
    tokenizer.save_pretrained(str(final_dir))
    with session_scope() as session:
        session.add(
            Checkpoint(
                job_id=job_id,
                step=trainer.state.global_step,
                is_final=True,
                path=str(final_dir.resolve().relative_to(settings.jobs_dir.resolve())),
            )
        )


def main() -> None:
    job_id, error_file = int(sys.argv[1]), Path(sys.argv[2])
    try:
        train(job_id)
    except torch.OutOfMemoryError as exc:
        error_file.write_text(
            f"out of memory: lower per_device_train_batch_size or max_length ({exc})"
        )
        raise
    except Exception as exc:
        error_file.write_text(f"{type(exc).__name__}: {exc}")
        traceback.print_exc()
        sys.exit(1)


if __name__ == "__main__":
    main()
