"""Per-method pieces of a training run: canonical rows -> the dataset layout the method's TRL
trainer takes (conversational where there are messages), the model class, and the trainer.

Every trainer here is built with the same keywords (model, args, train/eval dataset,
processing_class, peft_config, callbacks); a DPO/KTO run with a peft adapter uses the base
model (adapter disabled) as its reference, a full or freeze run a frozen copy TRL makes.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from datasets import Dataset as HFDataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, Trainer

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # ORPO and CPO live in trl.experimental

from trl import DPOTrainer, KTOTrainer, RewardTrainer, SFTTrainer
from trl.experimental.cpo import CPOTrainer
from trl.experimental.orpo import ORPOTrainer

from app.spec import TrainingSpec

Row = dict


def to_prompt_completion(row: Row) -> Row:
    """Conversational prompt/completion: the last assistant turn is the completion."""
    messages = row["messages"]
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def sft_row(row: Row, spec: TrainingSpec) -> Row:
    return to_prompt_completion(row) if spec.completion_only_loss else {"messages": row["messages"]}


def text_row(row: Row, spec: TrainingSpec) -> Row:
    return {"text": row["text"]}


def preference_row(row: Row, spec: TrainingSpec) -> Row:
    """Conversational preference with an explicit prompt (DPO, ORPO, CPO/SimPO, reward)."""
    return {"prompt": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"]}


def kto_row(row: Row, spec: TrainingSpec) -> Row:
    """Conversational unpaired preference: prompt, completion and its good/bad label."""
    return {**to_prompt_completion(row), "label": bool(row["label"])}


ROW_BUILDERS: dict[str, Callable[[Row, TrainingSpec], Row]] = {
    "sft": sft_row,
    "pretrain": text_row,
    "dpo": preference_row,
    "kto": kto_row,
    "orpo": preference_row,
    "simpo": preference_row,
    "reward": preference_row,
}

TRAINERS: dict[str, type[Trainer]] = {
    "sft": SFTTrainer,
    "pretrain": SFTTrainer,
    "dpo": DPOTrainer,
    "kto": KTOTrainer,
    "orpo": ORPOTrainer,
    "simpo": CPOTrainer,
    "reward": RewardTrainer,
}


def build_dataset(rows: list[Row], spec: TrainingSpec) -> HFDataset:
    build = ROW_BUILDERS[spec.method]
    return HFDataset.from_list([build(row, spec) for row in rows])


def model_class(spec: TrainingSpec) -> type:
    """A reward model is the causal LM's body with a one-output score head (num_labels=1)."""
    return AutoModelForSequenceClassification if spec.method == "reward" else AutoModelForCausalLM


def model_kwargs(spec: TrainingSpec) -> dict:
    return {"num_labels": 1} if spec.method == "reward" else {}


def trainer_class(spec: TrainingSpec) -> type[Trainer]:
    return TRAINERS[spec.method]
