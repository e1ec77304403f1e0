"""The training process for one job: ``python -m worker.training.run JOB_ID ERROR_FILE``.

It reloads the job, re-validates its stored spec, trains, and records checkpoints. The
supervising Celery task owns the job's status; this process reports failure through the
error file and its exit code.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import torch
from datasets import Dataset as HFDataset
from sqlalchemy import select
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
from trl import SFTTrainer

from app.db import session_scope
from app.jobs import cancel_requested
from app.models import Checkpoint, DatasetRow, Job
from app.settings import get_settings
from app.spec import TrainingSpec
from worker.training.callbacks import StudioCallback
from worker.training.mapping import lora_config, sft_config


def load_rows(dataset_id: int) -> list[dict]:
    with session_scope() as session:
        return list(
            session.scalars(
                select(DatasetRow.data)
                .where(DatasetRow.dataset_id == dataset_id)
                .order_by(DatasetRow.index)
            )
        )


def to_prompt_completion(row: dict) -> dict:
    """Conversational prompt/completion: the last assistant turn is the completion."""
    messages = row["messages"]
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def build_dataset(rows: list[dict], spec: TrainingSpec) -> HFDataset:
    if spec.completion_only_loss:
        return HFDataset.from_list([to_prompt_completion(r) for r in rows])
    return HFDataset.from_list([{"messages": r["messages"]} for r in rows])


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
    dtype = torch.float32 if use_cpu else "auto"
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)

    output_dir = settings.jobs_dir / str(job_id) / "output"
    train_ds = build_dataset(load_rows(dataset_id), spec)
    eval_ds = build_dataset(load_rows(eval_id), spec) if eval_id else None
    # SFTTrainer initialises the LoRA weights before Trainer seeds the RNGs: seed first, so the
    # same spec gives the same run.
    set_seed(spec.seed)
    trainer = SFTTrainer(
        model=model,
        args=sft_config(spec, output_dir, has_eval=eval_ds is not None, use_cpu=use_cpu),
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=lora_config(spec),
        callbacks=[StudioCallback(job_id, settings.jobs_dir)],
    )
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
