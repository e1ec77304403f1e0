"""The estimate's arithmetic at real-model scale, against published counts (no torch here)."""

from __future__ import annotations

import pytest

from app.architecture import architecture, count_parameters, model_conflicts
from app.estimate import GIB, estimate, memory_breakdown
from app.spec import TrainingSpec

LLAMA2_7B = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
}
SMOLLM2_135M = {
    "model_type": "llama",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
}


def test_published_parameter_counts() -> None:
    llama = architecture(LLAMA2_7B)
    assert llama.total_params == 6_738_415_616  # Llama-2-7b
    # peft's README: "trainable params: 4,194,304 || all params: 6,742,609,920"
    count = count_parameters(llama, TrainingSpec(lora_r=8, lora_target_modules="q_proj,v_proj"))
    assert (count.trainable, count.total) == (4_194_304, 6_742_609_920)
    assert architecture(SMOLLM2_135M).total_params == 134_515_008  # SmolLM2-135M


def test_memory_by_adapter_at_7b() -> None:
    arch = architecture(LLAMA2_7B)

    def memory(**values) -> dict:
        spec = TrainingSpec(max_length=512, per_device_train_batch_size=1, **values)
        return memory_breakdown(arch, spec, count_parameters(arch, spec), 512)

    full = memory(adapter="full")
    assert full["weights"] == 2 * arch.total_params  # fp16 weights
    assert full["gradients"] == 2 * arch.total_params
    assert full["optimizer"] == 4 * arch.total_params  # two fp16 AdamW moments
    qlora = memory(adapter="qlora")
    # 4-bit block weights (~0.53 byte with double-quantized scales) + fp32 embeddings and head.
    assert 3.9 * GIB < qlora["weights"] < 4.6 * GIB
    assert qlora["weight_dtype"] == "nf4/fp4"
    eight = memory(adapter="qlora", quantization_bits=8)
    assert full["reference_model"] == 0  # SFT has no reference model
    dpo_full = memory(adapter="full", method="dpo")
    assert dpo_full["reference_model"] == 2 * arch.total_params  # TRL's frozen copy
    assert dpo_full["total"] > full["total"]
    assert memory(adapter="lora", method="dpo")["reference_model"] == 0  # adapter switched off
    assert qlora["weights"] < eight["weights"] < memory(adapter="lora")["weights"]
    assert (
        memory(adapter="lora", gradient_checkpointing="on")["activations"]
        < memory(adapter="lora")["activations"]
    )


def test_fit_warnings_say_what_to_change() -> None:
    arch = architecture(LLAMA2_7B)
    result = estimate(arch, TrainingSpec(adapter="full"), None, device_memory_bytes=24 * GIB)
    assert result["fits"] is False
    assert "LoRA or QLoRA" in result["warnings"][0]
    lora = estimate(arch, TrainingSpec(adapter="lora"), None, device_memory_bytes=24 * GIB)
    assert lora["tokens_per_epoch"] is None and lora["fits"] is not None
    qlora = estimate(
        arch,
        TrainingSpec(adapter="qlora", max_length=512, per_device_train_batch_size=1),
        None,
        device_memory_bytes=24 * GIB,
    )
    assert qlora["fits"] is True and qlora["warnings"] == []
    unknown = estimate(arch, TrainingSpec(adapter="qlora"), None, device_memory_bytes=0)
    assert unknown["fits"] is None


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"adapter": "freeze", "freeze_trainable_layers": 33}, "freeze_trainable_layers"),
        ({"adapter": "lora", "lora_target_modules": "query_key_value"}, "lora_target_modules"),
        ({"adapter": "ia3", "ia3_target_modules": "c_attn", "ia3_feedforward_modules": ""}, None),
    ],
)
def test_conflicts_with_the_model(values: dict, field: str | None) -> None:
    problems = dict(model_conflicts(TrainingSpec(**values), architecture(LLAMA2_7B)))
    assert (field or "ia3_target_modules") in problems


