"""Per-method pieces of a training run: canonical rows -> the dataset layout the method's TRL
trainer takes (conversational where there are messages), the model class, and the trainer.

SFT, continual pretraining and DPO rows are tokenized by the studio (``app.chat.rows``), the
same code that shows users what the model sees; the other trainers tokenize conversational rows
themselves with the locked chat template. Every trainer here is built with the same keywords
(model, args, train/eval dataset, processing_class, peft_config, callbacks); a DPO/KTO run with
a peft adapter uses the base model (adapter disabled) as its reference, a full or freeze run a
frozen copy TRL makes.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from datasets import Dataset as HFDataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, Trainer

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # ORPO and CPO live in trl.experimental

from trl import DPOTrainer, GRPOTrainer, KTOTrainer, RewardTrainer, SFTTrainer
from trl.experimental.cpo import CPOTrainer
from trl.experimental.orpo import ORPOTrainer
from trl.experimental.ppo import PPOTrainer

from app.chat.rows import RowEncoder, encode_rows
from app.data.rowtext import as_messages
from app.spec import TrainingSpec

Row = dict


def to_prompt_completion(row: Row) -> Row:
    """Conversational prompt/completion: the last assistant turn is the completion."""
    messages = row["messages"]
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def sft_row(row: Row, encoder: RowEncoder) -> Row:
    """Tokens and labels from the studio's encoder: what the "what the model sees" view shows."""
    encoding = encoder.conversation(row)
    return {"input_ids": encoding.input_ids, "labels": encoding.labels}


def text_row(row: Row, encoder: RowEncoder) -> Row:
    encoding = encoder.text(row)
    return {"input_ids": encoding.input_ids, "labels": encoding.labels}


def tokenized_preference_row(row: Row, encoder: RowEncoder) -> Row:
    """DPO: the prompt's and each answer's tokens from the studio's encoder."""
    return encoder.preference(row).trainer_columns()


def preference_row(row: Row, encoder: RowEncoder) -> Row:
    """Conversational preference with an explicit prompt (ORPO, CPO/SimPO, reward), rendered
    by TRL with the locked template."""
    return {"prompt": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"]}


def kto_row(row: Row, encoder: RowEncoder) -> Row:
    """Conversational unpaired preference: prompt, completion and its good/bad label."""
    return {**to_prompt_completion(row), "label": bool(row["label"])}


def grpo_row(row: Row, encoder: RowEncoder) -> Row:
    """A prompt (conversational: TRL renders it with the locked template) and the reference
    answer an exact-match reward compares with."""
    return {"prompt": as_messages(row["prompt"]), "reference": str(row.get("reference") or "")}


def ppo_row(row: Row, encoder: RowEncoder) -> Row:
    """PPO takes the prompt's tokens, rendered with the generation prompt as served."""
    return {"input_ids": encoder.prompt(row).ids}


ROW_BUILDERS: dict[str, Callable[[Row, RowEncoder], Row]] = {
    "sft": sft_row,
    "pretrain": text_row,
    "dpo": tokenized_preference_row,
    "kto": kto_row,
    "orpo": preference_row,
    "simpo": preference_row,
    "reward": preference_row,
    "grpo": grpo_row,
    "ppo": ppo_row,
}


class StudioDPOTrainer(DPOTrainer):
    """DPOTrainer that takes rows the studio already tokenized (``prompt_ids``, ``chosen_ids``,
    ``rejected_ids``); it only drops rows whose prompt alone fills max_length, as TRL does."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):  # type: ignore[no-untyped-def]
        if "prompt_ids" not in dataset.column_names:
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        if args.max_length is not None and args.truncation_mode == "keep_start":
            dataset = dataset.filter(lambda row: len(row["prompt_ids"]) < args.max_length)
        return dataset


TRAINERS: dict[str, type[Trainer]] = {
    "sft": SFTTrainer,
    "pretrain": SFTTrainer,
    "dpo": StudioDPOTrainer,
    "kto": KTOTrainer,
    "orpo": ORPOTrainer,
    "simpo": CPOTrainer,
    "reward": RewardTrainer,
    "grpo": GRPOTrainer,
    "ppo": PPOTrainer,
}


def build_dataset(rows: list[Row], spec: TrainingSpec, encoder: RowEncoder) -> HFDataset:
    build = ROW_BUILDERS[spec.method]
    return HFDataset.from_list(encode_rows(rows, lambda row: build(row, encoder)))


def model_class(spec: TrainingSpec) -> type:
    """A reward model is the causal LM's body with a one-output score head (num_labels=1)."""
    return AutoModelForSequenceClassification if spec.method == "reward" else AutoModelForCausalLM


def model_kwargs(spec: TrainingSpec) -> dict:
    return {"num_labels": 1} if spec.method == "reward" else {}


def trainer_class(spec: TrainingSpec) -> type[Trainer]:
    return TRAINERS[spec.method]
