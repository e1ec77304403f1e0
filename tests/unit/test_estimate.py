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
        memory(adapter="lora", gradient_checkpointing=True)["activations"]
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
