"""The estimate on several devices (issue 12): per-device memory under each distributed strategy,
the batch per optimizer step, and the device memory taken from the setting or from the online
workers that can hold the job (POST /api/jobs/estimate with a device_class)."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from app.architecture import architecture, count_parameters
from app.estimate import GIB, TokenCount, estimate, memory_breakdown
from app.estimate_devices import DeviceMemory, from_workers, worker_device_memory
from app.models import Worker
from app.settings import get_settings
from app.spec import TrainingSpec
from tests.conftest import Account
from tests.support.html import post_login, soup

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
STATE = ("weights", "gradients", "optimizer")


def _memory(**values) -> dict:
    arch = architecture(LLAMA2_7B)
    spec = TrainingSpec(max_length=512, per_device_train_batch_size=1, **values)
    return memory_breakdown(arch, spec, count_parameters(arch, spec), 512)


def _state(memory: dict) -> int:
    return sum(memory[part] for part in STATE)


# --- sharding arithmetic ------------------------------------------------------------------


def test_ddp_keeps_a_full_copy_per_device() -> None:
    one = _memory(adapter="full")
    ddp = _memory(adapter="full", num_devices=4, distributed_strategy="ddp")
    for part in (*STATE, "activations", "overhead", "total", "reference_model"):
        assert ddp[part] == one[part], part
    assert ddp["gathered_weights"] == one["gathered_weights"] == 0
    assert (ddp["num_devices"], ddp["distributed_strategy"], ddp["sharded"]) == (4, "ddp", [])
    assert ddp["total_all_devices"] == 4 * ddp["total"]
    assert (one["num_devices"], one["distributed_strategy"]) == (1, None)


@pytest.mark.parametrize("strategy", ["deepspeed_zero3", "fsdp"])
def test_zero3_and_fsdp_shard_weights_gradients_and_optimizer(strategy: str) -> None:
    ddp = _memory(adapter="full", num_devices=4, distributed_strategy="ddp")
    sharded = _memory(adapter="full", num_devices=4, distributed_strategy=strategy)
    assert abs(_state(sharded) - _state(ddp) / 4) <= len(STATE)  # ceil per part
    for part in STATE:
        assert abs(sharded[part] - ddp[part] / 4) <= 1, part
    assert sharded["activations"] == ddp["activations"]  # per device batch either way
    assert sharded["sharded"] == ["weights", "reference_model", "gradients", "optimizer"]
    # Two of the largest units gathered whole: a 7B block (202M weights, more than its
    # embeddings' or head's 131M), in fp16.
    unit = architecture(LLAMA2_7B).block_params * 2
    assert unit > 32000 * 4096 * 2
    assert abs(sharded["gathered_weights"] - 2 * unit) <= 1
    assert sharded["total"] < ddp["total"] / 2


def test_zero2_shards_gradients_and_optimizer_only() -> None:
    ddp = _memory(adapter="full", num_devices=4, distributed_strategy="ddp")
    zero2 = _memory(adapter="full", num_devices=4, distributed_strategy="deepspeed_zero2")
    assert zero2["weights"] == ddp["weights"]
    assert abs(zero2["gradients"] - ddp["gradients"] / 4) <= 1
    assert abs(zero2["optimizer"] - ddp["optimizer"] / 4) <= 1
    assert zero2["gathered_weights"] == 0
    assert zero2["sharded"] == ["gradients", "optimizer"]
    zero3 = _memory(adapter="full", num_devices=4, distributed_strategy="deepspeed_zero3")
    assert zero3["weights"] < zero2["weights"] and zero2["total"] < ddp["total"]


def test_only_the_trainable_part_has_sharded_gradients_and_optimizer() -> None:
    arch = architecture(LLAMA2_7B)
    spec = TrainingSpec(adapter="lora", num_devices=2, distributed_strategy="deepspeed_zero2")
    trainable = count_parameters(arch, spec).trainable
    lora = _memory(adapter="lora", num_devices=2, distributed_strategy="deepspeed_zero2")
    assert lora["gradients"] == 4 * trainable / 2  # fp32 adapter weights, half on each
    assert lora["optimizer"] == 2 * lora["gradients"]
    assert lora["weights"] == _memory(adapter="lora")["weights"]  # the base stays whole


def test_a_reference_model_is_sharded_with_the_weights() -> None:
    ddp = _memory(adapter="full", method="dpo", num_devices=4, distributed_strategy="ddp")
    zero2 = _memory(
        adapter="full", method="dpo", num_devices=4, distributed_strategy="deepspeed_zero2"
    )
    zero3 = _memory(
        adapter="full", method="dpo", num_devices=4, distributed_strategy="deepspeed_zero3"
    )
    assert ddp["reference_model"] == zero2["reference_model"] > 0
    assert zero3["reference_model"] == ddp["reference_model"] / 4


def test_batch_per_optimizer_step_counts_every_device() -> None:
    arch = architecture(LLAMA2_7B)
    tokens = TokenCount(tokens_per_epoch=10_000, longest=100, rows=100, source="test")
    hyper = {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 3}
    one = estimate(arch, TrainingSpec(adapter="lora", **hyper), tokens)
    four = estimate(arch, TrainingSpec(adapter="lora", num_devices=4, **hyper), tokens)
    assert (one["rows_per_optimizer_step"], one["steps_per_epoch"]) == (6, math.ceil(100 / 6))
    assert (four["rows_per_optimizer_step"], four["steps_per_epoch"]) == (24, math.ceil(100 / 24))
    assert four["tokens_per_optimizer_step"] == 24 * 100  # 100 tokens a row
    assert (four["num_devices"], four["distributed_strategy"]) == (4, "ddp")
    assert four["memory_bytes"] == one["memory_bytes"]  # ddp: the same on each device


def test_fit_hints_name_a_sharding_strategy() -> None:
    arch = architecture(LLAMA2_7B)
    spec = TrainingSpec(adapter="full", num_devices=2, distributed_strategy="ddp")
    result = estimate(arch, spec, None, device_memory_bytes=24 * GIB)
    assert result["fits"] is False and result["device_memory_source"] == "setting"
    assert "deepspeed_zero3" in result["warnings"][0]
    assert "each of the run's devices has" in result["warnings"][0]


# --- which device memory --------------------------------------------------------------------


def _worker(name: str, device_class: str, devices: list[dict], **values) -> Worker:
    """An unsaved row, as the registry would hold it."""
    values = {"max_devices": len(devices), "last_seen": datetime.now(UTC), **values}
    return Worker(name=name, device_class=device_class, devices=devices, **values)


def _gpus(count: int, gib: int, name: str = "GPU") -> list[dict]:
    return [{"index": i, "name": name, "memory_bytes": gib * GIB} for i in range(count)]


def test_the_largest_online_worker_that_can_hold_the_job() -> None:
    workers = [
        _worker("a-small", "GPU 24GB", _gpus(2, 24)),
        _worker("b-big", "GPU 80GB", _gpus(4, 80)),
        _worker(
            "c-offline",
            "GPU 141GB",
            _gpus(8, 141),
            last_seen=datetime.now(UTC) - timedelta(hours=1),
        ),
        _worker("d-stopped", "GPU 141GB", _gpus(8, 141), stopped_at=datetime.now(UTC)),
    ]
    best = from_workers(workers, None, 2, 60)
    assert (best.bytes, best.source, best.device_class) == (80 * GIB, "worker b-big", "GPU 80GB")
    assert best.smallest == (24 * GIB, "worker a-small (GPU 24GB)")
    # only b-big has 4 devices; only a-small is of the asked class (compared as routing does)
    assert from_workers(workers, None, 4, 60).source == "worker b-big"
    small = from_workers(workers, "gpu 24gb", 1, 60)
    assert (small.bytes, small.source, small.smallest) == (24 * GIB, "worker a-small", None)
    # none online that can hold it: unknown
    assert from_workers(workers, "GPU 141GB", 1, 60) == DeviceMemory(device_class="GPU 141GB")
    assert from_workers(workers, None, 8, 60).bytes == 0


def test_a_runs_devices_and_a_cpu_workers_shared_memory() -> None:
    mixed = _worker(
        "mixed", "GPU", [*_gpus(1, 80), {"index": 1, "name": "GPU", "memory_bytes": GIB}]
    )
    assert worker_device_memory(mixed, 1) == 80 * GIB  # rank 0 takes the first
    assert worker_device_memory(mixed, 2) == GIB  # the smallest of the two it takes
    assert worker_device_memory(mixed, 3) == 0
    cpu = _worker("cpu", "cpu", [{"index": None, "name": "cpu", "memory_bytes": 64 * GIB}])
    cpu.max_devices = 16
    assert worker_device_memory(cpu, 1) == 64 * GIB
    assert worker_device_memory(cpu, 4) == 16 * GIB  # four processes share the host


def test_no_device_memory_leaves_fits_unknown() -> None:
    arch = architecture(LLAMA2_7B)
    result = estimate(arch, TrainingSpec(), None, device=DeviceMemory())
    assert result["fits"] is None
    assert result["device_memory_bytes"] is None and result["device_memory_source"] is None


# --- POST /api/jobs/estimate against registered workers --------------------------------------

ROWS = [{"instruction": "a" * 40, "output": "b" * 80} for _ in range(10)]


@pytest.fixture(scope="module")
def dataset_id(client, alice: Account) -> int:
    content = "\n".join(json.dumps(r) for r in ROWS).encode()
    upload = client.post(
        "/api/datasets", headers=alice.headers, files={"file": ("est-dev.jsonl", content)}
    )
    assert upload.status_code == 201, upload.text
    return upload.json()["id"]


@pytest.fixture
def workers() -> Iterator[dict[str, str]]:
    """Workers of distinctive classes: one with two 48 GB GPUs, one with a 1 MiB GPU, one that
    shut down; deleted afterwards so other tests (placement, the Workers page) never see them."""
    from app import worker_registry
    from app.db import session_scope

    tag = uuid.uuid4().hex[:8]
    spec = {
        "big": (f"Test GPU 48GB est-{tag}", _gpus(2, 48, f"Test GPU 48GB est-{tag}")),
        "tiny": (
            f"Test GPU 1MB est-{tag}",
            [{"index": 0, "name": "tiny", "memory_bytes": 1 << 20}],
        ),
        "gone": (f"Test GPU gone est-{tag}", _gpus(1, 80)),
    }
    names = {key: f"est-{key}-{tag}@test" for key in spec}
    with session_scope() as session:
        for key, (device_class, devices) in spec.items():
            worker_registry.heartbeat(
                session,
                names[key],
                host="test",
                device_class=device_class,
                devices=devices,
                max_devices=len(devices),
                busy=False,
                job_id=None,
                started=True,
            )
        worker_registry.stopped(session, names["gone"])
    yield {**{f"{key}_class": value[0] for key, value in spec.items()}, **names}
    with session_scope() as session:
        session.query(Worker).filter(Worker.name.in_(names.values())).delete()


def _estimate(client, alice: Account, body: dict) -> dict:
    response = client.post("/api/jobs/estimate", headers=alice.headers, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def _body(tiny_model: str, dataset_id: int, device_class: str | None, **hyper) -> dict:
    return {
        "base_model": tiny_model,
        "dataset_id": dataset_id,
        "adapter": "full",
        "device_class": device_class,
        "hyperparameters": {"max_length": 128, **hyper},
    }


def test_estimate_uses_the_workers_device_memory(
    client, alice: Account, tiny_model: str, dataset_id: int, workers: dict, monkeypatch
) -> None:
    monkeypatch.setattr(get_settings(), "device_memory_bytes", 0)
    big = workers["big_class"]
    hyper = {
        "num_devices": 2,
        "distributed_strategy": "deepspeed_zero3",
        "per_device_train_batch_size": 1,
        "gradient_accumulation_steps": 1,
    }
    result = _estimate(client, alice, _body(tiny_model, dataset_id, big, **hyper))
    assert result["device_memory_source"] == f"worker {workers['big']}"
    assert result["device_memory_bytes"] == 48 * GIB and result["device_class"] == big
    assert result["fits"] is True
    assert (result["num_devices"], result["distributed_strategy"]) == (2, "deepspeed_zero3")
    memory = result["memory_breakdown"]
    assert memory["sharded"] == ["weights", "reference_model", "gradients", "optimizer"]
    assert memory["total_all_devices"] == 2 * memory["total"] == 2 * result["memory_bytes"]
    assert result["steps_per_epoch"] == math.ceil(10 / 2) and result["rows_per_optimizer_step"] == 2
    # the same run on one device keeps twice the (sharded) state
    one = _estimate(client, alice, _body(tiny_model, dataset_id, big))["memory_breakdown"]
    assert abs(_state(one) - 2 * _state(memory)) <= 2 * len(STATE)

    tiny = _estimate(client, alice, _body(tiny_model, dataset_id, workers["tiny_class"]))
    assert tiny["fits"] is False and tiny["device_memory_source"] == f"worker {workers['tiny']}"
    assert "does not fit" in tiny["warnings"][0]

    # a registered worker that shut down counts for placement but says nothing about memory
    gone = _estimate(client, alice, _body(tiny_model, dataset_id, workers["gone_class"]))
    assert gone["fits"] is None and gone["device_memory_source"] is None
    assert gone["device_memory_bytes"] is None and gone["device_class"] == workers["gone_class"]

    # the setting, when set, wins over the workers
    monkeypatch.setattr(get_settings(), "device_memory_bytes", 1 << 20)
    explicit = _estimate(client, alice, _body(tiny_model, dataset_id, big, **hyper))
    assert explicit["device_memory_source"] == "setting" and explicit["fits"] is False
    assert explicit["device_memory_bytes"] == 1 << 20


def test_estimate_panel_names_the_worker_and_the_sharding(
    client, alice: Account, tiny_model: str, dataset_id: int, workers: dict, monkeypatch
) -> None:
    monkeypatch.setattr(get_settings(), "device_memory_bytes", 0)
    client.cookies.clear()
    post_login(client, {"token": alice.token})
    try:
        page = soup(client.get("/jobs/new"))
        csrf = page.select_one('meta[name="csrf-token"]')["content"]
        model_id = next(
            o["value"]
            for o in page.select("select[name=base_model] option")
            if o.get_text() == tiny_model
        )
        data = {
            "csrf_token": csrf,
            "base_model": model_id,
            "dataset_id": str(dataset_id),
            "adapter": "full",
            "max_length": "128",
            "num_devices": "2",
            "distributed_strategy": "fsdp",
            "device_class": workers["big_class"],
        }
        fragment = client.post("/jobs/estimate", data=data, headers={"HX-Request": "true"})
        assert fragment.status_code == 200
        html = soup(fragment)
        fits = html.select_one("#estimate-fits").get_text()
        assert workers["big"] in fits and "48.00 GiB per device" in fits
        rows = {
            row.select_one("th").get_text(): row.select_one("td").get_text()
            for row in html.select(".estimate-breakdown tr")
        }
        assert rows["devices"].startswith("2 devices, fsdp: weights, reference model, gradients")
        assert "gathered weights" in rows
    finally:
        client.cookies.clear()
