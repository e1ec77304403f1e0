"""What the studio shows is what the trainer trains on: for SFT (multi-turn, with system and
tool turns) and DPO rows, the tokens the "what the model sees" API highlights equal the
trainer's input tokens whose labels are not ignored, position by position."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from app.chat.encoding import ChatFormat
from app.chat.rows import RowEncoder
from app.chat.tokenizer import load_model_tokenizer
from app.db import session_scope
from app.jobs import find_base_model
from app.spec import TrainingSpec
from tests.conftest import Account
from tests.support.datasets import upload_rows
from worker.training.mapping import method_config
from worker.training.methods import build_dataset, trainer_class

TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
SFT_ROWS = [
    {
        "messages": [
            {"role": "system", "content": "You answer with one word."},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "type": "function",
                        "function": {"name": "lookup", "arguments": {"q": "Paris"}},
                    }
                ],
            },
            {"role": "tool", "content": '{"sky": "sunny"}'},
            {"role": "assistant", "content": "Sunny."},
            {"role": "user", "content": "And tomorrow?"},
            {"role": "assistant", "content": "Rain."},
        ],
        "tools": TOOLS,
    },
    {
        "messages": [
            {"role": "user", "content": "Say hi " * 10},
            {"role": "assistant", "content": "hi " * 60},
        ]
    },
    {  # the prompt alone fills max_length: nothing left to train on, the trainer drops it
        "messages": [
            {"role": "user", "content": "Say hi " * 60},
            {"role": "assistant", "content": "hi"},
        ]
    },
]
DPO_ROWS = [
    {
        "prompt": [
            {"role": "system", "content": "Be polite."},
            {"role": "user", "content": "Greet me."},
        ],
        "chosen": [{"role": "assistant", "content": "Good morning, it is a pleasure."}],
        "rejected": [{"role": "assistant", "content": "What do you want?"}],
    },
    {  # long answers: max_length cuts them, as the trainer's collator does
        "prompt": [{"role": "user", "content": "Long question " * 20}],
        "chosen": [{"role": "assistant", "content": "yes " * 40}],
        "rejected": [{"role": "assistant", "content": "no " * 50}],
    },
]


def _seen(client, account: Account, dataset_id: int, index: int, **params) -> list[dict]:
    response = client.get(
        f"/api/datasets/{dataset_id}/rows/{index}/seen", headers=account.headers, params=params
    )
    assert response.status_code == 200, response.text
    return response.json()["sequences"]


def _trainer(spec: TrainingSpec, model_dir: Path, rows: list[dict], template: str, out: Path):
    """The trainer as the worker builds it (worker.training.run), on the tiny model."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = template
    model_tokens = load_model_tokenizer(model_dir)
    encoder = RowEncoder.for_spec(
        spec, ChatFormat(template, model_tokens.special_tokens), model_tokens
    )
    dataset = build_dataset(rows, spec, encoder)
    return trainer_class(spec)(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        args=method_config(spec, out, use_cpu=True),
        train_dataset=dataset,
        processing_class=tokenizer,
    )


