"""The worker's side of the method table (``app.methods``): one entry per method with its TRL
config class, its trainer, its row layout (canonical row -> what the trainer takes,
conversational where there are messages), its config knobs and any extra trainer keywords.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset as HFDataset
from transformers import PreTrainedTokenizerBase, Trainer, TrainingArguments

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # ORPO and CPO live in trl.experimental

from trl import (
    DPOConfig,
    DPOTrainer,
    GRPOConfig,
    GRPOTrainer,
    KTOConfig,
    KTOTrainer,
    RewardConfig,
    RewardTrainer,
    SFTConfig,
    SFTTrainer,
)
from trl.experimental.cpo import CPOConfig, CPOTrainer
from trl.experimental.orpo import ORPOConfig, ORPOTrainer
from trl.experimental.ppo import PPOConfig, PPOTrainer

from app.chat.rows import RowEncoder, encode_rows
from app.data.rowtext import as_messages
from app.methods import packs
from app.spec import TrainingSpec
from worker.training import rl
from worker.training.batch_rows import with_row_indices
from worker.training.packing import has_loss, pack

Row = dict
RowBuilder = Callable[[Row, RowEncoder], Row]
Kwargs = dict[str, Any]
# The keywords an RL trainer takes besides the common ones: (spec, reward model dir, tokenizer).
TrainerExtras = Callable[[TrainingSpec, Path | None, PreTrainedTokenizerBase], Kwargs]


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


class StudioDPOTrainer(DPOTrainer):
    """DPOTrainer that takes rows the studio already tokenized (``prompt_ids``, ``chosen_ids``,
    ``rejected_ids``); it only drops rows whose prompt alone fills max_length, as TRL does."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):  # type: ignore[no-untyped-def]
        if "prompt_ids" not in dataset.column_names:
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        if args.max_length is not None and args.truncation_mode == "keep_start":
            dataset = dataset.filter(lambda row: len(row["prompt_ids"]) < args.max_length)
        return dataset


class StudioSFTTrainer(SFTTrainer):
    """SFTTrainer that takes the rows the studio tokenized (``input_ids`` and ``labels``,
    truncated by the encoder) and the sequences it packed (with ``seq_lengths``,
    ``worker.training.packing``) as they are, only dropping rows that train on no token, as
    SFTTrainer does; its own preparation would also drop the column naming each batch's rows
    (with Liger). Any other dataset is prepared as SFTTrainer prepares it."""

    def _prepare_dataset(self, dataset, processing_class, args, packing, *rest):  # type: ignore[no-untyped-def]
        columns = dataset.column_names
        if "seq_lengths" in columns:
            return dataset
        if "input_ids" in columns and "labels" in columns and not packing:
            return dataset.filter(has_loss)
        return super()._prepare_dataset(dataset, processing_class, args, packing, *rest)


# The method knobs, as each method's TRL config names and expects them -------------------------


def sft_kwargs(spec: TrainingSpec) -> Kwargs:
    return {}  # the labels come with the studio's encoding (mapping.ENCODER_FIELDS)


def pretrain_kwargs(spec: TrainingSpec) -> Kwargs:
    """Plain causal LM loss on every token of the text."""
    return {"completion_only_loss": False, "dataset_text_field": "text"}


def dpo_kwargs(spec: TrainingSpec) -> Kwargs:
    """The spec's loss_type (DPO's choices) reaches DPOConfig as a one-item list."""
    return {
        "beta": spec.beta,
        "loss_type": [spec.loss_type],
        "label_smoothing": spec.label_smoothing,
    }


def kto_kwargs(spec: TrainingSpec) -> Kwargs:
    return {
        "beta": spec.beta,
        "desirable_weight": spec.desirable_weight,
        "undesirable_weight": spec.undesirable_weight,
    }


def orpo_kwargs(spec: TrainingSpec) -> Kwargs:
    return {"beta": spec.beta}


def simpo_kwargs(spec: TrainingSpec) -> Kwargs:
    """SimPO is CPOConfig with loss_type="simpo"."""
    return {
        "beta": spec.beta,
        "loss_type": "simpo",
        "simpo_gamma": spec.simpo_gamma,
        "cpo_alpha": spec.cpo_alpha,
    }


def reward_kwargs(spec: TrainingSpec) -> Kwargs:
    return {"center_rewards_coefficient": spec.center_rewards_coefficient or None}


