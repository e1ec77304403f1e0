"""TrainingSpec: the one home of every hyperparameter, its default, bounds and help text.

The job form is generated from it, the API validates against it, the job stores
``spec.model_dump()`` with ``SPEC_VERSION``, and ``worker.training.mapping`` turns it into
TRL/peft/bitsandbytes objects. Field names follow transformers/TRL/peft where those have one.

Adapter knobs say which adapters they apply to (``adapters`` in the field's schema extra), and
``when`` gives a condition on another field; which knobs belong to which method is said once, in
the method table (``app.methods``). A knob that
does not apply must keep its default: a request that sets it is refused with the reason, never
silently ignored.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.methods import METHOD_NAMES, METHODS, methods_with_field
from app.models import MAX_ID

# 2: packing on by default (version 1 stored packing false for every method).
SPEC_VERSION = 2

Method = Literal[METHOD_NAMES]  # type: ignore[valid-type]
Adapter = Literal["full", "freeze", "lora", "dora", "qlora", "prefix", "prompt", "ptuning", "ia3"]
Optimizer = Literal[
    "adamw_torch", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit", "adafactor"
]
Precision = Literal["auto", "bf16", "fp16", "fp32"]
DistributedStrategy = Literal["ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"]
LigerChoice = Literal["auto", "on", "off"]
Checkpointing = Literal["auto", "on", "off"]
Scheduler = Literal["linear", "cosine", "constant", "constant_with_warmup"]

DpoLossType = Literal[
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sigmoid_norm",
]

ADAPTERS: tuple[str, ...] = Adapter.__args__  # type: ignore[attr-defined]
LORA_ADAPTERS = ("lora", "dora", "qlora")
PROMPT_LEARNING_ADAPTERS = ("prefix", "prompt", "ptuning")
PEFT_ADAPTERS = (*LORA_ADAPTERS, *PROMPT_LEARNING_ADAPTERS, "ia3")
# Adapters whose update can be folded into the base weights (a merged export).
MERGEABLE_ADAPTERS = ("full", "freeze", *LORA_ADAPTERS, "ia3")

MODULE_LIST = r"[A-Za-z0-9_.]+(\s*,\s*[A-Za-z0-9_.]+)*"


class RewardRule(BaseModel):
    """A GRPO rule reward: ``exact`` (1 when the answer equals the row's reference, ignoring case
    and surrounding space), ``regex`` (1 when the pattern is found in the answer), ``length``
    (1 at ``target`` characters, falling linearly to 0 at 0 and at twice the target)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["exact", "regex", "length"]
    weight: float = Field(default=1.0, gt=0, le=100)
    pattern: str | None = Field(default=None, max_length=200)
    target: int | None = Field(default=None, ge=1, le=100_000)

    @model_validator(mode="after")
    def _needs(self) -> RewardRule:
        if self.type == "regex":
            if not self.pattern:
                raise ValueError("a regex reward needs a pattern")
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"the pattern does not compile: {exc}") from None
        if self.type == "length" and self.target is None:
            raise ValueError("a length reward needs a target (characters)")
        return self


def knob(
    default: Any,
    help: str,
    group: str = "training",
    *,
    adapters: tuple[str, ...] | None = None,
    when: dict[str, Any] | None = None,
    **bounds: Any,
) -> Any:
    """A spec field with help text, the form group it is shown in, and (for adapter knobs) the
    adapters it applies to and a condition on another field."""
    extra: dict[str, Any] = {"group": group}
    if adapters is not None:
        extra["adapters"] = list(adapters)
    if when is not None:
        extra["when"] = when
    return Field(default, description=help, json_schema_extra=extra, **bounds)


