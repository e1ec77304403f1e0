"""The manifest and model card of an export archive, and which export kinds a run allows
(pure functions: no database, no torch)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest

from app.export_manifest import (
    MANIFEST_NAME,
    build_manifest,
    file_entries,
    metrics_at,
    model_card,
    template_entry,
    write_manifest,
)
from app.exports import download_filename, export_refusal
from app.models import Export, Job

LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}


def _manifest(kind: str = "merged", quantization: str | None = None, lineage=(7,)) -> dict:
    return build_manifest(
        export={"id": 3, "kind": kind, "quantization": quantization},
        job={"id": 5, "name": "colours", "method": "sft", "adapter": "lora", "spec_version": 2},
        checkpoint={"id": lineage[-1], "step": 12, "is_final": True},
        base_model={"name": "tiny-llama", "model_type": "llama"},
        lineage=list(lineage),
        spec={"learning_rate": 0.001, "lora_r": 8},
        chat_template=template_entry("{{ 'x' }}", "chatml", 2, 4),
        metrics={"step": 12, "values": {"loss": 0.5, "eval_loss": 0.75}},
        files=[],
    )


def test_file_entries_hash_every_file_but_the_manifest(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.bin").write_bytes(b"\x00" * 3000)
    (tmp_path / "sub" / "a.json").write_text("{}")
    (tmp_path / MANIFEST_NAME).write_text("{}")

    entries = file_entries(tmp_path)

    assert [e["path"] for e in entries] == ["b.bin", "sub/a.json"]
    assert entries[0] == {
        "path": "b.bin",
        "sha256": hashlib.sha256(b"\x00" * 3000).hexdigest(),
        "size": 3000,
    }
    assert entries[1]["sha256"] == hashlib.sha256(b"{}").hexdigest()


def test_manifest_is_written_as_json_with_its_facts(tmp_path: Path) -> None:
    manifest = _manifest("gguf", "q8_0", lineage=(2, 7))
    write_manifest(tmp_path, manifest)
    stored = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert stored == manifest
    assert stored["kind"] == "gguf" and stored["quantization"] == "q8_0"
    assert stored["base_model"]["name"] == "tiny-llama"
    assert stored["chat_template"] == {
        "name": "chatml",
        "template_id": 4,
        "version": 2,
        "sha256": hashlib.sha256(b"{{ 'x' }}").hexdigest(),
    }
    assert stored["spec"]["lora_r"] == 8 and stored["metrics"]["values"]["loss"] == 0.5


def test_metrics_at_a_step_keep_each_metrics_last_finite_value() -> None:
    rows = [
        {"step": 2, "loss": 2.0, "eval_loss": None},
        {"step": 4, "loss": 1.5, "eval_loss": 1.8},
        {"step": 6, "loss": math.nan, "grad_norm": 0.3},
        {"step": 8, "loss": 1.0},
    ]
    assert metrics_at(rows, 6) == {
        "step": 6,
        "values": {"loss": 1.5, "eval_loss": 1.8, "grad_norm": 0.3},
    }
    assert metrics_at(rows, 100)["values"]["loss"] == 1.0
    assert metrics_at(rows, 1) == {"step": None, "values": {}}


def test_no_template_is_recorded_as_none() -> None:
    assert template_entry(None, "chatml", 1, 1) is None
    assert template_entry("t", None, None, None)["name"] == "the base model's own template"


@pytest.mark.parametrize(
    ("kind", "quantization", "expected"),
    [
        ("merged", None, 'AutoModelForCausalLM.from_pretrained("job5-step12-merged")'),
        ("adapter", None, 'PeftModel.from_pretrained(base, "job5-step12-merged")'),
        ("gguf", "q8_0", 'gguf_file="model-q8_0.gguf"'),
    ],
)
def test_model_card_says_what_the_weights_are_and_how_to_load_them(
    kind: str, quantization: str | None, expected: str
) -> None:
    card = model_card(_manifest(kind, quantization), "job5-step12-merged", "model-q8_0.gguf")
    assert card.startswith("# colours: step 12")
    assert "**tiny-llama**" in card and "sft + lora" in card
    assert "chatml, version 2" in card
    assert "| eval_loss | 0.75 |" in card
    assert expected in card
    assert '"lora_r": 8' in card and MANIFEST_NAME in card


def test_model_card_of_a_chained_adapter_says_what_it_applies_to() -> None:
    card = model_card(_manifest("adapter", lineage=(2, 7)), "root")
    assert "started from checkpoint 2" in card
    assert "not to the base model alone" in card
    assert "started from" not in model_card(_manifest("adapter"), "root")


def _job(adapter: str, method: str = "sft") -> Job:
    return Job(adapter=adapter, method=method)


@pytest.mark.parametrize("adapter", ["lora", "dora", "qlora", "ia3"])
def test_weight_adapters_allow_every_kind(adapter: str) -> None:
    job = _job(adapter)
    assert export_refusal(job, "adapter", None, LLAMA) is None
    assert export_refusal(job, "merged", None, LLAMA) is None
    assert export_refusal(job, "gguf", "f16", LLAMA) is None
    assert export_refusal(job, "gguf", "q8_0", LLAMA) is None


@pytest.mark.parametrize("adapter", ["full", "freeze"])
def test_whole_model_runs_have_no_adapter_to_export(adapter: str) -> None:
    refusal = export_refusal(_job(adapter), "adapter", None, LLAMA)
    assert refusal and "no adapter to separate" in refusal and "merged" in refusal
    assert export_refusal(_job(adapter), "merged", None, LLAMA) is None
    assert export_refusal(_job(adapter), "gguf", "q8_0", LLAMA) is None


@pytest.mark.parametrize("adapter", ["prefix", "prompt", "ptuning"])
def test_prompt_learning_exports_only_the_adapter(adapter: str) -> None:
    job = _job(adapter)
    assert export_refusal(job, "adapter", None, LLAMA) is None
    assert "cannot be merged" in (export_refusal(job, "merged", None, LLAMA) or "")
    assert "cannot be merged" in (export_refusal(job, "gguf", "f16", LLAMA) or "")


def test_gguf_refuses_other_architectures_reward_models_and_unknown_options() -> None:
    job = _job("lora")
    qwen = {"model_type": "qwen2"}
    assert "Llama-family" in (export_refusal(job, "gguf", "f16", qwen) or "")
    assert "qwen2" in (export_refusal(job, "gguf", "f16", qwen) or "")
    assert "architecture is unknown" in (export_refusal(job, "gguf", "f16", None) or "")
    assert "score head" in (export_refusal(_job("lora", "reward"), "gguf", "f16", LLAMA) or "")
    assert "'q4_k'" in (export_refusal(job, "gguf", "q4_k", LLAMA) or "")
    assert "GGUF exports only" in (export_refusal(job, "merged", "q8_0", LLAMA) or "")
    assert "'onnx'" in (export_refusal(job, "onnx", None, LLAMA) or "")


def test_download_names_say_kind_and_quantization() -> None:
    gguf = Export(id=4, kind="gguf", manifest={"kind": "gguf", "quantization": "q8_0"})
    assert download_filename(gguf) == "ftstudio-export-4-gguf-q8_0.tar"
    assert download_filename(Export(id=5, kind="adapter")) == "ftstudio-export-5-adapter.tar"
