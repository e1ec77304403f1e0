"""What the worker's devices are, and the precision and attention kernel a run gets on them.

The rules are pure functions over a ``DeviceInfo`` (unit-tested for a bf16 GPU, an fp16-only GPU
and CPU without any of them); ``detect_devices`` is the one thin function that asks torch.

- Precision (``resolve_precision``): ``auto`` is bf16 where the device has it (CUDA compute
  capability 8.0 and up: A100, A10, RTX 30xx/40xx, L4, L40, H100, H200), fp16 with loss scaling
  on older CUDA devices (V100 7.0, T4 7.5), and fp32 on CPU: CPU runs always compute in fp32,
  whatever the spec asks. An explicit bf16 on a CUDA device without it is refused.
- Attention (``resolve_attention``): flash-attention 2 when the ``flash_attn`` package is
  installed, the device is CUDA with capability 8.0 or more (FA2 supports Ampere, Ada and
  Hopper) and the run computes in fp16/bf16 (FA2 has no fp32 kernels); else PyTorch's SDPA. The
  strings are transformers' ``attn_implementation`` values.

torch is imported only inside ``detect_devices``, so the rules can be imported anywhere.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Any, Literal

RequestedPrecision = Literal["auto", "bf16", "fp16", "fp32"]
Precision = Literal["bf16", "fp16", "fp32"]
Attention = Literal["flash_attention_2", "sdpa"]
DeviceKind = Literal["cuda", "cpu"]

PRECISIONS: tuple[str, ...] = ("bf16", "fp16", "fp32")
REQUESTED_PRECISIONS: tuple[str, ...] = ("auto", *PRECISIONS)
# bf16 tensor-core math and flash-attention 2 both start with Ampere (compute capability 8.0).
BF16_MIN_CAPABILITY = (8, 0)
FLASH_ATTENTION_2_MIN_CAPABILITY = (8, 0)
FLASH_ATTENTION_2 = "flash_attention_2"
SDPA = "sdpa"


@dataclass(frozen=True)
class DeviceInfo:
    """One device a worker owns: a CUDA GPU or the CPU."""

    name: str  # "NVIDIA H100 80GB HBM3", "Tesla T4", "cpu"
    kind: DeviceKind
    memory_bytes: int  # total device memory (the host's RAM for the CPU)
    capability: tuple[int, int] | None = None  # CUDA compute capability (major, minor)
    bf16: bool = False  # computes in bfloat16 (with tensor cores on CUDA)
    index: int | None = None  # the CUDA device index as this process sees it
    cores: int | None = None  # CPU only: os.cpu_count()

    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"

    @classmethod
    def cuda(
        cls,
        name: str,
        capability: tuple[int, int],
        memory_bytes: int,
        *,
        bf16: bool | None = None,
        index: int | None = 0,
    ) -> DeviceInfo:
        """A CUDA device; bf16 support follows the capability unless torch said otherwise."""
        supported = tuple(capability) >= BF16_MIN_CAPABILITY if bf16 is None else bf16
        return cls(
            name=name,
            kind="cuda",
            memory_bytes=memory_bytes,
            capability=(int(capability[0]), int(capability[1])),
            bf16=supported,
            index=index,
        )

    @classmethod
    def cpu(cls, memory_bytes: int, cores: int | None = None) -> DeviceInfo:
        """The CPU: it computes in fp32 here (the studio never trains in bf16 on CPU)."""
        return cls(name="cpu", kind="cpu", memory_bytes=memory_bytes, bf16=False, cores=cores)

    def describe(self) -> str:
        """For messages: 'Tesla T4 (CUDA compute capability 7.5)'."""
        if self.capability is None:
            return self.name
        return f"{self.name} (CUDA compute capability {self.capability[0]}.{self.capability[1]})"


def host_memory_bytes() -> int:
    """The host's total RAM: psutil where installed, else sysconf (Linux, macOS)."""
    try:
        import psutil
    except ImportError:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    return int(psutil.virtual_memory().total)


