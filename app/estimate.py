"""The pre-launch estimate of a job: parameters (exact, from app.architecture), memory per
device (an estimate: weights + gradients + optimizer state + activations, sharded by the
distributed strategy, see app.estimate_devices), tokens per epoch and whether it fits the
device memory of the setting or of the online workers that can hold the job."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import estimate_devices
from app.architecture import (
    DTYPE_BYTES,
    Architecture,
    EstimateUnavailable,
    ParameterCount,
    architecture,
    count_parameters,
    model_conflicts,
    read_config,
    targeted,
)
from app.estimate_devices import DeviceMemory
from app.methods import get_method, packs
from app.models import BaseModel, Dataset, DatasetRow
from app.routing import needs_gpu
from app.spec import TrainingSpec

GIB = 1024**3
CHUNKED_LOSS_TOKENS = 256  # TRL's chunked_nll computes the head's logits 256 tokens at a time
ALLOCATOR_OVERHEAD = 0.10  # fragmentation, temporary buffers, kernels' workspaces
SAMPLE_ROWS = 5000  # rows read to estimate tokens when no tokenizer statistics are cached
CHARS_PER_TOKEN = 4
FIT_SHARE = 0.9  # above this share of the device's memory, a run is too close to fit safely


def _optimizer_state_bytes(spec: TrainingSpec, param_bytes: int) -> float:
    """Per trainable parameter. AdamW keeps two moments in the parameter's dtype; 8-bit
    optimizers one byte each; Adafactor a factored second moment (small)."""
    optim = str(getattr(spec, "optim", "adamw_torch"))
    if "8bit" in optim:
        return 2.0
    if "adafactor" in optim:
        return 0.1 * param_bytes
    if optim.startswith("sgd"):
        return 0.0
    return 2.0 * param_bytes


def _quantized_bytes(arch: Architecture, spec: TrainingSpec) -> tuple[float, int]:
    """(bytes of the quantized block matrices, how many weights that is)."""
    n = arch.num_layers * sum(linear.d_in * linear.d_out for linear in arch.linears)
    rows = arch.num_layers * sum(linear.d_out for linear in arch.linears)
    if spec.quantization_bits == 8:
        return n + rows * 4, n  # int8 + an fp32 scale per row
    blocks = n / 64  # one absmax per 64 weights
    # Double quantization: 8-bit absmax values plus an fp32 constant per 256 of them.
    double = blocks + blocks / 256 * 4 + 4
    scales = double if spec.bnb_4bit_use_double_quant else blocks * 4
    return n / 2 + scales, n


def memory_breakdown(
    arch: Architecture,
    spec: TrainingSpec,
    count: ParameterCount,
    seq_len: int,
    checkpointing: bool | None = None,
) -> dict[str, Any]:
    """Bytes on each device by part. ``checkpointing``: whether activations are recomputed
    (``checkpointing_choice``); None: only when the spec says on."""
    if checkpointing is None:
        checkpointing = spec.gradient_checkpointing == "on"
    weight_bytes = DTYPE_BYTES[arch.dtype]
    base = arch.total_params
    if spec.adapter == "qlora":
        quantized, n = _quantized_bytes(arch, spec)
        # prepare_model_for_kbit_training casts every other weight to fp32; TRL keeps the
        # quantized model's adapter weights in bf16.
        param_bytes = 2
        weights = quantized + (base - n) * 4 + count.adapter * param_bytes
        compute = 2 if spec.quantization_bits == 8 else DTYPE_BYTES[spec.bnb_4bit_compute_dtype]
    elif spec.adapter in ("full", "freeze"):
        param_bytes = weight_bytes
        weights = base * weight_bytes
        compute = weight_bytes
    else:
        param_bytes = 4  # peft keeps adapter weights in fp32
        weights = base * weight_bytes + count.adapter * param_bytes
        compute = weight_bytes
    gradients = count.trainable * param_bytes
    reference = reference_model_bytes(arch, spec)
    optimizer = count.trainable * _optimizer_state_bytes(spec, param_bytes)
    activations = activation_bytes(arch, spec, seq_len, compute, checkpointing)
    parts = estimate_devices.per_device(
        arch,
        spec,
        {
            "weights": weights,
            "reference_model": reference,
            "gradients": gradients,
            "optimizer": optimizer,
            "activations": activations,
        },
    )
    parts["overhead"] = sum(parts.values()) * ALLOCATOR_OVERHEAD
    total = math.ceil(sum(parts.values()))
    return {
        **{k: math.ceil(v) for k, v in parts.items()},
        "total": total,  # on each device
        "num_devices": spec.num_devices,
        "distributed_strategy": estimate_devices.strategy(spec),
        "sharded": list(estimate_devices.sharded_parts(spec)),
        "total_all_devices": total * spec.num_devices,
        "weight_dtype": "nf4/fp4"
        if spec.adapter == "qlora" and spec.quantization_bits == 4
        else "int8"
        if spec.adapter == "qlora"
        else arch.dtype,
        "sequence_length": seq_len,
        "gradient_checkpointing": checkpointing,
    }


def reference_model_bytes(arch: Architecture, spec: TrainingSpec) -> int:
    """Methods that train against a frozen reference (the method table's ``reference_model``)
    keep a second copy of the weights when the run updates the weights themselves (full,
    freeze); with a peft adapter the reference is the base with the adapter switched off, and a
    KL weight (beta) of 0 needs no reference at all. PPO's value and reward models are not
    counted here."""
    method = get_method(spec.method)
    no_kl = "beta" in method.fields and spec.beta == 0
    if not method.reference_model or no_kl or spec.adapter not in ("full", "freeze"):
        return 0
    return arch.total_params * DTYPE_BYTES[arch.dtype]


def activation_bytes(
    arch: Architecture, spec: TrainingSpec, seq_len: int, compute: int, checkpointing: bool
) -> int:
    """Tensors kept for the backward pass, per token per block: the inputs of both norms and of
    the projections (~4h), q/k/v (h + 2 kv), the attention output (h), the SwiGLU's gate, up,
    activation and product (4 x intermediate); plus LoRA dropout copies of the inputs. Only the
    blocks gradients flow through count (freeze: the trained ones). Gradient checkpointing keeps
    one hidden state per block and recomputes one block at a time."""
    h, inter = arch.hidden_size, arch.intermediate_size
    per_token = 6 * h + 2 * arch.kv_dim + 4 * inter
    if spec.adapter in ("lora", "dora", "qlora") and spec.lora_dropout > 0:
        per_token += sum(lin.d_in for lin in targeted(arch, spec.lora_target_modules)) / max(
            arch.num_layers, 1
        )
    length = seq_len
    if spec.adapter in ("prompt", "ptuning"):
        length += spec.num_virtual_tokens
    tokens = spec.per_device_train_batch_size * length
    if spec.adapter == "freeze" and not spec.freeze_train_embeddings:
        layers = min(spec.freeze_trainable_layers, arch.num_layers)
    else:
        layers = arch.num_layers
    if checkpointing:
        blocks = tokens * (layers * h + per_token) * compute
    else:
        blocks = tokens * layers * per_token * compute
    # The head's logits in fp32 for the loss, one chunk of tokens at a time, and their gradient.
    logits = min(CHUNKED_LOSS_TOKENS, tokens) * arch.vocab_size * (compute + 8)
    embeddings = 2 * tokens * h * compute
    return int(blocks + logits + embeddings)


# --- tokens from the dataset ---------------------------------------------------------------


def _chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_chars(v) for v in value.values())
    if isinstance(value, list):
        return sum(_chars(v) for v in value)
    return 0


@dataclass(frozen=True)
class TokenCount:
    tokens_per_epoch: int
    longest: int  # tokens of the longest row (after truncation to max_length)
    rows: int
    source: str


def dataset_tokens(
    session: Session, dataset: Dataset, model_id: int, max_length: int
) -> TokenCount:
    """Tokens in one epoch: the tokenizer's counts from the dataset's cached statistics when they
    were computed for this model, otherwise characters / 4 over (a sample of) the rows."""
    stats = dataset.stats or {}
    tokens = stats.get("tokens") or {}
    params = stats.get("params") or {}
    rows = dataset.num_rows
    if tokens and params.get("model_id") == model_id and tokens.get("max") is not None:
        per_row = min(float(tokens.get("mean", 0.0)), float(max_length))
        return TokenCount(
            tokens_per_epoch=round(per_row * rows),
            longest=min(int(tokens["max"]), max_length),
            rows=rows,
            source="tokenizer (dataset statistics)"
            + (", truncation approximated" if int(tokens["max"]) > max_length else ""),
        )
    sampled = total = longest = 0
    for (data,) in session.execute(
        select(DatasetRow.data)
        .where(DatasetRow.dataset_id == dataset.id)
        .order_by(DatasetRow.index)
        .limit(SAMPLE_ROWS)
    ):
        n = min(math.ceil(_chars(data) / CHARS_PER_TOKEN), max_length)
        total += n
        longest = max(longest, n)
        sampled += 1
    rows = max(rows, sampled)
    scaled = total * rows / sampled if sampled else 0
    source = "characters / 4" + (f" (first {sampled} rows)" if sampled < rows else "")
    return TokenCount(round(scaled), longest, rows, source)


# --- the whole estimate --------------------------------------------------------------------


def _gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def _device_words(spec: TrainingSpec) -> str:
    return "each of the run's devices has" if spec.num_devices > 1 else "the worker has"


def _strategy_hints(spec: TrainingSpec) -> list[str]:
    if spec.num_devices > 1 and spec.distributed_strategy in ("ddp", "deepspeed_zero2"):
        return ["shard the weights too with distributed_strategy fsdp or deepspeed_zero3"]
    if spec.num_devices == 1 and spec.adapter in ("full", "freeze"):
        return ["spread the run over several devices (num_devices) with fsdp or deepspeed_zero3"]
    return []


def fit_warnings(
    spec: TrainingSpec, memory: dict[str, Any], device_bytes: int
) -> tuple[bool | None, list[str]]:
    if device_bytes <= 0:
        return None, []
    total = memory["total"]
    has = _device_words(spec)
    if total <= FIT_SHARE * device_bytes:
        return True, []
    if total <= device_bytes:
        return True, [
            f"needs about {_gib(total)} of the {_gib(device_bytes)} {has}: close to the limit"
        ]
    hints = []
    if memory["activations"] >= max(memory["weights"], memory["optimizer"]) / 2:
        if spec.per_device_train_batch_size > 1:
            hints.append(
                "lower per_device_train_batch_size (raise gradient_accumulation_steps to keep the "
                "effective batch)"
            )
        hints.append("lower max_length")
        if not memory["gradient_checkpointing"] and spec.adapter != "prefix":
            hints.append("set gradient_checkpointing to auto or on")
    if spec.adapter in ("full", "freeze"):
        hints.append("use a LoRA or QLoRA adapter instead of training whole weights")
    elif spec.adapter in ("lora", "dora", "prefix", "prompt", "ptuning", "ia3"):
        hints.append("use QLoRA to hold the base model in 4 bits")
    elif spec.adapter == "qlora" and spec.quantization_bits == 8:
        hints.append("quantize to 4 bits instead of 8")
    hints += _strategy_hints(spec)
    message = (
        f"does not fit: needs about {_gib(total)} but {has} {_gib(device_bytes)}; "
        + "; ".join(hints or ["pick a smaller model"])
    )
    return False, [message]


def _smaller_worker_warning(memory: dict[str, Any], device: DeviceMemory) -> list[str]:
    """A job for any device class may go to a worker with less memory than the one counted."""
    if device.smallest is None or device.source == "setting":
        return []
    low, who = device.smallest
    if memory["total"] <= low:
        return []
    return [
        f"fits {device.source} but not {who}, which has {_gib(low)} and may take it: "
        "ask for a device_class"
    ]


def estimate(
    arch: Architecture,
    spec: TrainingSpec,
    tokens: TokenCount | None,
    device_memory_bytes: int = 0,
    *,
    device: DeviceMemory | None = None,
) -> dict[str, Any]:
    """The estimate against ``device`` (where its memory came from), or against
    ``device_memory_bytes`` as the setting when no ``device`` is given."""
    if device is None:
        source = "setting" if device_memory_bytes > 0 else None
        device = DeviceMemory(device_memory_bytes, source)
    count = count_parameters(arch, spec)
    seq_len = sequence_length(spec, tokens)
    checkpointing, reason = checkpointing_choice(arch, spec, count, seq_len, device.bytes)
    memory = memory_breakdown(arch, spec, count, seq_len, checkpointing)
    fits, warnings = fit_warnings(spec, memory, device.bytes)
    if fits:
        warnings += _smaller_worker_warning(memory, device)
    warnings += [f"{field}: {reason}" for field, reason in model_conflicts(spec, arch)]
    per_step = estimate_devices.rows_per_step(spec)
    result: dict[str, Any] = {
        "trainable_parameters": count.trainable,
        "total_parameters": count.total,
        "trainable_share": round(count.trainable / count.total, 6) if count.total else 0.0,
        "memory_bytes": memory["total"],
        "memory_breakdown": memory,
        "tokens_per_epoch": tokens.tokens_per_epoch if tokens else None,
        "tokens_source": tokens.source if tokens else None,
        "fits": fits,
        "gradient_checkpointing": reason,
        **_device_keys(device),
        "num_devices": spec.num_devices,
        "distributed_strategy": estimate_devices.strategy(spec),
        "rows_per_optimizer_step": per_step,
        "tokens_per_optimizer_step": None,
        "warnings": warnings,
    }
    if tokens is not None and tokens.rows:
        result["steps_per_epoch"] = math.ceil(tokens.rows / per_step)
        result["tokens_per_optimizer_step"] = round(
            tokens.tokens_per_epoch / tokens.rows * per_step
        )
    return result


def sequence_length(spec: TrainingSpec, tokens: TokenCount | None) -> int:
    """The longest sequence a step computes: packed bins fill up to max_length (or hold every
    row of a smaller dataset); unpacked, the dataset's longest row when it is known."""
    if tokens is None or tokens.longest <= 0:
        return spec.max_length
    if packs(spec):
        return min(spec.max_length, max(tokens.tokens_per_epoch, tokens.longest))
    return min(spec.max_length, tokens.longest)


def checkpointing_choice(
    arch: Architecture,
    spec: TrainingSpec,
    count: ParameterCount,
    seq_len: int,
    device_bytes: int,
) -> tuple[bool, str]:
    """(recompute activations, why): as the spec says when it says on or off; for auto, on
    only when the run would not fit ``device_bytes`` (each device's memory) without it. The
    worker resolves it on its device with the same rule; the estimate against the device the
    job would get."""
    asked = spec.gradient_checkpointing
    if asked != "auto":
        return asked == "on", f"{asked} (as asked)"
    if spec.adapter == "prefix":
        return False, "off: prefix tuning cannot use it"
    if device_bytes <= 0:
        return False, "off: the device's memory is not known"
    without = memory_breakdown(arch, spec, count, seq_len, checkpointing=False)["total"]
    if without <= FIT_SHARE * device_bytes:
        return False, f"off: fits in {_gib(without)} of {_gib(device_bytes)} without it"
    with_it = memory_breakdown(arch, spec, count, seq_len, checkpointing=True)["total"]
    return True, (
        f"on: without it the run would need about {_gib(without)} of {_gib(device_bytes)}, "
        f"with it about {_gib(with_it)}"
    )


def _device_keys(device: DeviceMemory | None) -> dict[str, Any]:
    device = device or DeviceMemory()
    return {
        "device_memory_bytes": device.bytes or None,
        "device_memory_source": device.source if device.bytes else None,
        "device_class": device.device_class,
    }


def _unavailable(reason: str) -> dict[str, Any]:
    return {
        "trainable_parameters": None,
        "total_parameters": None,
        "trainable_share": None,
        "memory_bytes": None,
        "memory_breakdown": None,
        "tokens_per_epoch": None,
        "tokens_source": None,
        "fits": None,
        "gradient_checkpointing": None,
        **_device_keys(None),
        "warnings": [f"no estimate: {reason}"],
    }


def estimate_for(
    session: Session,
    spec: TrainingSpec,
    model: BaseModel,
    dataset: Dataset,
    device_memory_bytes: int = 0,
    *,
    device_class: str | None = None,
    stale_after_seconds: float | None = None,
) -> dict[str, Any]:
    """The estimate for a validated request (see ``app.jobs.validate_request``), against
    ``device_memory_bytes`` (the setting) when set, else against the online workers that can
    hold the job (``device_class``, ``spec.num_devices``) when ``stale_after_seconds`` is given."""
    tokens = dataset_tokens(session, dataset, model.id, spec.max_length)
    device = estimate_devices.device_memory(
        session,
        device_class,
        spec.num_devices,
        device_memory_bytes,
        stale_after_seconds,
        gpus=needs_gpu(spec.num_devices, spec.distributed_strategy),
    )
    try:
        arch = architecture(read_config(Path(model.path)))
    except EstimateUnavailable as exc:
        result = _unavailable(str(exc))
        result["tokens_per_epoch"] = tokens.tokens_per_epoch
        result["tokens_source"] = tokens.source
        result["device_class"] = device.device_class
        return result
    return estimate(arch, spec, tokens, device=device)