def _packed_rows(dataset) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Each row of each packed sequence: its tokens and which of them train."""
    rows = []
    for example in dataset:
        start = 0
        for length in example["seq_lengths"]:
            ids = example["input_ids"][start : start + length]
            labels = example["labels"][start : start + length]
            rows.append((tuple(ids), tuple(int(label != -100) for label in labels)))
            start += length
    return rows


def _dataset_rows(dataset_id: int) -> tuple[list[dict], Path, str]:
    from app.chat import library
    from app.models import Dataset
    from worker.training.run import load_rows

    with session_scope() as session:
        dataset = session.get(Dataset, dataset_id)
        assert dataset is not None
        model = find_base_model(session, "tiny-llama")
        template = library.default_for(session, model).source
        return load_rows(dataset_id), Path(model.path), template


@pytest.mark.parametrize("loss", ["assistant", "last", "all"])
def test_sft_highlighted_tokens_are_the_trainers_labels(
    client, alice: Account, tiny_model: str, tmp_path: Path, loss: str
) -> None:
    dataset_id = upload_rows(client, alice, "sft", SFT_ROWS, "multi.jsonl")
    rows, model_dir, template = _dataset_rows(dataset_id)
    spec = TrainingSpec(
        method="sft",
        adapter="full",
        max_length=96,
        assistant_only_loss=loss != "all",
        completion_only_loss=loss == "last",
        packing=False,  # one row a sequence; packed: the test below
    )
    trainer = _trainer(spec, model_dir, rows, template, tmp_path)
    views = [
        _seen(client, alice, dataset_id, i, model=tiny_model, max_length=96, loss=loss)[0]
        for i in range(len(rows))
    ]
    trains = [v for v in views if v["trains"]]
    assert len(trainer.train_dataset) == len(trains)  # the rows the view flags as dropped
    assert [v["trains"] for v in views] == [True, True, loss == "all"]
    packed = _trainer(
        spec.model_copy(update={"packing": True}), model_dir, rows, template, tmp_path
    )
    assert sorted(_packed_rows(packed.train_dataset)) == sorted(
        (tuple(v["token_ids"][: v["kept"]]), tuple(v["loss_mask"][: v["kept"]])) for v in trains
    )
    for seen, example in zip(trains, trainer.train_dataset, strict=True):
        batch = trainer.data_collator([example])
        input_ids = batch["input_ids"][0].tolist()
        labels = batch["labels"][0].tolist()
        assert input_ids == seen["token_ids"][: seen["kept"]]
        trained = [i for i, label in enumerate(labels) if label != -100]
        assert trained == [i for i, m in enumerate(seen["loss_mask"]) if m]
        assert [labels[i] for i in trained] == [input_ids[i] for i in trained]
    pairs = zip(views[0]["tokens"], views[0]["loss_mask"], strict=True)
    trained_text = "".join(t for t, m in pairs if m)
    if loss == "assistant":  # every assistant turn, the one calling the tool too; nothing else
        for answer in ("Checking.", "Sunny.", "Rain."):
            assert f"{answer}<|im_end|>" in trained_text
        for other in ('"sky"', "Weather", "one word", "tomorrow"):
            assert other not in trained_text
    if loss == "last":
        assert trained_text.strip() == "Rain.<|im_end|>"
    assert views[1]["truncated"] and views[1]["kept"] == 96


def test_dpo_highlighted_tokens_are_the_trainers_completion(
    client, alice: Account, tiny_model: str, tmp_path: Path
) -> None:
    dataset_id = upload_rows(client, alice, "preference", DPO_ROWS, "pairs.jsonl")
    rows, model_dir, template = _dataset_rows(dataset_id)
    spec = TrainingSpec(method="dpo", adapter="full", max_length=80)
    trainer = _trainer(spec, model_dir, rows, template, tmp_path)
    assert len(trainer.train_dataset) == len(rows)
    for index, example in enumerate(trainer.train_dataset):
        chosen, rejected = _seen(client, alice, dataset_id, index, model=tiny_model, max_length=80)
        assert (chosen["label"], rejected["label"]) == ("chosen", "rejected")
        batch = trainer.data_collator([example])  # chosen first, then rejected
        for row, seen in enumerate((chosen, rejected)):
            length = int(batch["attention_mask"][row].sum())
            assert batch["input_ids"][row][:length].tolist() == seen["token_ids"][: seen["kept"]]
            completion = batch["completion_mask"][row][:length].tolist()
            assert completion == seen["loss_mask"][: seen["kept"]]
    first_chosen = _seen(client, alice, dataset_id, 0, model=tiny_model, max_length=80)[0]
    trained = "".join(
        t for t, m in zip(first_chosen["tokens"], first_chosen["loss_mask"], strict=True) if m
    )
    assert trained.startswith("Good morning") and "<|im_end|>" in trained
    assert "Greet me" not in trained
    long_chosen, long_rejected = _seen(
        client, alice, dataset_id, 1, model=tiny_model, max_length=80
    )
    assert long_chosen["truncated"] and long_rejected["kept"] == 80