def test_tied_models_train_embeddings_and_head_together() -> None:
    tied = architecture(SMOLLM2_135M)
    spec = TrainingSpec(adapter="freeze", freeze_train_lm_head=True)
    assert "freeze_train_lm_head" in dict(model_conflicts(spec, tied))
    both = TrainingSpec(adapter="freeze", freeze_train_lm_head=True, freeze_train_embeddings=True)
    assert model_conflicts(both, tied) == []
    # One tensor: counted once.
    counted = count_parameters(tied, both).trainable
    assert counted == 2 * tied.block_params + tied.embedding_params


def test_auto_checkpointing_recomputes_activations_only_when_the_run_would_not_fit() -> None:
    """auto (the default) turns gradient checkpointing on exactly when the run would need more
    than 90 % of the device's memory without it, and the estimate counts what the run will do."""
    arch = architecture(LLAMA2_7B)
    long = {"adapter": "lora", "max_length": 4096, "per_device_train_batch_size": 4}
    spec = TrainingSpec(**long)
    assert spec.gradient_checkpointing == "auto"
    without = estimate(arch, TrainingSpec(**long, gradient_checkpointing="off"), None, 80 * GIB)
    assert without["fits"] is False
    assert "set gradient_checkpointing to auto or on" in without["warnings"][0]
    chosen = estimate(arch, spec, None, device_memory_bytes=80 * GIB)
    assert chosen["gradient_checkpointing"].startswith("on: without it")
    assert chosen["memory_breakdown"]["gradient_checkpointing"] is True
    assert chosen["memory_bytes"] < without["memory_bytes"] and chosen["fits"] is True
    forced = estimate(arch, TrainingSpec(**long, gradient_checkpointing="on"), None, 80 * GIB)
    assert forced["memory_bytes"] == chosen["memory_bytes"]
    assert forced["gradient_checkpointing"] == "on (as asked)"

    short = TrainingSpec(adapter="lora", max_length=512, per_device_train_batch_size=1)
    small = estimate(arch, short, None, device_memory_bytes=80 * GIB)
    assert small["gradient_checkpointing"].startswith("off: fits in")
    assert small["memory_breakdown"]["gradient_checkpointing"] is False
    unknown = estimate(arch, spec, None, device_memory_bytes=0)
    assert unknown["gradient_checkpointing"] == "off: the device's memory is not known"
    prefix = estimate(arch, TrainingSpec(**{**long, "adapter": "prefix"}), None, 8 * GIB)
    assert prefix["gradient_checkpointing"] == "off: prefix tuning cannot use it"


def test_packed_runs_are_estimated_at_max_length() -> None:
    """Packed bins fill up to max_length whatever the longest row (or hold a small dataset
    whole); unpacked rows are as long as the longest one."""
    from app.estimate import TokenCount

    arch = architecture(SMOLLM2_135M)
    tokens = TokenCount(tokens_per_epoch=10_000, longest=300, rows=100, source="test")
    packed = estimate(arch, TrainingSpec(max_length=2048), tokens, 80 * GIB)
    unpacked = estimate(arch, TrainingSpec(max_length=2048, packing=False), tokens, 80 * GIB)
    assert packed["memory_breakdown"]["sequence_length"] == 2048
    assert unpacked["memory_breakdown"]["sequence_length"] == 300
    few = TokenCount(tokens_per_epoch=900, longest=300, rows=3, source="test")
    assert (
        estimate(arch, TrainingSpec(max_length=2048), few)["memory_breakdown"]["sequence_length"]
        == 900
    )


def test_checkpointing_reads_the_true_and_false_of_older_specs() -> None:
    assert TrainingSpec(gradient_checkpointing=True).gradient_checkpointing == "on"
    assert TrainingSpec(gradient_checkpointing=False).gradient_checkpointing == "off"
    stored = TrainingSpec(gradient_checkpointing=False).model_dump()
    assert TrainingSpec.from_stored(stored, 2).gradient_checkpointing == "off"  # kept as it ran
