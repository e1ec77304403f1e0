"""The distributed strategies' settings (``app.launch``) are what the installed transformers and
accelerate expect: FSDP arguments become accelerate's FSDP2 plugin with full-state-dict saves and
decoder-block wrapping; every "auto" in the DeepSpeed configs is one transformers fills. No
process group is needed: the Trainer itself refuses FSDP outside a distributed run, so the
plugin is built the way the Trainer builds it."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from accelerate.utils import FullyShardedDataParallelPlugin
from accelerate.utils.deepspeed import HfDeepSpeedConfig
from torch.distributed.fsdp import StateDictType
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from app.jobs import JobRequestError, build_spec
from app.launch import DEEPSPEED_FILE, deepspeed_config, fsdp_arguments, launch_plan
from app.spec import TrainingSpec
from worker.training.distributed import trainer_arguments, write_launch
from worker.training.mapping import method_config

STRATEGIES = ("ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3")
DDP_KEYS = {"ddp_backend", "ddp_find_unused_parameters"}
# The FSDP2 keys of TrainingArguments' fsdp_config (transformers 5.23 docstring, and read by
# TrainingArguments._process_fsdp_args); use_orig_params, sync_module_states and the prefetch
# settings are FSDP1's (deprecated), which accelerate ignores or refuses under FSDP2.
FSDP2_CONFIG_KEYS = {
    "version",
    "reshard_after_forward",
    "cpu_offload",
    "activation_checkpointing",
    "cpu_ram_efficient_loading",
    "state_dict_type",
    "auto_wrap_policy",
    "transformer_layer_cls_to_wrap",
    "min_num_params",
}


@pytest.fixture(autouse=True)
def _restore_fsdp_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """TrainingArguments and the plugin write FSDP_CPU_RAM_EFFICIENT_LOADING to the environment."""
    monkeypatch.delenv("FSDP_CPU_RAM_EFFICIENT_LOADING", raising=False)


def _spec(strategy: str, **knobs: Any) -> TrainingSpec:
    return TrainingSpec(num_devices=2, distributed_strategy=strategy, **knobs)


def _tiny_llama() -> LlamaForCausalLM:
    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
    )
    return LlamaForCausalLM(config)


def _fsdp_plugin(
    spec: TrainingSpec, output_dir: Path
) -> tuple[Any, FullyShardedDataParallelPlugin]:
    """The worker's TRL config for the plan's trainer arguments, and the plugin the Trainer
    would hand to accelerate (``Trainer.create_accelerator_and_postprocess``). No backend: with
    one, TrainingArguments would join a process group."""
    strategy = launch_plan(spec)["config"]["trainer_arguments"]
    args = method_config(spec, output_dir, use_cpu=True, strategy=strategy)
    return args, FullyShardedDataParallelPlugin(**args.fsdp_plugin_args)


def test_fsdp_arguments_give_an_fsdp2_plugin_saving_full_state_dicts(tmp_path: Path) -> None:
    arguments = fsdp_arguments()
    assert arguments["fsdp"] is True  # a string (legacy FSDPOption list) is deprecated
    assert set(arguments["fsdp_config"]) <= FSDP2_CONFIG_KEYS
    args, plugin = _fsdp_plugin(_spec("fsdp"), tmp_path)
    assert args.fsdp_plugin_args["fsdp_version"] == 2
    assert args.fsdp_plugin_args["state_dict_type"] == "FULL_STATE_DICT"
    assert plugin.fsdp_version == 2
    assert plugin.state_dict_type == StateDictType.FULL_STATE_DICT
    assert plugin.reshard_after_forward is True  # parameters sharded too (full shard)
    assert plugin.cpu_ram_efficient_loading is False
    assert args.activation_checkpointing is False and plugin.activation_checkpointing is False


def test_fsdp_wraps_the_models_decoder_blocks_without_naming_them(tmp_path: Path) -> None:
    """No class names in the config: accelerate takes the model's ``_no_split_modules``."""
    assert "transformer_layer_cls_to_wrap" not in fsdp_arguments()["fsdp_config"]
    _, plugin = _fsdp_plugin(_spec("fsdp"), tmp_path)
    plugin.set_auto_wrap_policy(_tiny_llama())
    assert plugin.transformer_cls_names_to_wrap == ["LlamaDecoderLayer"]
    assert plugin.auto_wrap_policy.keywords["transformer_layer_cls"] == {LlamaDecoderLayer}


def test_fsdp_recomputes_activations_itself_when_the_spec_asks(tmp_path: Path) -> None:
    """The spec's gradient_checkpointing becomes FSDP's own; the Trainer refuses both at once."""
    args, plugin = _fsdp_plugin(_spec("fsdp", gradient_checkpointing="on"), tmp_path)
    assert plugin.activation_checkpointing is True
    assert args.activation_checkpointing is False


