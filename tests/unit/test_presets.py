"""Every shipped preset validates, maps to library objects, and is offered by API and form."""

from __future__ import annotations

from pathlib import Path

import pytest
from bs4 import BeautifulSoup

from app.presets import PRESETS, preset_values
from app.spec import TrainingSpec
from tests.conftest import Account
from worker.training.adapters import peft_config, quantization_config
from worker.training.mapping import sft_config


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_preset_is_a_valid_spec_that_maps(preset, tmp_path: Path) -> None:
    spec = preset.spec()
    assert spec.model_dump() == TrainingSpec.model_validate(preset.values).model_dump()
    config = sft_config(spec, tmp_path, use_cpu=True)
    assert config.learning_rate == spec.learning_rate
    if spec.adapter in ("full", "freeze"):
        assert peft_config(spec) is None
    else:
        assert peft_config(spec) is not None
    assert (quantization_config(spec) is not None) == (spec.adapter == "qlora")


def test_preset_numbers_follow_common_practice() -> None:
    for preset in PRESETS:
        spec = preset.spec()
        if spec.adapter in ("lora", "dora", "qlora"):
            assert 8 <= spec.lora_r <= 64 and spec.lora_alpha == 2 * spec.lora_r, preset.name
            assert 5e-5 <= spec.learning_rate <= 2e-4, preset.name
        if spec.adapter == "full":
            assert 1e-5 <= spec.learning_rate <= 5e-5
        assert spec.max_grad_norm == 1.0 and spec.warmup_steps <= 0.05


def test_api_lists_presets_and_each_estimates(client, alice: Account, tiny_model: str) -> None:
    listed = client.get("/api/presets", headers=alice.headers).json()
    assert [p["name"] for p in listed] == [p.name for p in PRESETS]
    upload = client.post(
        "/api/datasets",
        headers=alice.headers,
        files={"file": ("p.jsonl", b'{"instruction": "Say hi.", "output": "Hi!"}')},
    )
    for preset in listed:
        hyper = dict(preset["hyperparameters"])
        body = {
            "base_model": tiny_model,
            "dataset_id": upload.json()["id"],
            "method": hyper.pop("method"),
            "adapter": hyper.pop("adapter"),
            "hyperparameters": hyper,
        }
        response = client.post("/api/jobs/estimate", headers=alice.headers, json=body)
        assert response.status_code == 200, (preset["name"], response.text)
        assert response.json()["trainable_parameters"] > 0


def test_form_fills_in_the_chosen_preset(client, alice: Account) -> None:
    client.cookies.clear()
    client.post("/login", data={"token": alice.token})
    page = BeautifulSoup(client.get("/jobs/new?preset=full").text, "html.parser")
    client.cookies.clear()
    form = page.select_one("#job-form")
    assert float(form.select_one("input[name=learning_rate]")["value"]) == 2e-5
    assert form.select_one("select[name=adapter] option[selected]")["value"] == "full"
    assert page.select_one("#preset-form select[name=preset] option[selected]")["value"] == "full"
    assert preset_values("no-such-preset") == {}
