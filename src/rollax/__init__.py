"""rollax: reinforcement-learning experiments on JAX, Flax NNX and Optax."""

from rollax.envs import make, register, registered_ids
from rollax.rl import (
    ClippedReward,
    CompositeReward,
    ConstantReward,
    DPOConfig,
    DPOTrainer,
    GRPOConfig,
    GRPOTrainer,
    PPOConfig,
    PPOTrainer,
    REINFORCEConfig,
    REINFORCETrainer,
    RewardFunction,
    ScaledReward,
    ThresholdReward,
    utils,
)

__all__ = [
    "ClippedReward", "CompositeReward", "ConstantReward", "DPOConfig", "DPOTrainer", "GRPOConfig",
    "GRPOTrainer", "PPOConfig", "PPOTrainer", "REINFORCEConfig", "REINFORCETrainer",
    "RewardFunction", "ScaledReward", "ThresholdReward", "make", "register", "registered_ids", "utils",
]