def reward_weights(spec: TrainingSpec) -> list[float]:
    """GRPO: one weight per reward function, in the order worker.training.rl builds them (the
    rules, then the reward model at weight 1)."""
    scorer = spec.reward_checkpoint_id is not None or spec.reward_model is not None
    return [rule.weight for rule in spec.reward_functions] + ([1.0] if scorer else [])


def grpo_kwargs(spec: TrainingSpec) -> Kwargs:
    return {
        "beta": spec.beta,
        "num_generations": spec.num_generations,
        "max_completion_length": spec.max_completion_length,
        "temperature": spec.temperature,
        "reward_weights": reward_weights(spec),
    }


def ppo_episodes(spec: TrainingSpec) -> int | None:
    """PPO counts prompts (episodes), not steps: max_steps batches of rollouts when set."""
    if spec.max_steps <= 0:
        return None  # num_train_epochs passes over the prompts
    return spec.max_steps * spec.per_device_train_batch_size * spec.gradient_accumulation_steps


def ppo_kwargs(spec: TrainingSpec) -> Kwargs:
    return {
        "kl_coef": spec.kl_coef,
        "cliprange": spec.cliprange,
        "vf_coef": spec.vf_coef,
        "num_ppo_epochs": spec.num_ppo_epochs,
        "response_length": spec.max_completion_length,
        "temperature": spec.temperature,
        "stop_token": "eos",
        "num_mini_batches": 1,
        "num_sample_generations": 0,
        "total_episodes": ppo_episodes(spec),
    }


def no_extras(
    spec: TrainingSpec, reward_dir: Path | None, tokenizer: PreTrainedTokenizerBase
) -> Kwargs:
    return {}


# The table -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerMethod:
    config: type[TrainingArguments]
    trainer: type[Trainer]
    row: RowBuilder
    config_kwargs: Callable[[TrainingSpec], Kwargs]
    trainer_extras: TrainerExtras = no_extras
    resumes: bool = True  # the trainer can resume from a checkpoint (TRL's PPO loop cannot)


WORKER_METHODS: dict[str, WorkerMethod] = {
    # SFTTrainer trains pretrain on the "text" column.
    "sft": WorkerMethod(SFTConfig, StudioSFTTrainer, sft_row, sft_kwargs),
    "pretrain": WorkerMethod(SFTConfig, StudioSFTTrainer, text_row, pretrain_kwargs),
    "dpo": WorkerMethod(DPOConfig, StudioDPOTrainer, tokenized_preference_row, dpo_kwargs),
    "kto": WorkerMethod(KTOConfig, KTOTrainer, kto_row, kto_kwargs),
    "orpo": WorkerMethod(ORPOConfig, ORPOTrainer, preference_row, orpo_kwargs),
    "simpo": WorkerMethod(CPOConfig, CPOTrainer, preference_row, simpo_kwargs),
    "reward": WorkerMethod(RewardConfig, RewardTrainer, preference_row, reward_kwargs),
    "ppo": WorkerMethod(
        PPOConfig, PPOTrainer, ppo_row, ppo_kwargs, trainer_extras=rl.ppo_extras, resumes=False
    ),
    "grpo": WorkerMethod(
        GRPOConfig, GRPOTrainer, grpo_row, grpo_kwargs, trainer_extras=rl.grpo_extras
    ),
}


def worker_method(spec: TrainingSpec) -> WorkerMethod:
    try:
        return WORKER_METHODS[spec.method]
    except KeyError:
        raise ValueError(f"unknown method {spec.method!r}") from None


def build_dataset(
    rows: list[Row],
    spec: TrainingSpec,
    encoder: RowEncoder,
    row_indices: list[int] | None = None,
) -> HFDataset:
    """What the spec's trainer trains on: each row in the method's layout, with its
    ``DatasetRow.index`` when given (names a batch's rows), packed when the spec packs."""
    build = worker_method(spec).row
    dataset = HFDataset.from_list(encode_rows(rows, lambda row: build(row, encoder)))
    if row_indices is not None:
        dataset = with_row_indices(dataset, row_indices)
    return pack(dataset, spec.max_length) if packs(spec) else dataset


def trainer_class(spec: TrainingSpec) -> type[Trainer]:
    return worker_method(spec).trainer
