"""rollax: reinforcement-learning experiments on JAX, Flax NNX and Optax.

The algorithm core, environments and collectors import eagerly; the training loop, logging
(tensorboardX, orbax) and generative models load on first use, so `import rollax` stays fast.
"""

import importlib

from rollax.envs import make, register, registered_ids
from rollax.networks import (
    Categorical,
    DiagGaussian,
    Distribution,
    GaussianParams,
    TokenCategorical,
    build_policy,
)
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
    RLOOConfig,
    RLOOTrainer,
    ScaledReward,
    ThresholdReward,
    utils,
)
from rollax.rollout import RolloutState, Trajectory, collect, evaluate, init_rollout

# name -> module that defines it, imported when first accessed
_LAZY = {
    "train": "rollax.run",
    "TrainResult": "rollax.run",
    "TrainingDiverged": "rollax.run",
    "Experiment": "rollax.run",
    "load_experiment": "rollax.presets",
    "HostCollector": "rollax.rollout.host_collector",
    "LatentEnv": "rollax.envs.latent",
    "from_model": "rollax.envs.latent",
    "load_pretrained": "rollax.generative",
    "pretrain": "rollax.generative",
    **{name: "rollax.logging" for name in (
        "Logger", "Callback", "CallbackList", "CheckpointConfig", "EarlyStopping", "JAXProfiler",
        "ModelCheckpoint", "ProfilingConfig", "ProgressBarCallback", "TensorBoardLoggerCallback",
        "WandbLoggerCallback", "WandbLoggerConfig")},
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rollax' has no attribute {name!r}")


__all__ = [  # the lazy names too, so `from rollax import *` and docs see them
    "Callback",
    "CallbackList",
    "Categorical",
    "CheckpointConfig",
    "ClippedReward",
    "CompositeReward",
    "ConstantReward",
    "DPOConfig",
    "DPOTrainer",
    "DiagGaussian",
    "Distribution",
    "EarlyStopping",
    "Experiment",
    "GRPOConfig",
    "GRPOTrainer",
    "GaussianParams",
    "HostCollector",
    "JAXProfiler",
    "LatentEnv",
    "Logger",
    "ModelCheckpoint",
    "PPOConfig",
    "PPOTrainer",
    "ProfilingConfig",
    "ProgressBarCallback",
    "REINFORCEConfig",
    "REINFORCETrainer",
    "RLOOConfig",
    "RLOOTrainer",
    "RewardFunction",
    "RolloutState",
    "ScaledReward",
    "TensorBoardLoggerCallback",
    "ThresholdReward",
    "TokenCategorical",
    "TrainResult",
    "TrainingDiverged",
    "Trajectory",
    "WandbLoggerCallback",
    "WandbLoggerConfig",
    "build_policy",
    "collect",
    "evaluate",
    "from_model",
    "init_rollout",
    "load_experiment",
    "load_pretrained",
    "make",
    "pretrain",
    "register",
    "registered_ids",
    "train",
    "utils",
]