def detect_devices() -> list[DeviceInfo]:
    """The CUDA devices this process sees (after CUDA_VISIBLE_DEVICES), else one CPU entry."""
    import torch

    if not torch.cuda.is_available():
        return [DeviceInfo.cpu(host_memory_bytes(), os.cpu_count())]
    devices = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        capability = (props.major, props.minor)
        try:
            with torch.cuda.device(index):
                bf16 = bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # an older torch without including_emulation
            bf16 = capability >= BF16_MIN_CAPABILITY
        devices.append(
            DeviceInfo.cuda(props.name, capability, int(props.total_memory), bf16=bf16, index=index)
        )
    return devices


def current_cuda_device() -> DeviceInfo:
    """The CUDA device this process trains on (after ``torch.cuda.set_device``), asked of
    torch without touching the others (each would get a CUDA context from this process)."""
    import torch

    index = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    capability = (props.major, props.minor)
    try:
        bf16 = bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # an older torch without including_emulation
        bf16 = capability >= BF16_MIN_CAPABILITY
    return DeviceInfo.cuda(props.name, capability, int(props.total_memory), bf16=bf16, index=index)


def resolve_precision(requested: str, device: DeviceInfo) -> Precision:
    """The precision a run computes in on ``device``; see the module's docstring for the rules.

    Raises ValueError for an unknown precision or bf16 on a CUDA device without it."""
    if requested not in REQUESTED_PRECISIONS:
        raise ValueError(
            f"unknown precision {requested!r}: expected one of {', '.join(REQUESTED_PRECISIONS)}"
        )
    if not device.is_cuda:
        return "fp32"  # CPU runs always compute in fp32, whatever was asked
    if requested == "auto":
        return "bf16" if device.bf16 else "fp16"
    if requested == "bf16" and not device.bf16:
        raise ValueError(
            f"precision bf16 is not supported on {device.describe()}: bf16 needs compute "
            "capability 8.0 or newer (Ampere, Ada, Hopper); use precision fp16 (with loss "
            "scaling) or auto, which picks fp16 there"
        )
    return requested  # type: ignore[return-value]


def precision_kwargs(precision: str) -> dict[str, bool]:
    """transformers' TrainingArguments flags for a resolved precision (fp16 gets loss scaling
    from the Trainer's gradient scaler)."""
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision_kwargs takes a resolved precision ({', '.join(PRECISIONS)}), "
            f"not {precision!r}: call resolve_precision first"
        )
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def flash_attn_available() -> bool:
    """Whether the ``flash_attn`` package can be imported (without importing it)."""
    try:
        return importlib.util.find_spec("flash_attn") is not None
    except (ImportError, ValueError):
        return False


def resolve_attention(
    device: DeviceInfo,
    flash_attn_installed: bool | None = None,
    *,
    precision: str | None = None,
) -> Attention:
    """transformers' ``attn_implementation`` for a run on ``device``: "flash_attention_2" when
    flash_attn is installed (looked up when None), the device is CUDA with capability >= 8.0
    and the run computes in fp16/bf16 (``precision``: a resolved one; None means what ``auto``
    resolves to on the device); else "sdpa"."""
    if not device.is_cuda or device.capability is None:
        return SDPA
    if device.capability < FLASH_ATTENTION_2_MIN_CAPABILITY:
        return SDPA
    resolved = resolve_precision("auto", device) if precision is None else precision
    if resolved not in ("bf16", "fp16"):
        return SDPA
    installed = flash_attn_available() if flash_attn_installed is None else flash_attn_installed
    return FLASH_ATTENTION_2 if installed else SDPA


def resolved_device_config(
    spec_precision: str, device: DeviceInfo, flash_attn_installed: bool | None = None
) -> dict[str, Any]:
    """What the run page shows next to the resolved trainer config: the device, the precision
    asked for and the one used, and the attention kernel."""
    precision = resolve_precision(spec_precision, device)
    return {
        "device": device.name,
        "device_kind": device.kind,
        "compute_capability": (
            f"{device.capability[0]}.{device.capability[1]}" if device.capability else None
        ),
        "requested_precision": spec_precision,
        "precision": precision,
        "attn_implementation": resolve_attention(device, flash_attn_installed, precision=precision),
    }
