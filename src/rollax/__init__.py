"""rollax: reinforcement-learning experiments on JAX, Flax NNX and Optax.

Only the env registry imports eagerly (no jax, no gymnax); every other public name loads its
module on first use, so `import rollax` and the light CLI commands (`rollax --help`, `rollax
envs`) start in a fraction of a second.
"""

import importlib

from rollax.envs.gymnax_envs import defer_gymnax_init

# before any rollax module imports a gymnax submodule (see envs/gymnax_envs.py)
defer_gymnax_init()

# Registers every env id with Gymnasium (`gymnasium.make("rollax/CartPole-v1")`); imports no jax.
from rollax.envs import make, register, registered_ids

# name -> module that defines it, imported when first accessed
_LAZY = {
    **{name: "rollax.networks" for name in (
        "Categorical", "DiagGaussian", "Distribution", "GaussianParams", "TokenCategorical",
        "build_policy")},
    **{name: "rollax.rl" for name in (
        "ClippedReward", "CompositeReward", "ConstantReward", "DPOConfig", "DPOTrainer",
        "GRPOConfig", "GRPOTrainer", "PPOConfig", "PPOTrainer", "REINFORCEConfig",
        "REINFORCETrainer", "RewardFunction", "RLOOConfig", "RLOOTrainer", "ScaledReward",
        "ThresholdReward", "utils")},
    **{name: "rollax.rollout" for name in (
        "RolloutState", "Trajectory", "collect", "evaluate", "init_rollout")},
    "train": "rollax.api",
    "sweep": "rollax.api",
    "SweepResult": "rollax.sweeps",
    "Agent": "rollax.run.agent",
    "load_agent": "rollax.run.agent",
    "record_video": "rollax.run.video",
    "initialize_distributed": "rollax.run.parallel",
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
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'rollax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [  # the lazy names too, so `from rollax import *` and docs see them
    "Agent",
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
    "SweepResult",
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
    "initialize_distributed",
    "load_agent",
    "load_experiment",
    "load_pretrained",
    "make",
    "pretrain",
    "record_video",
    "register",
    "registered_ids",
    "sweep",
    "train",
    "utils",
]
