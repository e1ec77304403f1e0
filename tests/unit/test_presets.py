"""Every shipped preset validates, maps to library objects, and is offered by API and form."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bs4 import BeautifulSoup

from app.methods import METHODS, get_method
from app.presets import PRESETS, preset_values
from app.spec import TrainingSpec
from tests.conftest import Account
from tests.support.html import post_login
from worker.training.adapters import peft_config, quantization_config
from worker.training.mapping import method_config


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_preset_is_a_valid_spec_that_maps(preset, tmp_path: Path) -> None:
    choices = dict.fromkeys(preset.requires, 1)  # ids the user chooses (a reward checkpoint)
    spec = preset.spec(**choices)
    expected = TrainingSpec.model_validate({**preset.values, **choices})
    assert spec.model_dump() == expected.model_dump()
    assert {k: v for k, v in preset.hyperparameters().items() if k not in preset.requires} == {
        k: v for k, v in spec.model_dump().items() if k not in preset.requires
    }
    config = method_config(spec, tmp_path, use_cpu=True)
    assert config.learning_rate == spec.learning_rate
    if "beta" in get_method(spec.method).fields:
        assert config.beta == spec.beta
    if spec.adapter in ("full", "freeze"):
        assert peft_config(spec) is None
    else:
        assert peft_config(spec) is not None
    assert (quantization_config(spec) is not None) == (spec.adapter == "qlora")


def test_preset_numbers_follow_common_practice() -> None:
    for preset in PRESETS:
        spec = preset.spec(**dict.fromkeys(preset.requires, 1))
        if spec.adapter in ("lora", "dora", "qlora"):
            assert 8 <= spec.lora_r <= 64 and spec.lora_alpha == 2 * spec.lora_r, preset.name
        if spec.method in ("sft", "pretrain", "reward"):
            low, high = (1e-5, 5e-5) if spec.adapter == "full" else (5e-5, 2e-4)
        else:  # preference (and RL) tuning: about ten times below SFT's rates
            low, high = 5e-7, 1e-5
        assert low <= spec.learning_rate <= high, preset.name
        assert spec.max_grad_norm == 1.0 and spec.warmup_steps <= 0.05
    by_method = {p.values["method"]: p for p in reversed(PRESETS)}  # the first of each
    assert set(by_method) == set(METHODS), set(METHODS) - set(by_method)
    by_method = {m: p.spec(**dict.fromkeys(p.requires, 1)) for m, p in by_method.items()}
    assert by_method["dpo"].beta == 0.1 and by_method["kto"].beta == 0.1
    assert 2.0 <= by_method["simpo"].beta <= 2.5
    assert by_method["simpo"].simpo_gamma / by_method["simpo"].beta == 0.5
    assert by_method["reward"].center_rewards_coefficient == 0.01


# One small dataset of each kind, so each preset estimates on the kind its method trains on.
SAMPLES = {
    "sft": {"instruction": "Say hi.", "output": "Hi!"},
    "text": {"text": "Plain text for continual pretraining."},
    "preference": {
        "prompt": [{"role": "user", "content": "Say hi."}],
        "chosen": [{"role": "assistant", "content": "Hi!"}],
        "rejected": [{"role": "assistant", "content": "No."}],
    },
    "kto": {
        "messages": [
            {"role": "user", "content": "Say hi."},
            {"role": "assistant", "content": "Hi!"},
        ],
        "label": True,
    },
    "prompt": {"prompt": [{"role": "user", "content": "Say hi."}], "completion": "Hi!"},
}


def _upload_kinds(client, account: Account) -> dict[str, int]:
    ids = {}
    for kind, row in SAMPLES.items():
        response = client.post(
            "/api/datasets",
            headers=account.headers,
            files={"file": (f"{kind}.jsonl", json.dumps(row).encode())},
            data={"kind": kind},
        )
        assert response.status_code == 201 and response.json()["kind"] == kind, response.text
        ids[kind] = response.json()["id"]
    return ids


def _kind(method: str) -> str:
    kind = get_method(method).dataset_kind
    assert kind in SAMPLES, f"add a {kind} row to SAMPLES for the {method} presets"
    return kind


def test_api_lists_presets_and_each_estimates(client, alice: Account, tiny_model: str) -> None:
    listed = client.get("/api/presets", headers=alice.headers).json()
    assert [p["name"] for p in listed] == [p.name for p in PRESETS]
    datasets = _upload_kinds(client, alice)
    models = client.get("/api/models", headers=alice.headers).json()
    scorer = next(m["id"] for m in models if m["name"] == tiny_model)
    for preset in listed:
        hyper = dict(preset["hyperparameters"])
        if preset["requires"]:  # the reward checkpoint the user would choose: a model here
            assert preset["requires"] == ["reward_checkpoint_id"], preset["name"]
            assert hyper["reward_checkpoint_id"] is None
            hyper["reward_model"] = scorer
        body = {
            "base_model": tiny_model,
            "dataset_id": datasets[_kind(hyper["method"])],
            "method": hyper.pop("method"),
            "adapter": hyper.pop("adapter"),
            "hyperparameters": hyper,
        }
        response = client.post("/api/jobs/estimate", headers=alice.headers, json=body)
        assert response.status_code == 200, (preset["name"], response.text)
        assert response.json()["trainable_parameters"] > 0


def test_form_fills_in_the_chosen_preset(client, alice: Account) -> None:
    client.cookies.clear()
    post_login(client, {"token": alice.token})
    page = BeautifulSoup(client.get("/jobs/new?preset=full").text, "html.parser")
    client.cookies.clear()
    form = page.select_one("#job-form")
    assert float(form.select_one("input[name=learning_rate]")["value"]) == 2e-5
    assert form.select_one("select[name=adapter] option[selected]")["value"] == "full"
    assert page.select_one("#preset-form select[name=preset] option[selected]")["value"] == "full"
    assert preset_values("no-such-preset") == {}
