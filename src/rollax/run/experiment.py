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

from rollax.checks import check_choice, check_int, check_number, check_types
from rollax.logging.run_dir import LABEL, MAX_LABEL, is_folder_name
from rollax.networks.kinds import network_config
from rollax.networks.mlp import MLPConfig
from rollax.rl.algorithm import Algorithm
from rollax.rl.registry import get_algorithm

# Sizes past these would not fit a machine or would spin for hours before failing; each bound
# is named in its error message.
MAX_SEEDS = 256  # each seed writes its own folder and keeps its log files open
MAX_STEPS = 2**31 - 1  # env steps per seed: JAX counts updates and steps in 32-bit integers
MAX_TRANSITIONS = 2**25  # num_envs * num_steps * seeds, held in memory at once each iteration
MAX_EVAL_EPISODES = 2**16  # eval.episodes * seeds, run side by side
MAX_DEVICES = 2**16  # devices one run's mesh spans
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """Which environment: a registered id (or `gymnasium:<id>`), its params and kwargs."""

    id: str
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    solved_threshold: float | None = None
    description: str = ""
    # SB3's VecNormalize: observations by their running mean and std (the policy holds the
    # statistics), rewards by the running std of the discounted return; each then clipped
    normalize_observations: bool = False
    normalize_rewards: bool = False
    clip_observations: float = 10.0
    clip_rewards: float = 10.0

    def __post_init__(self):
        check_types(self, "env")
        if not self.id:
            raise ValueError("env.id must name an environment, got ''")
        check_number("env.clip_observations", self.clip_observations, 0.0, low_open=True)
        check_number("env.clip_rewards", self.clip_rewards, 0.0, low_open=True)


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    name: str = "adam"
    learning_rate: float = 3e-4
    eps: float = 1e-5
    anneal_lr: bool = False  # decay the rate linearly to 0 over the run
    warmup_steps: int = 0  # env steps over which the rate first rises linearly from 0

    def __post_init__(self):
        check_types(self, "agent.optimizer")
        check_choice("agent.optimizer.name", self.name, OPTIMIZERS)
        check_number("agent.optimizer.learning_rate", self.learning_rate, 0.0, low_open=True)
        check_number("agent.optimizer.eps", self.eps, 0.0)
        check_int("agent.optimizer.warmup_steps", self.warmup_steps, 0)


@dataclasses.dataclass(frozen=True)
class AgentSpec:
    """An algorithm (a registered name) with its validated config, its network (the typed
    section of its policy kind, `rollax.networks.kinds`) and its optimizer."""

    algorithm: str
    config: Any
    network: Any = dataclasses.field(default_factory=MLPConfig)
    optimizer: OptimizerSpec = OptimizerSpec()
    description: str = ""

    def __post_init__(self):
        check_types(self, "agent")
        config_class = _algorithm(self.algorithm).config_class
        if not isinstance(self.config, config_class):
            raise ValueError(f"agent.config must be a {config_class.__name__}, got {self.config!r}")
        object.__setattr__(self, "network", network_config(self.network))


@dataclasses.dataclass(frozen=True)
class BudgetSpec:
    total_steps: int
    num_envs: int = 8
    num_steps: int = 128
    iterations_per_chunk: int = 0  # 0: about a thirtieth of the run per jitted chunk

    def __post_init__(self):
        why = " (env steps per seed; JAX counts them in 32-bit integers)"
        check_int("budget.total_steps", self.total_steps, 1, MAX_STEPS, why)
        check_int("budget.num_envs", self.num_envs, 1, MAX_TRANSITIONS)
        check_int("budget.num_steps", self.num_steps, 1, MAX_TRANSITIONS)
        check_int("budget.iterations_per_chunk", self.iterations_per_chunk, 0, MAX_STEPS)
        per_iteration = self.num_envs * self.num_steps
        if self.total_steps < per_iteration:
            raise ValueError(f"budget.total_steps={self.total_steps} is smaller than one iteration "
                             f"(num_envs * num_steps = {per_iteration})")


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    every_steps: int = 0  # 0: only at the end
    episodes: int = 10
    # evaluation episodes end here, or at the env's own limit if that comes first (0: at the
    # env's own limit, capped at rollax.rollout.host_collector.DEFAULT_EVAL_EPISODE_STEPS);
    # an episode cut by the cap counts its return so far, with a warning naming the env
    max_episode_steps: int = 0

    def __post_init__(self):
        check_int("eval.every_steps", self.every_steps, 0, MAX_STEPS)
        check_int("eval.episodes", self.episodes, 1, MAX_EVAL_EPISODES)
        check_int("eval.max_episode_steps", self.max_episode_steps, 0, MAX_STEPS)


