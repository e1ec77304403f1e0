"""POST /api/jobs refuses adapter combinations with the field and a reason; POST
/api/jobs/estimate answers the same body with parameters, memory, tokens and fit; the job form
shows only the knobs of the chosen adapter and renders the estimate as an HTMX fragment."""

from __future__ import annotations

import json
import math
import uuid

import pytest

from app.architecture import architecture, read_config
from app.settings import get_settings
from app.spec import TrainingSpec
from tests.conftest import Account
from tests.support.html import post_login, soup

ROWS = [{"instruction": "a" * 40, "output": "b" * 80} for _ in range(10)]


@pytest.fixture(scope="module")
def dataset_id(client, alice: Account) -> int:
    content = "\n".join(json.dumps(r) for r in ROWS).encode()
    upload = client.post(
        "/api/datasets", headers=alice.headers, files={"file": ("est.jsonl", content)}
    )
    assert upload.status_code == 201, upload.text
    return upload.json()["id"]


def _body(tiny_model: str, dataset_id: int, adapter: str, **hyper) -> dict:
    return {
        "base_model": tiny_model,
        "dataset_id": dataset_id,
        "adapter": adapter,
        "hyperparameters": {"max_length": 128, **hyper},
    }


@pytest.mark.parametrize(
    ("adapter", "hyper", "loc"),
    [
        ("prefix", {"gradient_checkpointing": "on"}, ["hyperparameters", "gradient_checkpointing"]),
        ("lora", {"freeze_trainable_layers": 1}, ["hyperparameters", "freeze_trainable_layers"]),
        (
            "qlora",
            {"quantization_bits": 8, "bnb_4bit_compute_dtype": "float16"},
            ["hyperparameters", "bnb_4bit_compute_dtype"],
        ),
        (
            "lora",
            {"lora_target_modules": "q_proj,lm_head"},
            ["hyperparameters", "lora_target_modules"],
        ),
        # What only this model rules out: 2 blocks, tied embeddings, no module called qq_proj.
        ("freeze", {"freeze_trainable_layers": 3}, ["hyperparameters", "freeze_trainable_layers"]),
        ("freeze", {"freeze_train_embeddings": True}, ["hyperparameters", "freeze_train_lm_head"]),
        ("lora", {"lora_target_modules": "qq_proj"}, ["hyperparameters", "lora_target_modules"]),
        ("ia3", {"ia3_target_modules": "k_proj,zz", "ia3_feedforward_modules": ""}, None),
        ("adamw", {}, ["adapter"]),
    ],
)
@pytest.mark.parametrize("route", ["/api/jobs", "/api/jobs/estimate"])
def test_impossible_combinations_are_refused_with_the_field(
    client, alice: Account, tiny_model: str, dataset_id: int, route, adapter, hyper, loc
) -> None:
    response = client.post(
        route, headers=alice.headers, json=_body(tiny_model, dataset_id, adapter, **hyper)
    )
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert all(e["msg"] for e in errors)
    expected = loc or ["hyperparameters", "ia3_target_modules"]
    assert expected in [e["loc"] for e in errors], errors


def test_refused_jobs_are_not_created(client, alice: Account, tiny_model, dataset_id) -> None:
    before = len(client.get("/api/jobs", headers=alice.headers).json())
    body = _body(tiny_model, dataset_id, "prefix", gradient_checkpointing="on")
    assert client.post("/api/jobs", headers=alice.headers, json=body).status_code == 422
    assert len(client.get("/api/jobs", headers=alice.headers).json()) == before


def _tiny_arch(tiny_model: str):
    from pathlib import Path

    from app.db import session_scope
    from app.jobs import find_base_model

    with session_scope() as session:
        return architecture(read_config(Path(find_base_model(session, tiny_model).path)))