class _FilledDeepSpeedConfig(HfDeepSpeedConfig):
    """transformers' HfTrainerDeepSpeedConfig fill logic on accelerate's config reader: its own
    base needs the deepspeed package, which a CPU machine does not have."""

    fill_match = HfTrainerDeepSpeedConfig.fill_match
    fill_only = vars(HfTrainerDeepSpeedConfig)["fill_only"]
    is_auto = HfTrainerDeepSpeedConfig.is_auto
    trainer_config_process = HfTrainerDeepSpeedConfig.trainer_config_process
    trainer_config_finalize = HfTrainerDeepSpeedConfig.trainer_config_finalize

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.mismatches: list[str] = []


def _autos(node: Any, path: str = "") -> list[str]:
    if isinstance(node, dict):
        return [a for key, value in node.items() for a in _autos(value, f"{path}{key}.")]
    return [path.rstrip(".")] if node == "auto" else []


@pytest.mark.parametrize("stage", [2, 3])
def test_transformers_fills_every_auto_of_the_deepspeed_config(tmp_path: Path, stage: int) -> None:
    spec = TrainingSpec(
        per_device_train_batch_size=2, gradient_accumulation_steps=3, max_grad_norm=0.5
    )
    args = method_config(spec, tmp_path, use_cpu=True)
    config = deepspeed_config(stage)
    assert _autos(config)  # the batch, clipping and precision come from the spec
    filled = _FilledDeepSpeedConfig(config)
    filled.trainer_config_process(args)
    model = SimpleNamespace(config=SimpleNamespace(hidden_size=64))
    filled.trainer_config_finalize(args, model, num_training_steps=10)
    assert _autos(filled.config) == []
    assert filled.mismatches == []
    assert filled.get_value("train_micro_batch_size_per_gpu") == 2
    assert filled.get_value("gradient_accumulation_steps") == 3
    assert filled.get_value("train_batch_size") == 2 * 3 * args.world_size
    assert filled.get_value("gradient_clipping") == 0.5
    assert filled.get_value("bf16.enabled") is False  # CPU: fp32
    assert filled.get_value("zero_optimization.reduce_bucket_size") == 64 * 64
    assert filled.is_zero3() is (stage == 3)


def test_zero_stages() -> None:
    two, three = deepspeed_config(2)["zero_optimization"], deepspeed_config(3)["zero_optimization"]
    assert (two["stage"], three["stage"]) == (2, 3)
    assert not any(key.startswith("stage3_") for key in two)
    assert three["stage3_gather_16bit_weights_on_model_save"] is True  # consolidated saves
    assert "optimizer" not in deepspeed_config(3) and "scheduler" not in deepspeed_config(3)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_launch_plan_of_each_strategy(strategy: str) -> None:
    spec = TrainingSpec(num_devices=4, distributed_strategy=strategy)
    plan = launch_plan(spec, "nccl")
    assert json.loads(json.dumps(plan)) == plan  # kept as launch.json
    assert (plan["processes"], plan["strategy"]) == (4, strategy)
    config = plan["config"]
    assert config["backend"] == "nccl"
    assert config["launcher"][:2] == ["-m", "torch.distributed.run"]
    assert "--nproc-per-node=4" in config["launcher"]
    trainer = config["trainer_arguments"]
    assert trainer["ddp_backend"] == "nccl"
    if strategy == "ddp":
        assert set(trainer) == DDP_KEYS
    elif strategy == "fsdp":
        assert set(trainer) == DDP_KEYS | {"fsdp", "fsdp_config", "activation_checkpointing"}
    else:
        assert set(trainer) == DDP_KEYS | {"deepspeed"}
        assert trainer["deepspeed"] == DEEPSPEED_FILE
        stage = config["deepspeed"]["zero_optimization"]["stage"]
        assert stage == {"deepspeed_zero2": 2, "deepspeed_zero3": 3}[strategy]
    assert ("deepspeed" in config) is strategy.startswith("deepspeed")


def test_one_device_has_no_strategy() -> None:
    assert launch_plan(TrainingSpec(), "gloo") == {"processes": 1, "strategy": None, "config": None}


def test_the_deepspeed_config_reaches_the_trainer_as_a_file(tmp_path: Path) -> None:
    write_launch(tmp_path, launch_plan(_spec("deepspeed_zero3"), "nccl"))
    arguments = trainer_arguments(tmp_path)
    assert arguments["deepspeed"] == str(tmp_path / DEEPSPEED_FILE)
    assert json.loads(Path(arguments["deepspeed"]).read_text()) == deepspeed_config(3)


@pytest.mark.parametrize(
    ("adapter", "hyperparameters"),
    [
        ("lora", {"distributed_strategy": "fsdp"}),  # one device: nothing to shard
        ("qlora", {"distributed_strategy": "fsdp", "num_devices": 2}),
    ],
)
def test_the_spec_refuses_fsdp_it_cannot_run(adapter: str, hyperparameters: dict) -> None:
    with pytest.raises(JobRequestError) as refused:
        build_spec("sft", adapter, hyperparameters)
    locs = [error["loc"] for error in refused.value.errors]
    assert ["hyperparameters", "distributed_strategy"] in locs
