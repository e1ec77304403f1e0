"""TrainingSpec and its pure mapping to TRL/peft objects."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.spec import HYPERPARAMETER_FIELDS, STUDIO_ONLY_FIELDS, TrainingSpec
from worker.training.mapping import (
    ADAPTER_FIELDS,
    SFT_CONFIG_FIELDS,
    SFT_CONFIG_RENAMED,
    lora_config,
    sft_config,
)


def test_every_spec_field_is_mapped_or_studio_only() -> None:
    groups = [SFT_CONFIG_FIELDS, SFT_CONFIG_RENAMED, ADAPTER_FIELDS, STUDIO_ONLY_FIELDS]
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
        gradient_checkpointing=True,
    )
    config = sft_config(spec, tmp_path, use_cpu=True)
    for name in SFT_CONFIG_FIELDS:
        assert getattr(config, name) == getattr(spec, name), name
    for ours, theirs in SFT_CONFIG_RENAMED.items():
        assert getattr(config, theirs) == getattr(spec, ours), ours
    assert config.output_dir == str(tmp_path)
    assert config.report_to in ([], "none", ["none"])


def test_lora_config_targets() -> None:
    assert lora_config(TrainingSpec()).target_modules == "all-linear"
    config = lora_config(TrainingSpec(lora_target_modules="q_proj, v_proj", lora_r=4, lora_alpha=8))
    assert set(config.target_modules) == {"q_proj", "v_proj"}
    assert (config.r, config.lora_alpha) == (4, 8)


@pytest.mark.parametrize(
    "bad",
    [
        {"learning_rate": 0},
        {"lora_r": 0},
        {"warmup_steps": 2.5},
        {"max_steps": 5, "logging_steps": 10},
        {"lora_target_modules": "q_proj; rm -rf"},
        {"unknown_knob": 1},
        {"method": "ppo"},
    ],
)
def test_invalid_specs_are_refused(bad: dict) -> None:
    with pytest.raises(ValidationError):
        TrainingSpec(**bad)
