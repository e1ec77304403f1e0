"""The plain peer of the studio's SFT job: the TRL script a user would write by hand.

    python bench/plain_sft.py CONFIG.json RESULT.json

It loads the model directory with ``AutoModelForCausalLM`` / ``AutoTokenizer``, turns each record
(Alpaca ``instruction``/``input``/``output``, or chat ``messages``) into a conversational
prompt/completion pair (TRL renders it with the model's own chat template and trains on the
completion), and trains a peft LoRA adapter with ``SFTTrainer`` and ``SFTConfig`` (packing off:
padded batches), then saves the adapter. Nothing from the studio is imported.

CONFIG holds ``model_dir``, ``data_file``, ``output_dir`` and ``hyper`` (the SFTConfig and
LoraConfig values). The only additions to what a user would write are measurements: a callback
that stamps each log with ``time.time()``, and a forward pre-hook that counts the tokens each
forward pass computes (padding included) and the real ones (its attention mask). RESULT gets
the log rows, those counts and the time spent in ``trainer.train()``.
"""

from __future__ import annotations

import json
import sys
import time

STARTED = time.time()

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from peft import LoraConfig  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    TrainerCallback,
    set_seed,
)
from trl import SFTConfig, SFTTrainer  # noqa: E402


def read_records(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        if path.endswith(".jsonl"):
            return [json.loads(line) for line in f if line.strip()]
        return json.load(f)


def messages_of(record: dict) -> list[dict]:
    if "messages" in record:
        return record["messages"]
    instruction, extra = record.get("instruction", ""), record.get("input", "")
    prompt = f"{instruction}\n\n{extra}" if instruction and extra else instruction or extra
    return [
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": record["output"]},
    ]


class Stamps(TrainerCallback):
    """Measurement: each log row with the time it was written."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.rows.append({"step": state.global_step, "time": time.time(), **logs})


def main() -> None:
    with open(sys.argv[1]) as f:
        config = json.load(f)
    hyper = config["hyper"]
    use_cpu = not torch.cuda.is_available()

    tokenizer = AutoTokenizer.from_pretrained(config["model_dir"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    bf16 = hyper.get("precision") == "bf16"  # the GPU check; fp32 otherwise, as on a CPU
    dtype = torch.bfloat16 if bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(config["model_dir"], dtype=dtype)
    rows = []
    for record in read_records(config["data_file"]):
        messages = messages_of(record)
        rows.append({"prompt": messages[:-1], "completion": messages[-1:]})
    data = Dataset.from_list(rows)

    args = SFTConfig(
        output_dir=config["output_dir"],
        max_steps=hyper["max_steps"],
        learning_rate=hyper["learning_rate"],
        lr_scheduler_type=hyper["lr_scheduler_type"],
        warmup_steps=hyper["warmup_steps"],
        weight_decay=hyper["weight_decay"],
        max_grad_norm=hyper["max_grad_norm"],
        per_device_train_batch_size=hyper["per_device_train_batch_size"],
        gradient_accumulation_steps=hyper["gradient_accumulation_steps"],
        max_length=hyper["max_length"],
        seed=hyper["seed"],
        logging_steps=hyper["logging_steps"],
        packing=False,
        save_strategy="no",
        report_to="none",
        use_cpu=use_cpu,
        bf16=bf16,
        disable_tqdm=True,
    )
    peft_config = LoraConfig(
        r=hyper["lora_r"],
        lora_alpha=hyper["lora_alpha"],
        lora_dropout=hyper["lora_dropout"],
        target_modules=hyper["lora_target_modules"],
        task_type="CAUSAL_LM",
    )
    stamps = Stamps()
    set_seed(hyper["seed"])  # before SFTTrainer initialises the LoRA weights
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[stamps],
    )

    counted = {"computed": 0, "real": 0, "forwards": 0}

    def count(module, args, kwargs):  # measurement
        ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
        if ids is not None and module.training:
            counted["computed"] += ids.numel()
            counted["real"] += int(mask.sum()) if mask is not None else ids.numel()
            counted["forwards"] += 1

    trainer.model.register_forward_pre_hook(count, with_kwargs=True)
    train_start = time.time()
    trainer.train()
    train_end = time.time()
    trainer.save_model(config["output_dir"] + "/final")
    result = {
        "started": STARTED,
        "train_start": train_start,
        "train_end": train_end,
        "logs": stamps.rows,
        "tokens": counted,
        "finished": time.time(),
    }
    with open(sys.argv[2], "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
