"""rollax: reinforcement-learning experiments on JAX, Flax NNX and Optax.

Only the env registry imports eagerly (no jax, no gymnax); every other public name loads its
module on first use, so `import rollax` and the light CLI commands (`rollax --help`, `rollax
envs`) start in a fraction of a second.
"""

from rollax.envs.gymnax_envs import defer_gymnax_init

# before any rollax module imports a gymnax submodule (see envs/gymnax_envs.py)
defer_gymnax_init()

# Registers every env id with Gymnasium (`gymnasium.make("rollax/CartPole-v1")`), and the
# domains' env ids, policy kinds and batch sources; imports no jax.
from rollax import diffusion, generative, tokens  # noqa: F401
from rollax.envs import make, register, registered_ids
from rollax.lazy import lazy_exports

# name -> module that defines it, imported when first accessed
_LAZY = {
    **{name: "rollax.networks.distributions" for name in (
        "Categorical", "DiagGaussian", "Distribution", "GaussianParams")},
    "PolicyOutput": "rollax.networks.policy",
    "build_policy": "rollax.networks.mlp",
    **{name: "rollax.rl" for name in (
        "ClippedReward", "CompositeReward", "ConstantReward", "DPOConfig", "DPOTrainer",
        "GRPOConfig", "GRPOTrainer", "PPOConfig", "PPOTrainer", "REINFORCEConfig",
        "REINFORCETrainer", "RewardFunction", "RLOOConfig", "RLOOTrainer", "ScaledReward",
        "ThresholdReward", "utils")},
    **{name: "rollax.rollout.collector" for name in (
        "RolloutState", "collect", "evaluate", "init_rollout")},
    "Trajectory": "rollax.rollout.trajectory",
    "train": "rollax.api",
    "sweep": "rollax.api",
    "SweepResult": "rollax.sweeps",
    "tune": "rollax.api",
    "TuneResult": "rollax.tuning",
    "TuneSettings": "rollax.tuning",
    "Agent": "rollax.run.agent",
    "load_agent": "rollax.run.agent",
    "record_video": "rollax.run.video",
    "initialize_distributed": "rollax.run.parallel",
    "TrainResult": "rollax.run",
    "TrainingDiverged": "rollax.run",
    "Experiment": "rollax.run",
    "load_experiment": "rollax.presets",
    "HostCollector": "rollax.rollout.host_collector",
    "LatentEnv": "rollax.generative.latent_env",
    "from_model": "rollax.generative.latent_env",
    "load_pretrained": "rollax.generative.pretrained",
    "pretrain": "rollax.generative.pretrained",
    **{name: "rollax.logging" for name in (
        "Logger", "Callback", "CallbackList", "CheckpointConfig", "EarlyStopping", "JAXProfiler",
        "ModelCheckpoint", "ProfilingConfig", "ProgressBarCallback", "TensorBoardLoggerCallback",
        "WandbLoggerCallback", "WandbLoggerConfig")},
}

__getattr__, __dir__ = lazy_exports(globals(), _LAZY)


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
    "PolicyOutput",
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
    "TrainResult",
    "TrainingDiverged",
    "Trajectory",
    "TuneResult",
    "TuneSettings",
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
    "tune",
    "utils",
]