def test_estimate_answers_the_job_body(client, alice: Account, tiny_model, dataset_id) -> None:
    body = _body(tiny_model, dataset_id, "lora", lora_r=4, per_device_train_batch_size=2)
    response = client.post("/api/jobs/estimate", headers=alice.headers, json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    arch = _tiny_arch(tiny_model)
    linears = sum(lin.d_in + lin.d_out for lin in arch.linears) * arch.num_layers
    assert result["trainable_parameters"] == 4 * linears
    assert result["total_parameters"] == arch.total_params + 4 * linears
    memory = result["memory_breakdown"]
    parts = ("weights", "gradients", "optimizer", "activations", "overhead")
    assert abs(sum(memory[p] for p in parts) - result["memory_bytes"]) <= len(parts)
    assert memory["gradients"] == 4 * result["trainable_parameters"]  # fp32 adapter weights
    assert memory["optimizer"] == 2 * memory["gradients"]  # AdamW's two moments
    # The tiny model has no dtype in its config: fp32, base weights plus fp32 adapter weights.
    assert memory["weights"] == 4 * result["total_parameters"]
    # 10 rows of a user turn (40 chars) and an assistant turn (80 chars), plus the role names.
    per_row = math.ceil((40 + 80 + len("user") + len("assistant")) / 4)
    assert result["tokens_per_epoch"] == 10 * per_row
    assert result["tokens_source"] == "characters / 4"
    assert memory["sequence_length"] == 128  # packed: bins fill up to max_length
    unpacked = client.post(
        "/api/jobs/estimate",
        headers=alice.headers,
        json=_body(tiny_model, dataset_id, "lora", lora_r=4, packing=False),
    )
    assert unpacked.json()["memory_breakdown"]["sequence_length"] == per_row  # the longest row
    assert result["steps_per_epoch"] == 5
    assert result["warnings"] == []
    # Without FTSTUDIO_DEVICE_MEMORY_BYTES the fit is judged against the online workers that can
    # hold the job (this session's Celery worker registers itself when it starts), else unknown.
    device = _online_device_memory(None, 1)
    assert result["device_memory_source"] == device.source
    assert result["fits"] is (None if device.source is None else True)


def _online_device_memory(device_class: str | None, num_devices: int):
    from app.db import session_scope
    from app.estimate_devices import device_memory

    settings = get_settings()
    assert settings.device_memory_bytes == 0
    with session_scope() as session:
        return device_memory(session, device_class, num_devices, 0, settings.worker_offline_seconds)


def test_fit_is_unknown_when_no_online_worker_can_hold_the_job() -> None:
    device = _online_device_memory(f"no such class {uuid.uuid4().hex}", 1)
    assert (device.bytes, device.source) == (0, None)


def test_estimate_against_the_device_memory(
    client, alice: Account, tiny_model, dataset_id, monkeypatch
) -> None:
    body = _body(tiny_model, dataset_id, "full", per_device_train_batch_size=8)
    settings = get_settings()
    monkeypatch.setattr(settings, "device_memory_bytes", 10 * 1024**3)
    roomy = client.post("/api/jobs/estimate", headers=alice.headers, json=body).json()
    assert roomy["fits"] is True and roomy["warnings"] == []
    monkeypatch.setattr(settings, "device_memory_bytes", 1024**2)
    tight = client.post("/api/jobs/estimate", headers=alice.headers, json=body).json()
    assert tight["fits"] is False
    (warning,) = tight["warnings"]
    assert "does not fit" in warning and "LoRA" in warning
    assert "per_device_train_batch_size" in warning or "max_length" in warning


def test_less_memory_where_practice_says_so(client, alice, tiny_model, dataset_id) -> None:
    def memory(adapter: str, **hyper) -> dict:
        body = _body(tiny_model, dataset_id, adapter, **hyper)
        response = client.post("/api/jobs/estimate", headers=alice.headers, json=body)
        assert response.status_code == 200, response.text
        return response.json()["memory_breakdown"]

    full, lora, qlora = memory("full"), memory("lora"), memory("qlora")
    assert full["optimizer"] > lora["optimizer"] and full["gradients"] > lora["gradients"]
    assert qlora["weights"] < lora["weights"]
    assert memory("lora", gradient_checkpointing="on")["activations"] < lora["activations"]
    assert memory("freeze", freeze_trainable_layers=1)["activations"] < full["activations"]
    assert memory("lora", per_device_train_batch_size=8)["activations"] > lora["activations"]


def test_estimate_is_scoped_and_authenticated(
    client, alice: Account, bob: Account, tiny_model, dataset_id
) -> None:
    body = _body(tiny_model, dataset_id, "lora")
    assert client.post("/api/jobs/estimate", json=body).status_code == 401
    response = client.post("/api/jobs/estimate", headers=bob.headers, json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["dataset_id"]


# --- the job form -----------------------------------------------------------------------------


@pytest.fixture
def browser(client, alice: Account):
    client.cookies.clear()
    post_login(client, {"token": alice.token})
    yield soup(client.get("/")).select_one('meta[name="csrf-token"]')["content"]
    client.cookies.clear()


def test_form_offers_every_adapter_and_shows_only_its_knobs(client, browser: str) -> None:
    form = soup(client.get("/jobs/new")).select_one("#job-form")
    options = [o["value"] for o in form.select("select[name=adapter] option")]
    assert options == list(TrainingSpec.model_fields["adapter"].annotation.__args__)
    assert form.select_one("select[name=adapter] option[selected]")["value"] == "lora"

    def label(name: str):
        return form.select_one(f"[name={name}]").find_parent("label")

    assert label("lora_r")["data-adapters"] == "lora dora qlora"
    assert not label("lora_r").has_attr("hidden")
    assert not form.select_one("[name=lora_r]").has_attr("disabled")
    assert label("num_virtual_tokens").has_attr("hidden")
    assert form.select_one("[name=num_virtual_tokens]").has_attr("disabled")
    assert json.loads(label("bnb_4bit_quant_type")["data-when"]) == {"quantization_bits": "4"}
    assert not label("learning_rate").has_attr("data-adapters")
    assert soup(client.get("/jobs/new")).select_one("script[src='/static/js/job_form.js']")


def test_form_errors_come_back_for_the_chosen_adapter(
    client, browser: str, tiny_model: str, dataset_id: int
) -> None:
    model_id = next(
        o["value"]
        for o in soup(client.get("/jobs/new")).select("select[name=base_model] option")
        if o.get_text() == tiny_model
    )
    data = {
        "csrf_token": browser,
        "base_model": model_id,
        "dataset_id": str(dataset_id),
        "adapter": "prefix",
        "gradient_checkpointing": "on",
        "num_virtual_tokens": "8",
        "lora_r": "64",  # hidden for prefix: the browser would not send it; ignored if sent
    }
    response = client.post("/jobs", data=data)
    assert response.status_code == 422
    page = soup(response)
    assert (
        "key/value cache"
        in page.select_one("label.invalid select[name=gradient_checkpointing]")
        .find_parent("label")
        .get_text()
    )
    assert page.select_one("select[name=adapter] option[selected]")["value"] == "prefix"
    assert page.select_one("input[name=num_virtual_tokens]")["value"] == "8"
    assert not page.select_one("input[name=num_virtual_tokens]").has_attr("disabled")
    assert page.select_one("input[name=lora_r]").has_attr("disabled")


def test_estimate_panel_fragment(client, browser: str, tiny_model: str, dataset_id: int) -> None:
    page = soup(client.get("/jobs/new"))
    panel = page.select_one("#estimate-panel")
    assert panel["hx-post"] == "/jobs/estimate" and panel["hx-include"] == "#job-form"
    model_id = next(
        o["value"]
        for o in page.select("select[name=base_model] option")
        if o.get_text() == tiny_model
    )
    data = {
        "csrf_token": browser,
        "base_model": model_id,
        "dataset_id": str(dataset_id),
        "adapter": "prompt",
        "num_virtual_tokens": "10",
        "max_length": "128",
    }
    fragment = client.post("/jobs/estimate", data=data, headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    html = soup(fragment)
    assert html.select_one("header.topbar") is None
    hidden = _tiny_arch(tiny_model).hidden_size
    assert html.select_one("#estimate-trainable").get_text().startswith(f"{10 * hidden:,}")
    assert "characters / 4" in html.select_one("#estimate-tokens").get_text()
    data["gradient_checkpointing"] = "on"
    data["adapter"] = "prefix"
    refused = soup(client.post("/jobs/estimate", data=data, headers={"HX-Request": "true"}))
    assert "gradient_checkpointing" in refused.select_one(".estimate-problems").get_text()
    assert (
        client.post(
            "/jobs/estimate", data={k: v for k, v in data.items() if k != "csrf_token"}
        ).status_code
        == 403
    )
