"""The precision and attention rules for a bf16 GPU, fp16-only GPUs and the CPU (issue 12)."""

from __future__ import annotations

import pytest

from worker.devices import (
    DeviceInfo,
    detect_devices,
    flash_attn_available,
    precision_kwargs,
    resolve_attention,
    resolve_precision,
    resolved_device_config,
)

GIB = 1024**3
H100 = DeviceInfo.cuda("NVIDIA H100 80GB HBM3", (9, 0), 80 * GIB)
A100 = DeviceInfo.cuda("NVIDIA A100-SXM4-40GB", (8, 0), 40 * GIB)
T4 = DeviceInfo.cuda("Tesla T4", (7, 5), 15 * GIB)
V100 = DeviceInfo.cuda("Tesla V100-SXM2-16GB", (7, 0), 16 * GIB)
CPU = DeviceInfo.cpu(32 * GIB, cores=8)
FP16_ONLY = (T4, V100)


def test_bf16_support_follows_the_compute_capability_unless_torch_says_otherwise() -> None:
    assert H100.bf16 and A100.bf16
    assert not T4.bf16 and not V100.bf16
    assert not CPU.bf16
    assert not DeviceInfo.cuda("odd Ampere", (8, 6), GIB, bf16=False).bf16


def test_device_info_is_frozen() -> None:
    with pytest.raises(AttributeError, match="cannot assign"):
        H100.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize("device", [H100, A100], ids=lambda d: d.name)
def test_auto_is_bf16_on_a_bf16_gpu(device: DeviceInfo) -> None:
    assert resolve_precision("auto", device) == "bf16"


@pytest.mark.parametrize("device", FP16_ONLY, ids=lambda d: d.name)
def test_auto_is_fp16_on_an_fp16_only_gpu(device: DeviceInfo) -> None:
    assert resolve_precision("auto", device) == "fp16"


@pytest.mark.parametrize("requested", ["auto", "bf16", "fp16", "fp32"])
def test_the_cpu_always_computes_in_fp32(requested: str) -> None:
    assert resolve_precision(requested, CPU) == "fp32"


@pytest.mark.parametrize("requested", ["bf16", "fp16", "fp32"])
def test_an_explicit_precision_is_kept_on_a_bf16_gpu(requested: str) -> None:
    assert resolve_precision(requested, H100) == requested


@pytest.mark.parametrize("requested", ["fp16", "fp32"])
@pytest.mark.parametrize("device", FP16_ONLY, ids=lambda d: d.name)
def test_fp16_and_fp32_are_kept_on_an_fp16_only_gpu(requested: str, device: DeviceInfo) -> None:
    assert resolve_precision(requested, device) == requested


@pytest.mark.parametrize("device", FP16_ONLY, ids=lambda d: d.name)
def test_bf16_on_an_fp16_only_gpu_is_refused_naming_the_device_and_fp16(
    device: DeviceInfo,
) -> None:
    with pytest.raises(ValueError, match=rf"bf16 is not supported on {device.name}.*use .*fp16"):
        resolve_precision("bf16", device)


def test_an_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown precision 'int8'"):
        resolve_precision("int8", H100)


@pytest.mark.parametrize(
    ("precision", "kwargs"),
    [
        ("bf16", {"bf16": True, "fp16": False}),
        ("fp16", {"bf16": False, "fp16": True}),
        ("fp32", {"bf16": False, "fp16": False}),
    ],
)
def test_precision_kwargs_for_training_arguments(precision: str, kwargs: dict) -> None:
    assert precision_kwargs(precision) == kwargs


def test_precision_kwargs_wants_a_resolved_precision() -> None:
    with pytest.raises(ValueError, match="call resolve_precision first"):
        precision_kwargs("auto")


def test_precision_kwargs_are_accepted_by_training_arguments(tmp_path) -> None:
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, **precision_kwargs("fp32"))
    assert (args.bf16, args.fp16) == (False, False)


@pytest.mark.parametrize("device", [H100, A100], ids=lambda d: d.name)
def test_flash_attention_2_on_ampere_and_newer_when_installed(device: DeviceInfo) -> None:
    assert resolve_attention(device, flash_attn_installed=True) == "flash_attention_2"
    assert resolve_attention(device, True, precision="fp16") == "flash_attention_2"


@pytest.mark.parametrize("device", [H100, A100], ids=lambda d: d.name)
def test_sdpa_without_flash_attn_installed(device: DeviceInfo) -> None:
    assert resolve_attention(device, flash_attn_installed=False) == "sdpa"


def test_sdpa_for_an_fp32_run_even_with_flash_attn() -> None:
    assert resolve_attention(H100, flash_attn_installed=True, precision="fp32") == "sdpa"


@pytest.mark.parametrize("installed", [True, False])
@pytest.mark.parametrize("device", [*FP16_ONLY, CPU], ids=lambda d: d.name)
def test_sdpa_on_pre_ampere_gpus_and_the_cpu(device: DeviceInfo, installed: bool) -> None:
    assert resolve_attention(device, flash_attn_installed=installed) == "sdpa"


def test_flash_attn_is_looked_up_when_not_said() -> None:
    expected = "flash_attention_2" if flash_attn_available() else "sdpa"
    assert resolve_attention(H100) == expected


def test_the_attention_strings_are_transformers_attn_implementations() -> None:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    assert {"flash_attention_2", "sdpa"} <= set(ALL_ATTENTION_FUNCTIONS.valid_keys())


def test_resolved_device_config_for_the_run_page() -> None:
    assert resolved_device_config("auto", T4, flash_attn_installed=True) == {
        "device": "Tesla T4",
        "device_kind": "cuda",
        "compute_capability": "7.5",
        "requested_precision": "auto",
        "precision": "fp16",
        "attn_implementation": "sdpa",
    }
    assert resolved_device_config("auto", H100, flash_attn_installed=True)["precision"] == "bf16"
    assert (
        resolved_device_config("auto", H100, flash_attn_installed=True)["attn_implementation"]
        == "flash_attention_2"
    )
    cpu = resolved_device_config("bf16", CPU, flash_attn_installed=True)
    assert (cpu["precision"], cpu["attn_implementation"], cpu["compute_capability"]) == (
        "fp32",
        "sdpa",
        None,
    )


def test_resolved_device_config_refuses_bf16_on_an_fp16_only_gpu() -> None:
    with pytest.raises(ValueError, match="bf16 is not supported on Tesla V100-SXM2-16GB"):
        resolved_device_config("bf16", V100)


def test_detect_devices_here_is_one_cpu_with_memory() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the CPU entry is for machines without one")
    (device,) = detect_devices()
    assert device.kind == "cpu" and device.name == "cpu"
    assert device.memory_bytes > 0
    assert device.cores is not None and device.cores >= 1
    assert device.capability is None and not device.bf16
    assert resolve_precision("auto", device) == "fp32"
