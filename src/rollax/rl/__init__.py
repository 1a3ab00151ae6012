"""The algorithms: configs, trainers, reward functions and the shared math in `utils`."""

from rollax.rl.configs import DPOConfig, GRPOConfig, PPOConfig, REINFORCEConfig, RLOOConfig
from rollax.rl.dpo import DPOTrainer
from rollax.rl.grpo import GRPOTrainer
from rollax.rl.ppo import PPOTrainer
from rollax.rl.reinforce import REINFORCETrainer
from rollax.rl.rewards import (
    ClippedReward,
    CompositeReward,
    ConstantReward,
    RewardFunction,
    ScaledReward,
    ThresholdReward,
)
from rollax.rl.rloo import RLOOTrainer

__all__ = [
    "ClippedReward", "CompositeReward", "ConstantReward", "DPOConfig", "DPOTrainer", "GRPOConfig",
    "GRPOTrainer", "PPOConfig", "PPOTrainer", "REINFORCEConfig", "REINFORCETrainer",
    "RLOOConfig", "RLOOTrainer", "RewardFunction", "ScaledReward", "ThresholdReward",
]
