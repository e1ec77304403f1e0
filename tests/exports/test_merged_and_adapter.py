"""Merged and adapter exports without a worker: a merged export loads offline and predicts
like the PEFT model with the adapter applied; weights shard past the configured size (tested
with a tiny threshold); an adapter export is the adapter as trained plus the tokenizer with the
locked template, and loads with peft."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.support.exports import LOCKED, adapter_checkpoint, next_token_logits, tiny_base
from worker.export.merged import ADAPTER_FILES, export_adapter_dir, export_model_dir

SHARD_BYTES = 200_000  # the tiny model is about 25 MB in float32: many shards


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, bundled_model_dir: Path) -> Path:
    return tiny_base(tmp_path_factory.mktemp("base"), bundled_model_dir)


def _peft_logits(base_dir: Path, checkpoint: Path) -> torch.Tensor:
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), checkpoint)
    return next_token_logits(model.eval(), base_dir)


@pytest.mark.parametrize(
    "spec",
    [{"adapter": "lora", "lora_r": 4}, {"adapter": "dora", "lora_r": 4}, {"adapter": "ia3"}],
    ids=["lora", "dora", "ia3"],
)
def test_merged_export_loads_offline_and_matches_the_peft_model(
    base_dir: Path, tmp_path: Path, spec: dict
) -> None:
    checkpoint = adapter_checkpoint(base_dir, tmp_path / "ckpt", **spec)
    export_model_dir(base_dir, checkpoint, tmp_path / "out", LOCKED)

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "out", local_files_only=True)
    expected = _peft_logits(base_dir, checkpoint)
    actual = next_token_logits(merged, base_dir)
    assert torch.allclose(actual, expected, atol=1e-4), (actual - expected).abs().max()
    assert not torch.allclose(
        next_token_logits(AutoModelForCausalLM.from_pretrained(base_dir), base_dir),
        expected,
        atol=1e-2,
    )
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out", local_files_only=True)
    assert tokenizer.chat_template == LOCKED


def test_merged_weights_shard_past_the_threshold(base_dir: Path, tmp_path: Path) -> None:
    checkpoint = adapter_checkpoint(base_dir, tmp_path / "ckpt", adapter="lora", lora_r=4)
    export_model_dir(base_dir, checkpoint, tmp_path / "out", LOCKED, max_shard_size=SHARD_BYTES)

    out = tmp_path / "out"
    shards = sorted(out.glob("model-*.safetensors"))
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(shards) > 2 and not (out / "model.safetensors").exists()
    assert set(index["weight_map"].values()) == {p.name for p in shards}
    unsharded = tmp_path / "whole"
    export_model_dir(base_dir, checkpoint, unsharded, LOCKED)
    whole = load_file(unsharded / "model.safetensors")
    pieces = {k: v for p in shards for k, v in load_file(p).items()}
    assert pieces.keys() == whole.keys()
    assert all(torch.equal(pieces[k], whole[k]) for k in whole)
    reloaded = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    assert torch.allclose(
        next_token_logits(reloaded, base_dir),
        _peft_logits(base_dir, checkpoint),
        atol=1e-4,
    )


def test_a_full_checkpoint_is_resharded_when_too_large(base_dir: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint-2"
    AutoModelForCausalLM.from_pretrained(base_dir).save_pretrained(checkpoint)
    export_model_dir(base_dir, checkpoint, tmp_path / "out", LOCKED, max_shard_size=SHARD_BYTES)
    assert len(list((tmp_path / "out").glob("model-*.safetensors"))) > 2
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out", local_files_only=True)
    original = AutoModelForCausalLM.from_pretrained(base_dir)
    assert torch.equal(next_token_logits(reloaded, base_dir), next_token_logits(original, base_dir))
    assert AutoTokenizer.from_pretrained(tmp_path / "out").chat_template == LOCKED


def test_adapter_export_is_the_adapter_and_the_tokenizer(base_dir: Path, tmp_path: Path) -> None:
    checkpoint = adapter_checkpoint(base_dir, tmp_path / "ckpt", adapter="lora", lora_r=4)
    torch.save({"state": {}}, checkpoint / "optimizer.pt")
    (checkpoint / "trainer_state.json").write_text("{}")

    out = tmp_path / "out"
    export_adapter_dir(checkpoint, base_dir, out, LOCKED, "tiny-llama")

    names = {p.name for p in out.iterdir()}
    assert set(ADAPTER_FILES) <= names
    assert not names & {"optimizer.pt", "trainer_state.json", "model.safetensors"}
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny-llama"
    assert AutoTokenizer.from_pretrained(out).chat_template == LOCKED
    assert torch.equal(_peft_logits(base_dir, out), _peft_logits(base_dir, checkpoint)), (
        "the exported adapter must act like the trained one"
    )


def test_a_whole_model_checkpoint_has_no_adapter_to_export(base_dir: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint-2"
    AutoModelForCausalLM.from_pretrained(base_dir).save_pretrained(checkpoint)
    with pytest.raises(ValueError, match="nothing to separate"):
        export_adapter_dir(checkpoint, base_dir, tmp_path / "out", None, "tiny-llama")