class SpecConflicts(ValueError):
    """Knob values that cannot work together; ``problems`` is [(field, reason)]."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{field}: {reason}" for field, reason in problems))
        self.problems = problems


class TrainingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @classmethod
    def from_stored(cls, values: dict[str, Any], version: int | None) -> TrainingSpec:
        """A job's stored ``model_dump()`` as this version reads it."""
        return cls.model_validate(upgrade_stored(values, version or 1))

    method: Method = knob(
        "sft",
        "Training method: " + "; ".join(f"{m.name}: {m.label}" for m in METHODS.values()) + ".",
        "method",
    )
    adapter: Adapter = knob(
        "lora",
        "How the weights are trained: all of them (full), the last blocks (freeze), low-rank "
        "updates (lora, dora, qlora on a 4/8-bit base), learned virtual tokens (prefix, prompt, "
        "ptuning) or learned rescaling vectors (ia3).",
        "method",
    )

    num_train_epochs: float = knob(1.0, "Passes over the training data.", gt=0, le=100)
    max_steps: int = knob(
        -1, "Stop after this many optimizer steps (-1: run the epochs).", ge=-1, le=1_000_000
    )
    learning_rate: float = knob(2e-4, "Peak learning rate.", gt=0, le=1.0)
    lr_scheduler_type: Scheduler = knob("cosine", "Learning-rate schedule after warmup.")
    warmup_steps: float = knob(
        0.03,
        "Linear warmup: a whole number of steps, or a share of all steps below 1.",
        ge=0,
        le=1_000_000,
    )
    weight_decay: float = knob(0.0, "AdamW weight decay.", ge=0, le=1)
    max_grad_norm: float = knob(1.0, "Gradient clipping norm (0: off).", ge=0, le=100)
    per_device_train_batch_size: int = knob(4, "Sequences per device per step.", ge=1, le=1024)
    gradient_accumulation_steps: int = knob(
        1, "Micro-batches accumulated per optimizer step.", ge=1, le=1024
    )
    gradient_checkpointing: Checkpointing = knob(
        "auto",
        "Recompute activations in the backward pass: much less memory, about a third slower. "
        "auto: on only when the estimate says the run would not fit the device's memory "
        "otherwise (with a 10% margin); on; off.",
    )
    max_length: int = knob(
        1024, "Tokens per sequence; longer rows are truncated.", ge=16, le=131072
    )
    assistant_only_loss: bool = knob(
        True,
        "Train only on what assistant turns say (and their end-of-turn token), not on system, "
        "user or tool text; a message's loss_weight 0 leaves it out. Off: every token.",
    )
    completion_only_loss: bool = knob(
        False,
        "Train only on the final assistant turn (the completion).",
    )
    seed: int = knob(42, "Random seed for reproducible runs.", ge=0, le=2**31 - 1)
    optim: Optimizer = knob(
        "adamw_torch",
        "Optimizer: AdamW; its 8-bit and paged variants (bitsandbytes, CUDA: much less optimizer "
        "memory, paged also survives memory spikes; the QLoRA recipe uses paged_adamw_8bit); or "
        "Adafactor (factored second moments, least memory).",
    )
    precision: Precision = knob(
        "auto",
        "Compute precision on a GPU: auto (bf16 where supported), bf16, fp16 (with loss "
        "scaling) or fp32. CPU runs always compute in fp32.",
    )
    num_devices: int = knob(
        1,
        "Devices one run trains on, one process each: GPUs of one worker, or processes on a "
        "CPU worker (up to its cores). Each device takes per_device_train_batch_size rows a "
        "step, so the batch per optimizer step grows with it.",
        "devices",
        ge=1,
        le=64,
    )
    distributed_strategy: DistributedStrategy = knob(
        "ddp",
        "With num_devices > 1: ddp (a full copy of the model per device, gradients averaged), "
        "fsdp (parameters, gradients and optimizer state sharded; saved whole), "
        "deepspeed_zero2 (optimizer state and gradients sharded) or deepspeed_zero3 "
        "(parameters too; weights gathered when saved).",
        "devices",
    )
    neftune_noise_alpha: float = knob(
        0.0,
        "SFT: NEFTune, uniform noise on the input embeddings while training (5 in the paper; "
        "0: off).",
        ge=0,
        le=100,
    )
    packing: bool = knob(
        True,
        "SFT / pretraining: pack several rows into each max_length sequence (best-fit) and "
        "train without padding. Position ids restart at each row and every attention kernel "
        "the studio uses (SDPA, eager, flash-attention) keeps packed rows from seeing each "
        "other, so a row's loss is what it would be alone; there are fewer, fuller sequences "
        "per epoch, so an epoch takes fewer steps. Off: one row per sequence, padded.",
    )

    stop_check_prompts: int = knob(
        4,
        "After training a chat model: how many prompts of the data the final model answers "
        "greedily, all in one batch of at most 64 new tokens, to check that it ends its answers "
        "with the end-of-turn token (a model that never stops is the classic template or "
        "masking failure). Bounded to 60 s; 0: skip the check.",
        ge=0,
        le=32,
    )
    liger_kernels: LigerChoice = knob(
        "auto",
        "SFT / pretraining on a CUDA GPU: Liger's fused Triton kernels (RMSNorm, RoPE, SwiGLU "
        "and a linear cross-entropy that never builds the whole logits tensor): less memory, "
        "faster steps, the same losses within rounding. auto: on where the GPU and the model's "
        "architecture have them, off on CPU; on: refuse to run without them; off: never.",
    )

    # Preference methods (names as in TRL's DPOConfig / KTOConfig / CPOConfig / ORPOConfig).
    beta: float = knob(
        0.1,
        "dpo / kto: how far the model may move from the reference (higher: stays closer); "
        "orpo: weight of the odds-ratio term (lambda in the paper); simpo: reward scale "
        "(the paper uses 2 to 2.5).",
        "method",
        gt=0,
        le=100,
    )
    loss_type: DpoLossType = knob(
        "sigmoid",
        "DPO loss: sigmoid (the paper's), ipo, hinge (SLiC), robust (noisy labels, with "
        "label_smoothing), exo_pair, nca_pair, bco_pair, sppo_hard, aot, aot_unpaired, "
        "apo_zero, apo_down, discopop, sigmoid_norm.",
        "method",
    )
    label_smoothing: float = knob(
        0.0,
        "DPO: assumed probability that a preference label is flipped (robust, exo_pair; "
        "0.1 is typical for robust).",
        "method",
        ge=0,
        lt=0.5,
    )
    desirable_weight: float = knob(
        1.0,
        "KTO: loss weight of answers labelled good; raise it when good answers are rarer "
        "than bad ones.",
        "method",
        gt=0,
        le=100,
    )
    undesirable_weight: float = knob(
        1.0,
        "KTO: loss weight of answers labelled bad.",
        "method",
        gt=0,
        le=100,
    )
    simpo_gamma: float = knob(
        0.5,
        "SimPO: target reward margin between chosen and rejected answers.",
        "method",
        ge=0,
        le=100,
    )
    cpo_alpha: float = knob(
        0.0,
        "SimPO: weight of an added SFT (behaviour cloning) loss on the chosen answers; "
        "0 is pure SimPO, 1 is CPO-SimPO.",
        "method",
        ge=0,
        le=100,
    )
    # Online RL (names as in TRL's GRPOConfig and experimental PPOConfig).
    num_generations: int = knob(
        4,
        "GRPO: answers sampled per prompt; each is scored against the others' mean reward. "
        "per_device_train_batch_size must be a multiple of it.",
        "method",
        ge=2,
        le=64,
    )
    max_completion_length: int = knob(
        128,
        "PPO / GRPO: tokens generated per answer during training.",
        "method",
        ge=1,
        le=32768,
    )
    temperature: float = knob(
        1.0,
        "PPO / GRPO: sampling temperature of the answers generated during training.",
        "method",
        gt=0,
        le=5,
    )
    kl_coef: float = knob(
        0.05,
        "PPO: weight of the KL penalty that keeps the policy near the reference model.",
        "method",
        ge=0,
        le=10,
    )
    cliprange: float = knob(0.2, "PPO: clip range of the policy ratio.", "method", gt=0, le=1)
    vf_coef: float = knob(0.1, "PPO: weight of the value-function loss.", "method", ge=0, le=10)
    num_ppo_epochs: int = knob(
        4,
        "PPO: optimisation epochs over each batch of rollouts.",
        "method",
        ge=1,
        le=64,
    )
    reward_functions: list[RewardRule] = knob(
        [],
        'GRPO: rule rewards as JSON, e.g. [{"type": "exact", "weight": 1}, {"type": "regex", '
        '"pattern": "^\\d+$", "weight": 0.5}, {"type": "length", "target": 50, "weight": 0.2}]; '
        "exact compares with each row's reference answer.",
        "method",
    )
    reward_checkpoint_id: int | None = knob(
        None,
        "PPO / GRPO: a checkpoint of one of your reward-model runs that scores the answers.",
        "method",
        ge=1,
        le=MAX_ID,
    )
    reward_model: int | None = knob(
        None,
        "PPO / GRPO: a registered base model (a sequence classifier) that scores the answers.",
        "method",
        ge=1,
        le=MAX_ID,
    )
    center_rewards_coefficient: float = knob(
        0.0,
        "Reward model: pull the mean reward towards zero with this weight (0: off; 0.01 is "
        "common).",
        "method",
        ge=0,
        le=10,
    )

    logging_steps: int = knob(5, "Record metrics every N steps.", "logging", ge=1, le=100_000)
    eval_steps: int = knob(
        0,
        "Evaluate on the eval dataset every N steps (0: every logging_steps).",
        "logging",
        ge=0,
        le=100_000,
    )
    save_steps: int = knob(
        500,
        "Save a checkpoint every N steps (a final one is always saved).",
        "logging",
        ge=1,
        le=1_000_000,
    )
    save_total_limit: int = knob(
        3, "Keep at most N intermediate checkpoints.", "logging", ge=1, le=10_000
    )
    # Early stopping (names as in transformers' EarlyStoppingCallback); needs an eval dataset.
    early_stopping_patience: int = knob(
        0,
        "Early stopping: end the run when the eval loss has not improved for N evaluations in a "
        "row (0: off). Needs an eval dataset, evaluated every logging_steps; checkpoints are then "
        "saved at evaluations and the best one becomes the final model.",
        "logging",
        ge=0,
        le=1000,
    )
    early_stopping_threshold: float = knob(
        0.0,
        "Early stopping: how much the eval loss must fall to count as an improvement.",
        "logging",
        ge=0,
        le=100,
    )

    # LoRA family (lora, dora = LoRA with weight decomposition, qlora = LoRA on a quantized base).
    lora_r: int = knob(16, "LoRA rank.", "adapter", adapters=LORA_ADAPTERS, ge=1, le=1024)
    lora_alpha: int = knob(
        32,
        "LoRA scaling (alpha / r multiplies the update).",
        "adapter",
        adapters=LORA_ADAPTERS,
        ge=1,
        le=16384,
    )
    lora_dropout: float = knob(
        0.05, "Dropout on the LoRA path.", "adapter", adapters=LORA_ADAPTERS, ge=0, lt=1
    )
    lora_target_modules: str = knob(
        "all-linear",
        "Modules to adapt: all-linear (every linear layer in the blocks), or a comma-separated "
        "list such as q_proj,v_proj.",
        "adapter",
        adapters=LORA_ADAPTERS,
        pattern=rf"^(all-linear|{MODULE_LIST})$",
        max_length=500,
    )
    use_rslora: bool = knob(
        False,
        "Rank-stabilised LoRA: scale the update by alpha / sqrt(r) instead of alpha / r "
        "(helps at high ranks).",
        "adapter",
        adapters=LORA_ADAPTERS,
    )

    # QLoRA: the base model is loaded quantized by bitsandbytes.
    quantization_bits: Literal[4, 8] = knob(
        4,
        "Bits per base weight: 4 (NF4/FP4, the QLoRA recipe) or 8 (LLM.int8).",
        "adapter",
        adapters=("qlora",),
    )
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = knob(
        "nf4",
        "4-bit data type: nf4 (normal float, best for normally distributed weights) or fp4.",
        "adapter",
        adapters=("qlora",),
        when={"quantization_bits": 4},
    )
    bnb_4bit_use_double_quant: bool = knob(
        True,
        "Double quantization: quantize the quantization constants too (saves ~0.4 bit/weight).",
        "adapter",
        adapters=("qlora",),
        when={"quantization_bits": 4},
    )
    bnb_4bit_compute_dtype: Literal["bfloat16", "float16", "float32"] = knob(
        "bfloat16",
        "Data type the 4-bit weights are dequantized to for each matrix multiply.",
        "adapter",
        adapters=("qlora",),
        when={"quantization_bits": 4},
    )

    # Freeze: train only the last N transformer blocks (optionally embeddings and head).
    freeze_trainable_layers: int = knob(
        2,
        "Train the last N transformer blocks; all earlier blocks stay frozen.",
        "adapter",
        adapters=("freeze",),
        ge=1,
        le=1024,
    )
    freeze_train_embeddings: bool = knob(
        False,
        "Also train the input token embeddings.",
        "adapter",
        adapters=("freeze",),
    )
    freeze_train_lm_head: bool = knob(
        False,
        "Also train the output head (lm_head). Models that tie it to the embeddings need both "
        "or neither.",
        "adapter",
        adapters=("freeze",),
    )

    # Prompt learning: prefix tuning, prompt tuning, p-tuning.
    num_virtual_tokens: int = knob(
        20,
        "Learned virtual tokens: prepended to every input (prompt, ptuning) or to every "
        "layer's keys and values (prefix).",
        "adapter",
        adapters=PROMPT_LEARNING_ADAPTERS,
        ge=1,
        le=1024,
    )
    prefix_projection: bool = knob(
        False,
        "Prefix tuning: produce the prefix through a two-layer MLP (more parameters, often "
        "more stable).",
        "adapter",
        adapters=("prefix",),
    )
    encoder_hidden_size: int = knob(
        0,
        "Hidden size of the prompt encoder MLP (ptuning, or prefix with prefix_projection); "
        "0: peft's default (the model's key/value width for prefix, hidden size for ptuning).",
        "adapter",
        adapters=("prefix", "ptuning"),
        ge=0,
        le=65536,
    )
    prompt_tuning_init: Literal["random", "sample_vocab", "text"] = knob(
        "random",
        "Initial virtual token embeddings: random, sampled vocabulary embeddings, or the "
        "embeddings of prompt_tuning_init_text.",
        "adapter",
        adapters=("prompt",),
    )
    prompt_tuning_init_text: str = knob(
        "",
        "Text whose token embeddings initialise the prompt (with prompt_tuning_init = text), "
        "e.g. 'Answer the question helpfully:'.",
        "adapter",
        adapters=("prompt",),
        when={"prompt_tuning_init": "text"},
        max_length=2000,
    )

    # IA3: learned vectors rescaling keys, values and feed-forward inputs.
    ia3_target_modules: str = knob(
        "k_proj,v_proj,down_proj",
        "Modules IA3 rescales: all-linear, or a comma-separated list (peft's Llama default: "
        "k_proj,v_proj,down_proj).",
        "adapter",
        adapters=("ia3",),
        pattern=rf"^(all-linear|{MODULE_LIST})$",
        max_length=500,
    )
    ia3_feedforward_modules: str = knob(
        "down_proj",
        "Which of the IA3 targets are feed-forward layers (rescaled on their input rather than "
        "their output); comma-separated, may be empty.",
        "adapter",
        adapters=("ia3",),
        pattern=rf"^({MODULE_LIST})?$",
        max_length=500,
    )

    @field_validator("quantization_bits", mode="before")
    @classmethod
    def _bits_from_text(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)  # form posts send text
        return value

    @field_validator("gradient_checkpointing", mode="before")
    @classmethod
    def _checkpointing_from_bool(cls, value: Any) -> Any:
        """Version-2 specs and older API clients said true / false."""
        if isinstance(value, bool):
            return "on" if value else "off"
        return value

    @field_validator("reward_checkpoint_id", "reward_model", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("reward_functions", mode="before")
    @classmethod
    def _rules_from_text(cls, value: Any) -> Any:
        """The form sends the rules as JSON text (or as they were shown, a Python literal)."""
        if isinstance(value, str):
            text = value.strip() or "[]"
            try:
                return json.loads(text)
            except ValueError:
                try:
                    return ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    raise ValueError("reward_functions must be a JSON list of rules") from None
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> TrainingSpec:
        if self.warmup_steps >= 1 and not float(self.warmup_steps).is_integer():
            raise ValueError("warmup_steps must be a whole number of steps, or a share below 1")
        if self.max_steps > 0 and self.logging_steps > self.max_steps:
            raise ValueError("logging_steps is larger than max_steps: no metrics would be recorded")
        from app.spec_rules import conflicts  # the rules read this module's field metadata

        if problems := conflicts(self):
            raise SpecConflicts(problems)
        return self


def module_list(value: str) -> list[str]:
    """``q_proj, v_proj`` -> ['q_proj', 'v_proj'] (``all-linear`` stays one item)."""
    return [part.strip() for part in value.split(",") if part.strip()]


def _extra(name: str) -> dict[str, Any]:
    return TrainingSpec.model_fields[name].json_schema_extra or {}  # type: ignore[return-value]


def field_adapters(name: str) -> tuple[str, ...] | None:
    """The adapters a knob applies to; None: it applies to every adapter."""
    adapters = _extra(name).get("adapters")
    return tuple(adapters) if adapters is not None else None


def field_methods(name: str) -> tuple[str, ...] | None:
    """The methods a knob applies to (the method table says); None: it applies to every method."""
    return methods_with_field(name)


def field_condition(name: str) -> dict[str, Any]:
    return dict(_extra(name).get("when") or {})


def field_applies(name: str, values: dict[str, Any]) -> bool:
    """Whether knob ``name`` means something given the other values (method, adapter,
    conditions).

    ``values`` may hold form text: conditions compare as text.
    """
    adapters = field_adapters(name)
    adapter = str(values.get("adapter", TrainingSpec.model_fields["adapter"].default))
    if adapters is not None and adapter not in adapters:
        return False
    methods = field_methods(name)
    method = str(values.get("method") or TrainingSpec.model_fields["method"].default)
    if methods is not None and method not in methods:
        return False
    for other, expected in field_condition(name).items():
        value = values.get(other, TrainingSpec.model_fields[other].default)
        if str(value) != str(expected):
            return False
    return True


# Fields the studio uses itself rather than handing to a library (see worker.training.mapping).
STUDIO_ONLY_FIELDS = frozenset({"method", "adapter"})

HYPERPARAMETER_FIELDS = tuple(
    name for name in TrainingSpec.model_fields if name not in STUDIO_ONLY_FIELDS
)


def field_groups() -> dict[str, list[tuple[str, Any]]]:
    """Spec fields by form group, in declaration order, for generating the job form."""
    groups: dict[str, list[tuple[str, Any]]] = {}
    for name, info in TrainingSpec.model_fields.items():
        group = (info.json_schema_extra or {}).get("group", "training")  # type: ignore[union-attr]
        groups.setdefault(group, []).append((name, info))
    return groups


def upgrade_stored(values: dict[str, Any], version: int) -> dict[str, Any]:
    """A spec stored under an older ``SPEC_VERSION`` in this version's terms: runs keep the
    settings they were made with, and knobs their method never took go back to the default."""
    values = dict(values)
    if version < 2:
        if values.get("method") not in (methods_with_field("packing") or ()):
            values.pop("packing", None)  # false was the default for every method
        elif values.get("method") in (methods_with_field("liger_kernels") or ()):
            values.setdefault("liger_kernels", "off")  # a resumed run keeps its kernels
    return values
