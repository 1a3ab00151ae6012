"""The algorithms (one file each: config, `Algorithm` object), their registry and the
documented trainers built from it, the reward functions and the shared math in `utils`."""

from rollax.rl.registry import public_names
from rollax.rl.rewards import (
    ClippedReward,
    CompositeReward,
    ConstantReward,
    RewardFunction,
    ScaledReward,
    ThresholdReward,
)

globals().update(public_names())  # DPOConfig, DPOTrainer, GRPOConfig, ..., RLOOTrainer

__all__ = [
    "ClippedReward", "CompositeReward", "ConstantReward", "DPOConfig", "DPOTrainer", "GRPOConfig",
    "GRPOTrainer", "PPOConfig", "PPOTrainer", "REINFORCEConfig", "REINFORCETrainer",
    "RLOOConfig", "RLOOTrainer", "RewardFunction", "ScaledReward", "ThresholdReward",
]