@dataclasses.dataclass(frozen=True)
class ParallelSpec:
    """Where a run's work goes: `devices` JAX devices (0: all there are), of which
    `seed_devices` split the seeds and the rest the env batch (see `rollax.run.parallel`)."""

    devices: int = 1
    seed_devices: int = 1

    def __post_init__(self):
        check_int("parallel.devices", self.devices, 0, MAX_DEVICES)
        check_int("parallel.seed_devices", self.seed_devices, 1, MAX_DEVICES)
        if self.devices and self.devices % self.seed_devices:
            raise ValueError(f"parallel.seed_devices={self.seed_devices} must divide "
                             f"parallel.devices={self.devices} (the mesh is seeds x data)")


@dataclasses.dataclass(frozen=True)
class LoggingSpec:
    """Which callbacks the loop attaches (see `rollax.run.callbacks.default_callbacks`)."""

    root: str = "runs"
    run_name: str = ""  # run folder <timestamp>_<run_name>; load_experiment: the --set overrides
    enabled: bool = True  # the run directory, metrics (TensorBoard + JSONL), results
    checkpoint: bool = True  # resume checkpoints and per-seed best models
    best_metric: str = "eval/mean_reward"  # what ranks the best models: an eval/<name> metric
    best_mode: str = "max"
    checkpoint_every_seconds: float = 60.0
    plot: bool = True
    images: bool = True  # the `samples` tag: the batch source's pictures or texts of samples
    progress: bool = True
    early_stopping: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # EarlyStopping kwargs
    profiler: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # ProfilingConfig kwargs
    wandb: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # WandbLoggerConfig kwargs

    def __post_init__(self):
        check_types(self, "logging")
        if not self.root:
            raise ValueError("logging.root must name a folder, got ''")
        if not LABEL.fullmatch(self.run_name) or len(self.run_name) > MAX_LABEL:
            raise ValueError(f"logging.run_name={self.run_name!r} must be at most {MAX_LABEL} "
                             "letters, digits or '._+=,-' (it ends the run folder's name)")
        if not self.best_metric.startswith("eval/"):
            raise ValueError(f"logging.best_metric={self.best_metric!r} must name an evaluation "
                             "metric, 'eval/mean_reward' or an env's 'eval/<name>'")
        check_choice("logging.best_mode", self.best_mode, ("max", "min"))
        check_number("logging.checkpoint_every_seconds", self.checkpoint_every_seconds, 0.0,
                     low_open=True)


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    env: EnvSpec
    agent: AgentSpec
    budget: BudgetSpec
    eval: EvalSpec = EvalSpec()
    logging: LoggingSpec = LoggingSpec()
    parallel: ParallelSpec = ParallelSpec()
    seeds: int = 1  # how many seeds train together
    seed: int = 0  # the first one
    description: str = ""
    tags: tuple[str, ...] = ()
    # what `rollax tune` searches when no --param is given: {"agent.config.clip_param":
    # "float:0.1:0.3", ...} (the specs are checked by rollax.tuning when a search starts)
    search: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        check_types(self, "")
        object.__setattr__(self, "tags", tuple(self.tags))  # TOML/JSON lists
        for key, spec in self.search.items():
            if not isinstance(spec, str):
                raise ValueError(f"search.{key} must be a range such as 'log:1e-4:1e-2', got {spec!r}")
        if not is_folder_name(self.name):
            raise ValueError(f"name={self.name!r} must be a folder name: letters, digits and "
                             "'._+-', not starting with '.' and without '..'")
        check_int("seeds", self.seeds, 1, MAX_SEEDS, " per run (each writes its own folder); "
                  "run several commands for more")
        check_int("seed", self.seed, 0, 2**31 - self.seeds, " so that every seed of the run "
                  "is a 32-bit JAX key")
        transitions = self.budget.num_envs * self.budget.num_steps * self.seeds
        if transitions > MAX_TRANSITIONS:
            raise ValueError(f"budget.num_envs * budget.num_steps * seeds = {transitions} "
                             f"transitions per iteration would be held in memory at once; at "
                             f"most {MAX_TRANSITIONS}: lower num_envs, num_steps or seeds")
        if self.eval.episodes * self.seeds > MAX_EVAL_EPISODES:
            raise ValueError(f"eval.episodes * seeds = {self.eval.episodes * self.seeds} "
                             f"episodes run side by side; at most {MAX_EVAL_EPISODES}")

    @property
    def seed_list(self) -> list[int]:
        """The seeds a run trains: `seed, seed + 1, ..., seed + seeds - 1`."""
        return list(range(self.seed, self.seed + self.seeds))

    def replace(self, **sections: Any) -> Experiment:
        """A copy with whole sections replaced, or changed by a dict (`logging={"enabled": False}`)."""
        fields = {field.name: field for field in dataclasses.fields(self)}
        changes = {}
        for name, value in sections.items():
            if name not in fields:
                raise ValueError(f"Experiment has no field {name!r}; its fields: {sorted(fields)}")
            current = getattr(self, name)
            if isinstance(value, Mapping) and dataclasses.is_dataclass(current):
                known = {field.name for field in dataclasses.fields(current)}
                if unknown := sorted(set(value) - known, key=str):
                    raise ValueError(f"{name}.{unknown[0]} is not a field of {name}; its fields: "
                                     f"{sorted(known)}")
                value = dataclasses.replace(current, **value)
            elif dataclasses.is_dataclass(current) and not isinstance(value, type(current)):
                raise ValueError(f"{name} must be a {type(current).__name__} or a dict of its "
                                 f"fields, got {type(value).__name__}")
            changes[name] = value
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Experiment:
        """From the preset loader's dict or a run's `config.json`: every key and value checked,
        ValueError naming it (a downloaded run folder is data, never trusted)."""
        data = dict(_table(data, "experiment"))
        agent = dict(_table(data.get("agent"), "agent"))
        if not isinstance(agent.get("algorithm"), str):
            raise ValueError("agent.algorithm must be an algorithm name, got "
                             f"{agent.get('algorithm')!r}")
        config_class = _algorithm(agent["algorithm"]).config_class
        if not isinstance(agent.get("config", {}), config_class):
            agent["config"] = _build(config_class, agent.get("config", {}), "agent.config")
        return _build(cls, {**data, "agent": agent}, "")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (`config.json`, hyperparameters in TensorBoard)."""
        return dataclasses.asdict(self)


_SECTIONS = {"env": EnvSpec, "agent": AgentSpec, "optimizer": OptimizerSpec, "budget": BudgetSpec, "eval": EvalSpec,
             "logging": LoggingSpec, "parallel": ParallelSpec}


def _table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a table, got {value!r}")
    return value


def _algorithm(name: str) -> Algorithm:
    try:
        return get_algorithm(name)
    except ValueError as err:
        raise ValueError(f"agent.algorithm: {err}") from None


def _build(spec: type, data: Any, where: str) -> Any:
    """`spec(**data)` for a section read from a file, nested sections built too: unknown,
    missing and wrong keys are ValueErrors naming them, never TypeErrors."""
    fields = {f.name: f for f in dataclasses.fields(spec)}
    data = _table(data, where or "experiment")
    unknown = sorted(set(data) - set(fields))
    missing = [name for name, f in fields.items() if name not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if unknown:
        raise ValueError(f"{where or 'experiment'}: unknown {spec.__name__} key(s) {unknown}; "
                         f"valid keys: {sorted(fields)}")
    if missing:
        raise ValueError(f"{where or 'experiment'}: missing key(s) {missing}")
    values = {name: _build(_SECTIONS[name], value, f"{where}.{name}" if where else name)
              if name in _SECTIONS and not isinstance(value, _SECTIONS[name]) else value
              for name, value in data.items()}
    try:
        return spec(**values)
    except ValueError as err:  # algorithm configs name fields `PPOConfig.clip_param`
        raise ValueError(str(err).replace(f"{spec.__name__}.", f"{where}.", 1)) from None
