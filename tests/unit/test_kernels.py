"""Liger's fused kernels: on by default on a CUDA GPU for the architectures Liger patches, off on
CPU, refused with the reason when asked for where they cannot run (issue 13)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.spec import TrainingSpec
from worker.devices import DeviceInfo
from worker.kernels import resolve_liger
from worker.training.mapping import method_config

GIB = 1024**3
H100 = DeviceInfo.cuda("NVIDIA H100 80GB HBM3", (9, 0), 80 * GIB)
CPU = DeviceInfo.cpu(32 * GIB, cores=8)
PATCHED = frozenset({"llama", "qwen2", "mistral"})


def test_auto_uses_liger_on_a_gpu_for_a_patched_architecture() -> None:
    on, said = resolve_liger("auto", H100, "llama", PATCHED)
    assert on and said.startswith("Liger")


@pytest.mark.parametrize(
    ("device", "model_type", "supported", "reason"),
    [
        (CPU, "llama", PATCHED, "not on CPU"),
        (H100, "llama", None, "liger-kernel is not installed"),
        (H100, "gpt2", PATCHED, "no kernels for the gpt2 architecture"),
    ],
)
def test_auto_says_why_it_goes_without(device, model_type, supported, reason) -> None:
    on, said = resolve_liger("auto", device, model_type, supported)
    assert not on and said.startswith("none: ") and reason in said
    with pytest.raises(ValueError, match="liger_kernels is on, but"):
        resolve_liger("on", device, model_type, supported)


def test_off_is_off_even_where_liger_could_run() -> None:
    assert resolve_liger("off", H100, "llama", PATCHED) == (False, "off (as asked)")


def test_the_resolved_choice_reaches_the_trainer_config(tmp_path: Path) -> None:
    spec = TrainingSpec()
    assert spec.liger_kernels == "auto"
    assert method_config(spec, tmp_path, use_cpu=True, liger=True).use_liger_kernel is True
    assert method_config(spec, tmp_path, use_cpu=True).use_liger_kernel is False
    dpo = TrainingSpec(method="dpo")  # Liger's loss paths for preference methods: not used
    assert method_config(dpo, tmp_path, use_cpu=True, liger=True).use_liger_kernel is False
