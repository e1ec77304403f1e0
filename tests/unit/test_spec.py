"""TrainingSpec and its pure mapping to TRL/peft objects."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.methods import METHODS
from app.spec import (
    HYPERPARAMETER_FIELDS,
    STUDIO_ONLY_FIELDS,
    TrainingSpec,
    field_methods,
)
from app.web.forms import applicable_fields
from worker.training.mapping import (
    ADAPTER_FIELDS,
    EARLY_STOPPING_FIELDS,
    ENCODER_FIELDS,
    LAUNCH_FIELDS,
    METHOD_CONFIG_FIELDS,
    METHOD_CONFIGS,
    REWARD_FIELDS,
    RULE_MAPPED_FIELDS,
    SFT_CONFIG_FIELDS,
    _precision_kwargs,
    early_stopping_callback,
    lora_config,
    method_config,
    sft_config,
)


def test_every_spec_field_is_mapped_or_studio_only() -> None:
    groups = [
        SFT_CONFIG_FIELDS,
        ENCODER_FIELDS,
        REWARD_FIELDS,
        RULE_MAPPED_FIELDS,
        METHOD_CONFIG_FIELDS,
        ADAPTER_FIELDS,
        EARLY_STOPPING_FIELDS,
        LAUNCH_FIELDS,
        STUDIO_ONLY_FIELDS,
    ]
    mapped = set().union(*groups)
    assert set(TrainingSpec.model_fields) == mapped
    assert sum(len(set(g)) for g in groups) == len(mapped), "a field is mapped twice"
    assert set(HYPERPARAMETER_FIELDS) == set(TrainingSpec.model_fields) - STUDIO_ONLY_FIELDS


def test_every_field_has_help_text() -> None:
    assert all(info.description for info in TrainingSpec.model_fields.values())


def test_sft_config_carries_the_spec(tmp_path: Path) -> None:
    spec = TrainingSpec(
        max_steps=30,
        learning_rate=1e-4,
        warmup_steps=0.1,
        logging_steps=3,
        gradient_checkpointing="on",
    )
    config = sft_config(spec, tmp_path, use_cpu=True)
    for name in SFT_CONFIG_FIELDS:
        assert getattr(config, name) == getattr(spec, name), name
    assert config.activation_checkpointing is True  # transformers 5's name for it
    assert config.output_dir == str(tmp_path)
    assert config.report_to == ["tensorboard"]
    assert config.logging_nan_inf_filter is False  # a NaN loss is logged as NaN
    assert not config.load_best_model_at_end  # no early stopping without an eval dataset


def test_lora_config_targets() -> None:
    assert lora_config(TrainingSpec()).target_modules == "all-linear"
    config = lora_config(TrainingSpec(lora_target_modules="q_proj, v_proj", lora_r=4, lora_alpha=8))
    assert set(config.target_modules) == {"q_proj", "v_proj"}
    assert (config.r, config.lora_alpha) == (4, 8)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"learning_rate": 0}, r"learning_rate\n\s+Input should be greater than 0"),
        ({"lora_r": 0}, r"lora_r\n\s+Input should be greater than or equal to 1"),
        ({"warmup_steps": 2.5}, "warmup_steps must be a whole number of steps"),
        ({"max_steps": 5, "logging_steps": 10}, "logging_steps is larger than max_steps"),
        ({"lora_target_modules": "q_proj; rm -rf"}, r"lora_target_modules\n\s+String should match"),
        ({"unknown_knob": 1}, r"unknown_knob\n\s+Extra inputs are not permitted"),
        ({"method": "ppo"}, "PPO needs a reward model"),
        ({"beta": 0.5}, "beta: applies to method .* not to sft"),  # sft has no beta
        ({"method": "dpo", "simpo_gamma": 1.0}, "simpo_gamma: applies to method simpo, not to dpo"),
        # SimPO's loss is fixed
        ({"method": "simpo", "loss_type": "ipo"}, "loss_type: applies to method dpo, not to simpo"),
        (
            {"method": "kto", "completion_only_loss": True},
            "completion_only_loss: applies to method sft, not to kto",
        ),
        (
            {"method": "dpo", "loss_type": "no-such-loss"},
            r"loss_type\n\s+Input should be 'sigmoid'",
        ),
        ({"method": "dpo", "adapter": "prefix"}, "dpo cannot train prefix adapters"),
        ({"method": "reward", "adapter": "freeze"}, "a reward model needs its new score head"),
    ],
)
def test_invalid_specs_are_refused(bad: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TrainingSpec(**bad)


def test_every_method_has_a_dataset_kind_and_a_trl_config() -> None:
    assert set(METHODS) == set(METHOD_CONFIGS)
    for name in METHOD_CONFIG_FIELDS:
        assert field_methods(name), f"{name} does not say which methods it applies to"


@pytest.mark.parametrize(
    ("method", "config_class", "knobs", "expected"),
    [
        (
            "pretrain",
            "SFTConfig",
            {},
            {"completion_only_loss": False, "dataset_text_field": "text"},
        ),
        (
            "dpo",
            "DPOConfig",
            {"beta": 0.3, "loss_type": "robust", "label_smoothing": 0.1},
            {"beta": 0.3, "loss_type": ["robust"], "label_smoothing": 0.1},
        ),
        (
            "kto",
            "KTOConfig",
            {"beta": 0.2, "desirable_weight": 1.5, "undesirable_weight": 0.5},
            {"beta": 0.2, "desirable_weight": 1.5, "undesirable_weight": 0.5},
        ),
        ("orpo", "ORPOConfig", {"beta": 0.25}, {"beta": 0.25}),
        (
            "simpo",
            "CPOConfig",
            {"beta": 2.0, "simpo_gamma": 1.2},
            {"beta": 2.0, "loss_type": "simpo", "simpo_gamma": 1.2, "cpo_alpha": 0.0},
        ),
        (
            "reward",
            "RewardConfig",
            {"center_rewards_coefficient": 0.01},
            {"center_rewards_coefficient": 0.01},
        ),
    ],
)
def test_method_config_carries_the_method_knobs(
    tmp_path: Path, method: str, config_class: str, knobs: dict, expected: dict
) -> None:
    spec = TrainingSpec(method=method, max_steps=7, learning_rate=1e-3, max_length=128, **knobs)
    config = method_config(spec, tmp_path, use_cpu=True)
    assert type(config).__name__ == config_class
    for name, value in expected.items():
        assert getattr(config, name) == value, name
    assert (config.max_steps, config.learning_rate, config.max_length) == (7, 1e-3, 128)


def test_the_form_shows_only_the_knobs_of_the_chosen_method() -> None:
    dpo = applicable_fields({"method": "dpo", "adapter": "lora"})
    assert {"beta", "loss_type", "label_smoothing", "lora_r"} <= dpo
    assert not {"simpo_gamma", "desirable_weight", "completion_only_loss"} & dpo
    sft = applicable_fields({"method": "sft", "adapter": "lora"})
    assert "completion_only_loss" in sft and "beta" not in sft
    assert "simpo_gamma" in applicable_fields({"method": "simpo", "adapter": "full"})


def test_early_stopping_maps_to_the_callback_and_aligned_saves(tmp_path: Path) -> None:
    spec = TrainingSpec(
        max_steps=100,
        logging_steps=4,
        save_steps=10,
        early_stopping_patience=3,
        early_stopping_threshold=0.01,
    )
    config = method_config(spec, tmp_path, has_eval=True, use_cpu=True)
    assert config.load_best_model_at_end and config.metric_for_best_model == "eval_loss"
    assert config.greater_is_better is False
    assert (config.eval_steps, config.save_steps) == (4, 12)  # saves on evaluation steps
    callback = early_stopping_callback(spec, has_eval=True)
    assert callback is not None
    assert (callback.early_stopping_patience, callback.early_stopping_threshold) == (3, 0.01)
    # Without an eval dataset there is nothing to stop on.
    assert early_stopping_callback(spec, has_eval=False) is None
    assert not method_config(spec, tmp_path, use_cpu=True).load_best_model_at_end
    assert early_stopping_callback(TrainingSpec(), has_eval=True) is None


def test_early_stopping_threshold_needs_early_stopping() -> None:
    with pytest.raises(ValidationError, match="early_stopping_threshold"):
        TrainingSpec(early_stopping_threshold=0.1)


def test_optimizer_precision_neftune_packing_and_eval_steps_reach_the_config(tmp_path) -> None:
    spec = TrainingSpec(
        optim="paged_adamw_8bit",
        precision="fp16",
        neftune_noise_alpha=5.0,
        packing=True,
        eval_steps=7,
    )
    config = method_config(spec, tmp_path, has_eval=True, use_cpu=True)
    assert config.optim == "paged_adamw_8bit" and config.neftune_noise_alpha == 5.0
    assert config.eval_steps == 7 and config.packing and config.packing_strategy == "bfd"
    assert not config.fp16 and not config.bf16  # CPU computes in fp32 whatever the spec says
    assert _precision_kwargs(spec, False, None) == {"bf16": False, "fp16": True}
    assert _precision_kwargs(TrainingSpec(precision="bf16"), False, None)["bf16"] is True
    assert _precision_kwargs(TrainingSpec(), False, None) == {"bf16": None}
    # what the device resolved (worker.devices) wins; CPU runs compute in fp32
    assert _precision_kwargs(TrainingSpec(), False, "fp16") == {"bf16": False, "fp16": True}
    assert _precision_kwargs(TrainingSpec(precision="bf16"), True, None) == {
        "bf16": False,
        "fp16": False,
    }
    assert method_config(TrainingSpec(), tmp_path, has_eval=True, use_cpu=True).eval_steps == 5
    assert method_config(TrainingSpec(), tmp_path, use_cpu=True).eval_strategy == "no"
    with pytest.raises(ValidationError, match="neftune_noise_alpha"):
        TrainingSpec(method="dpo", neftune_noise_alpha=5.0)


def test_a_version_1_spec_reads_as_it_was_made() -> None:
    """Version 1 stored packing false for every method; version 2 packs SFT by default."""
    dpo = TrainingSpec(method="dpo").model_dump() | {"packing": False}
    with pytest.raises(ValueError, match="packing"):
        TrainingSpec.model_validate(dpo)
    assert TrainingSpec.from_stored(dpo, 1).method == "dpo"
    sft = TrainingSpec().model_dump() | {"packing": False}
    del sft["liger_kernels"]
    old = TrainingSpec.from_stored(sft, 1)
    assert (old.packing, old.liger_kernels) == (False, "off")  # a resumed run trains as before
    assert TrainingSpec.from_stored(TrainingSpec().model_dump(), 2) == TrainingSpec()


def test_every_number_of_the_spec_has_bounds_a_database_and_a_trainer_accept() -> None:
    """An unbounded knob once reached the database or the trainer past 2^63 (a 500)."""
    schema = TrainingSpec.model_json_schema()["properties"]
    for name, prop in schema.items():
        branches = prop.get("anyOf", [prop])
        for branch in branches:
            if branch.get("type") in ("integer", "number") and "enum" not in branch:
                top = branch.get("maximum", branch.get("exclusiveMaximum"))
                assert top is not None and top <= 2**31 - 1, (name, branch)
    with pytest.raises(ValueError, match="save_steps"):
        TrainingSpec(save_steps=2**63)
