"""Fused kernels a run gets on its device: Liger Kernel's Triton kernels (fused RMSNorm, RoPE,
SwiGLU and linear cross-entropy, which never materialises the logits) for SFT and continual
pretraining on a CUDA GPU, for the architectures Liger patches. ``auto`` turns them on wherever
they apply and off on CPU; ``on`` refuses, with the reason, a run where they cannot be used;
``off`` never uses them. Pure rules over a ``DeviceInfo`` and the model's ``model_type``
(unit-tested without a GPU); ``liger_model_types`` is the one function that asks the package.
"""

from __future__ import annotations

from typing import Literal

from worker.devices import DeviceInfo

LigerChoice = Literal["auto", "on", "off"]
INSTALL_HINT = "pip install 'ftstudio[gpu]' on the worker"
USED = "Liger: fused RMSNorm, RoPE, SwiGLU, linear cross-entropy"


def liger_model_types() -> frozenset[str] | None:
    """The ``model_type`` values the installed liger-kernel patches; None when it is not
    installed (a CPU worker: it needs Triton and CUDA)."""
    try:
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    except ImportError:
        return None
    return frozenset(MODEL_TYPE_TO_APPLY_LIGER_FN)


def resolve_liger(
    requested: LigerChoice,
    device: DeviceInfo,
    model_type: str | None,
    supported: frozenset[str] | None,
) -> tuple[bool, str]:
    """(use Liger, what the run page says about it). ``supported``: ``liger_model_types()``."""
    if requested == "off":
        return False, "off (as asked)"
    if not device.is_cuda:
        why = "not on CPU: Liger's Triton kernels need a CUDA GPU"
    elif supported is None:
        why = f"liger-kernel is not installed on this worker ({INSTALL_HINT})"
    elif model_type not in supported:
        why = f"Liger has no kernels for the {model_type or 'unknown'} architecture"
    else:
        return True, USED
    if requested == "on":
        raise ValueError(f"liger_kernels is on, but {why.removeprefix('not ')}")
    return False, f"none: {why}"
