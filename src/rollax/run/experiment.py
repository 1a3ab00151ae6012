"""The typed experiment: a preset parsed and validated once into frozen dataclasses.

The preset loader (`rollax.presets`) turns TOML into a checked dict; `Experiment.from_dict`
turns that into these objects, and from there on each component receives the part it needs
(`experiment.budget`, `experiment.agent.network`, ...). `to_dict()` is what `config.json`
stores, so a run directory can be read back with `Experiment.from_dict`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from rollax.rl.registry import get_algorithm
from rollax.rl.spec import AlgorithmSpec


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """Which environment: a registered id (or `gymnasium:<id>`), its params and kwargs."""

    id: str
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    solved_threshold: float | None = None
    description: str = ""


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    shared_torso: bool = False
    log_std_init: float = 0.0


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    name: str = "adam"
    learning_rate: float = 3e-4
    eps: float = 1e-5
    anneal_lr: bool = False  # decay the rate linearly to 0 over the run


@dataclasses.dataclass(frozen=True)
class AgentSpec:
    """An algorithm (a registered name) with its validated config, network and optimizer."""

    algorithm: str
    config: Any
    network: NetworkSpec = NetworkSpec()
    optimizer: OptimizerSpec = OptimizerSpec()
    description: str = ""

    @property
    def spec(self) -> AlgorithmSpec:
        return get_algorithm(self.algorithm)


@dataclasses.dataclass(frozen=True)
class BudgetSpec:
    total_steps: int
    num_envs: int = 8
    num_steps: int = 128
    iterations_per_chunk: int = 0  # 0: about a tenth of the run per jitted chunk
    group_size: int = 4  # DPO's samples per prompt (GRPO/RLOO use their num_generations)


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    every_steps: int = 0  # 0: only at the end
    episodes: int = 10


@dataclasses.dataclass(frozen=True)
class LoggingSpec:
    """Which callbacks the loop attaches (see `rollax.run.callbacks.default_callbacks`)."""

    root: str = "runs"
    enabled: bool = True  # the run directory, metrics (TensorBoard + JSONL), results
    checkpoint: bool = True  # resume checkpoints and per-seed best models
    best_metric: str = "eval/mean_reward"  # what ranks the best models: an eval/<name> metric
    best_mode: str = "max"
    checkpoint_every_seconds: float = 60.0
    plot: bool = True
    images: bool = True
    progress: bool = True
    early_stopping: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # EarlyStopping kwargs
    profiler: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # ProfilingConfig kwargs
    wandb: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # WandbLoggerConfig kwargs


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    env: EnvSpec
    agent: AgentSpec
    budget: BudgetSpec
    eval: EvalSpec = EvalSpec()
    logging: LoggingSpec = LoggingSpec()
    seeds: int = 1  # how many seeds train together
    seed: int = 0  # the first one
    description: str = ""
    tags: tuple[str, ...] = ()

    @property
    def seed_list(self) -> list[int]:
        """The seeds a run trains: `seed, seed + 1, ..., seed + seeds - 1`."""
        return list(range(self.seed, self.seed + self.seeds))

    def replace(self, **sections: Any) -> Experiment:
        """A copy with whole sections replaced, or changed by a dict (`logging={"enabled": False}`)."""
        changes = {name: dataclasses.replace(getattr(self, name), **value)
                   if isinstance(value, Mapping) else value for name, value in sections.items()}
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Experiment:
        """From the preset loader's checked dict (or a run's `config.json`)."""
        agent = data["agent"]
        spec = get_algorithm(agent["algorithm"])
        config = agent["config"]
        if not isinstance(config, spec.config_class):
            config = spec.config_class(**config)
        network = dict(agent.get("network", {}))
        if "hidden_sizes" in network:
            network["hidden_sizes"] = tuple(int(size) for size in network["hidden_sizes"])
        return cls(
            name=data["name"], description=data.get("description", ""),
            tags=tuple(data.get("tags", ())), seeds=data["seeds"], seed=data.get("seed", 0),
            env=EnvSpec(**data["env"]),
            agent=AgentSpec(algorithm=agent["algorithm"], config=config,
                            network=NetworkSpec(**network),
                            optimizer=OptimizerSpec(**agent.get("optimizer", {})),
                            description=agent.get("description", "")),
            budget=BudgetSpec(**data["budget"]), eval=EvalSpec(**data.get("eval", {})),
            logging=LoggingSpec(**data.get("logging", {})),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (`config.json`, hyperparameters in TensorBoard)."""
        return dataclasses.asdict(self)
