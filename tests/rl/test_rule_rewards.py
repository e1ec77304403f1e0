"""GRPO's rule rewards and the RL spec rules, without training."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.spec import RewardRule, TrainingSpec
from worker.training.mapping import method_config, reward_weights
from worker.training.rl import exact_reward, length_reward, regex_reward

ANSWERS = [
    [{"role": "assistant", "content": " 42 "}],
    "forty-two",
    [{"role": "assistant", "content": "4"}],
]


def test_exact_match_ignores_case_and_spacing() -> None:
    reward = exact_reward(RewardRule(type="exact"))
    assert reward(ANSWERS, reference=["42", "Forty-Two", "5"]) == [1.0, 1.0, 0.0]


def test_regex_and_length() -> None:
    assert regex_reward(RewardRule(type="regex", pattern=r"^\s*\d+\s*$"))(ANSWERS) == [
        1.0,
        0.0,
        1.0,
    ]
    length = length_reward(RewardRule(type="length", target=4))(ANSWERS)
    assert length == pytest.approx([1.0, 0.0, 0.25])


def test_rules_are_validated() -> None:
    with pytest.raises(ValidationError, match="needs a pattern"):
        RewardRule(type="regex")
    with pytest.raises(ValidationError, match="does not compile"):
        RewardRule(type="regex", pattern="(")
    with pytest.raises(ValidationError, match="needs a target"):
        RewardRule(type="length")


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"method": "grpo"}, "rule rewards or a reward model"),
        ({"method": "ppo"}, "needs a reward model"),
        (
            {"method": "grpo", "reward_functions": '[{"type": "exact"}]', "num_generations": 3},
            "multiple of num_generations",
        ),
        ({"method": "ppo", "reward_model": 1, "adapter": "prefix"}, "PPO trains"),
        ({"method": "grpo", "reward_model": 1, "reward_checkpoint_id": 2}, "not both"),
    ],
)
def test_rl_specs_that_cannot_work_are_refused(spec: dict, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        TrainingSpec(**spec)


def test_grpo_and_ppo_configs(tmp_path) -> None:
    grpo = TrainingSpec(
        method="grpo",
        reward_functions='[{"type": "exact", "weight": 2}, {"type": "length", "target": 9}]',
        reward_model=1,
        num_generations=2,
        per_device_train_batch_size=4,
        beta=0.04,
    )
    assert reward_weights(grpo) == [2.0, 1.0, 1.0]
    config = method_config(grpo, tmp_path, use_cpu=True)
    assert (config.num_generations, config.beta, config.reward_weights) == (
        2,
        0.04,
        [2.0, 1.0, 1.0],
    )
    ppo = TrainingSpec(method="ppo", reward_checkpoint_id=3, max_steps=5, kl_coef=0.2)
    config = method_config(ppo, tmp_path, use_cpu=True)
    assert (config.kl_coef, config.total_episodes, config.response_length) == (0.2, 5 * 4, 128)
