"""A trained agent loaded from a run folder: `rollax.load_agent(path).predict(obs)`.

The policy is rebuilt from the run's `config.json` and filled with one seed's params, from its
best-evaluation checkpoint (`seed_<k>/checkpoints/best`) or the run's newest training
checkpoint (`checkpoints/<step>`). Nothing is trained or compiled beyond the policy itself.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rollax.envs.gymnasium_ids import GYMNASIUM_PREFIX, check_gymnasium_id
from rollax.envs.hooks import env_hooks
from rollax.logging.checkpoint import load_checkpoint
from rollax.logging.run_callbacks import CHECKPOINT_FORMAT
from rollax.networks.normalization import SAVED_VARIABLES
from rollax.rollout.collector import act, env_actions
from rollax.run.experiment import Experiment
from rollax.run.learner import build_model
from rollax.run.plan import Plan, make_plan
from rollax.run.run_folder import find_run, read_experiment

CHECKPOINTS = ("best", "last")
HOST_ONLY_KWARGS = ("autoreset_mode", "vectorization_mode")  # HostCollector's, not the env's
_SEED_DIR = re.compile(r"^seed_(\d+)$")


class Agent:
    """One seed's trained policy with the env it was trained on.

    `model`: the policy module (`model(obs)` gives its distribution); `env`/`env_params`: the
    run's env from its config (for `gymnasium:<id>` runs a `gymnasium.Env` and None);
    `experiment`, `seed`, `step` (env steps trained when the checkpoint was written) and
    `checkpoint` ("best" or "last") say where it comes from.
    """

    def __init__(self, experiment: Experiment, plan: Plan, model: nnx.Module, seed: int,
                 step: int, checkpoint: str):
        self.experiment, self.model = experiment, model
        self.seed, self.step, self.checkpoint = seed, step, checkpoint
        self.observation_space, self.action_space = plan.observation_space, plan.action_space
        self.source = plan.source
        if plan.host_env_id is None:
            self.env, self.env_params = plan.env, plan.env_params
            self._action_start = 0
        else:
            gym_id = check_gymnasium_id(plan.host_env_id.removeprefix(GYMNASIUM_PREFIX))
            kwargs = {k: v for k, v in experiment.env.kwargs.items() if k not in HOST_ONLY_KWARGS}
            self.env, self.env_params = gymnasium.make(gym_id, **kwargs), None
            self._action_start = int(getattr(self.env.action_space, "start", 0))
        self._graphdef, self._state = nnx.split(model)
        self._key = jax.random.key(seed)

    def act(self, observations: Any, key: jax.Array | None = None, deterministic: bool = True
            ) -> jax.Array:
        """Env actions for a batch of observations `[B, *obs_shape]`: the policy's mode, or a
        sample with `key` when not `deterministic`; continuous actions clipped to the Box."""
        checked_flag("deterministic", deterministic)
        if not deterministic and key is None:
            raise ValueError("act(deterministic=False) samples actions: pass key=jax.random.key(...)")
        observations = jnp.asarray(checked_observations(observations, "observations"),
                                   self.observation_space.dtype)
        if observations.shape[1:] != tuple(self.observation_space.shape):
            raise ValueError(f"observations of shape {observations.shape}: expected a batch "
                             f"[B, {', '.join(map(str, self.observation_space.shape))}]")
        key = jax.random.key(0) if key is None else checked_key(key)
        actions = _act(self._graphdef, self._state, observations, key, deterministic,
                       self.action_space)
        return actions + self._action_start if self._action_start else actions

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, None]:
        """Stable-Baselines3's `predict`: one observation gives one action, a batch
        `[B, *obs_shape]` a batch; returns `(actions, None)` (no recurrent state, so `state`
        and `episode_start` are accepted for SB3's signature and unused). Samples, when not
        `deterministic`, come from a key chain that starts at the seed."""
        checked_flag("deterministic", deterministic)
        observation = checked_observations(observation, "observation")
        shape = tuple(self.observation_space.shape)
        single = observation.shape == shape
        if not single and observation.shape[1:] != shape:
            raise ValueError(f"observation of shape {observation.shape}: expected {shape} or a "
                             f"batch [B, {', '.join(map(str, shape))}]")
        key = None
        if not deterministic:
            self._key, key = jax.random.split(self._key)
        actions = np.asarray(self.act(observation[None] if single else observation, key,
                                      deterministic))
        return (actions[0] if single else actions), None


    def generate(self, prompts: list[str], greedy: bool = True, key: jax.Array | None = None,
                 temperature: float = 1.0, top_k: int = 0, transcript: bool = False) -> list:
        """The answers the policy writes for `prompts` (without the prompt and its end mark;
        with a tool, what it wrote after the tool's last answer), for agents whose batch source
        writes text: greedy, or sampled (with `key`, else from a key chain that starts at the
        seed). With `transcript`, each episode's turns `[{"role": "policy" | "tool", "text"}]`."""
        checked_flag("greedy", greedy)
        checked_flag("transcript", transcript)
        if self.source is None:
            raise ValueError(f"generate needs an agent whose batch source writes text; this one "
                             f"was trained on the Gymnasium env {self.experiment.env.id!r}")
        if key is None:
            self._key, key = jax.random.split(self._key)
        else:
            key = checked_key(key)
        return self.source.generate_texts(self.model, prompts, key, greedy, temperature, top_k,
                                          transcript)


    def sample_images(self, classes: Any = None, n: int | None = None, seed: int = 0,
                      greedy: bool = False) -> np.ndarray:
        """Pictures `[B, H, W]` in [0, 1] drawn by the policy of a run whose env makes pictures: one per class in
        `classes` (a list of ints), or `n` with the env's own conditions (drawn as at reset);
        neither: one per class. `greedy`: the policy's mode instead of a sample."""
        checked_flag("greedy", greedy)
        if classes is not None and n is not None:
            raise ValueError("give classes or n, not both")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
            raise ValueError(f"seed must be an int, got {seed!r}")
        tasks = None
        if n is not None:
            if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
                raise ValueError(f"n={n!r} must be a positive int")
        else:
            tasks = self._classes(classes)
        if self.source is None:
            raise ValueError("sample_images needs a run whose env makes pictures; this one was trained on the "
                             f"Gymnasium env {self.experiment.env.id!r}")
        images = self.source.sample_images(self.model, tasks, n or 0, jax.random.key(seed), greedy)
        return np.asarray(images, np.float32)

    def _classes(self, classes: Any) -> list[int]:
        hooks = env_hooks(self.env)
        count = hooks.num_tasks(self.env_params)
        if classes is None:
            if count < 2:
                raise ValueError(f"{self.experiment.env.id} is unconditioned: ask for n samples")
            return list(range(count))
        if isinstance(classes, (int, np.integer)) or not all(
                isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in classes):
            raise ValueError(f"classes must be a list of ints, got {classes!r}")
        if not classes:
            raise ValueError("classes is empty: ask for at least one class")
        if outside := [int(c) for c in classes if not 0 <= c < count]:
            raise ValueError(f"class {outside[0]} is out of range: {self.experiment.env.id} has "
                             f"classes 0 to {count - 1}")
        return [int(c) for c in classes]


def checked_observations(observations: Any, name: str) -> Any:
    """`observations` as a NumPy array of real, finite numbers with at least one row;
    ValueError naming `name` and what is wrong. Traced values (`act` under `jax.jit`) are
    checked for their dtype and shape alone."""
    traced = isinstance(observations, jax.core.Tracer)
    try:
        array = observations if traced else np.asarray(observations)
    except (TypeError, ValueError):
        raise ValueError(f"{name} is not an array of numbers") from None
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_) or \
            np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if array.ndim and array.shape[0] == 0 or array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}): nothing to act on")
    if traced:
        return array
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
        raise ValueError(f"{name} holds {array[where].item()} at index {where}: observations "
                         "must be finite")
    return array


def checked_flag(name: str, value: Any) -> None:
    """A ValueError naming `name` unless `value` is a boolean (a string such as 'no' is truthy)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")


def checked_key(key: Any) -> jax.Array:
    """A JAX PRNG key (typed, `jax.random.key`, or raw, `jax.random.PRNGKey`); ValueError
    otherwise."""
    if isinstance(key, jax.Array) and (jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ()
                                       or key.dtype == jnp.uint32 and key.shape == (2,)):
        return key
    raise ValueError(f"key must be a JAX PRNG key (jax.random.key(seed)), got "
                     f"{type(key).__name__} {getattr(key, 'dtype', '')}".rstrip())


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _act(graphdef, state, observations, key, deterministic, action_space):
    distribution = act(nnx.merge(graphdef, state), observations, action_space).distribution
    actions = distribution.mode() if deterministic else distribution.sample(key)
    return env_actions(actions, action_space)


def load_agent(run_dir: str | Path, seed: int | None = None, checkpoint: str = "best") -> Agent:
    """The policy of a saved run, ready to act.

    `run_dir`: a seed folder (`.../seed_<k>`), a run folder (then `seed` picks one of its
    seeds, default the first) or an experiment folder (its newest run). `checkpoint`: "best"
    (the params at the seed's best evaluation, `[logging] best_metric`) or "last" (the newest
    training checkpoint).
    """
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {CHECKPOINTS}, got {checkpoint!r}")
    if seed is not None and (not isinstance(seed, (int, np.integer)) or isinstance(seed, bool)):
        raise ValueError(f"seed must be an int (one of the run's seeds) or None, got {seed!r}")
    run_dir, seed = _run_and_seed(Path(run_dir), seed)
    experiment = read_experiment(run_dir)
    if seed is None:
        seed = experiment.seed_list[0]
    elif seed not in experiment.seed_list:
        raise ValueError(f"seed={seed} is not a seed of {run_dir}; its seeds: {experiment.seed_list}")
    plan = make_plan(experiment)
    # the params' structure; the key is irrelevant, every value is overwritten
    model = build_model(experiment.agent, plan, jax.random.key(0))
    params = nnx.state(model, SAVED_VARIABLES)  # parameters and observation statistics
    if checkpoint == "best":
        params, step = _load_best(run_dir / f"seed_{seed}" / "checkpoints" / "best", params)
    else:
        params, step = _load_last(run_dir / "checkpoints", params, experiment.seed_list.index(seed))
    nnx.update(model, params)
    return Agent(experiment, plan, model, int(seed), step, checkpoint)


def _run_and_seed(path: Path, seed: int | None) -> tuple[Path, int | None]:
    """The run folder and the seed a seed folder names (it must agree with `seed`)."""
    if not path.exists():
        raise FileNotFoundError(f"no run folder at {path}")
    match = _SEED_DIR.match(path.name)
    if match is None:
        return find_run(path), seed
    if seed is not None and seed != int(match[1]):
        raise ValueError(f"seed={seed} disagrees with the seed folder {path}")
    return path.parent, int(match[1])


def _load_best(best_dir: Path, params: nnx.State) -> tuple[nnx.State, int]:
    if not best_dir.is_dir():
        raise FileNotFoundError(f"{best_dir} does not exist: this run saved no best-model "
                                "checkpoint ([logging] checkpoint = false, or no evaluation); "
                                "load checkpoint='last' instead")
    loaded, metadata = load_checkpoint(best_dir, target=params)
    return loaded, int(metadata["env_steps"])


def _load_last(directory: Path, params: nnx.State, seed_index: int) -> tuple[nnx.State, int]:
    """One seed's params from the run's newest stacked training state (read without a
    target: building the whole training state would compile the run's init)."""
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} does not exist: this run saved no training "
                                "checkpoint ([logging] checkpoint = false)")
    state, metadata = load_checkpoint(directory)
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{directory} was written by an earlier rollax (training-state format "
                         f"{metadata.get('format', 1)}, this version reads {CHECKPOINT_FORMAT}); "
                         "train a new run")
    model_state = state["train"]["model_optimizer"]["0"]  # the (model, optimizer) tuple's model
    seed_params = jax.tree.map(lambda x: np.asarray(x)[seed_index], model_state)
    nnx.replace_by_pure_dict(params, _only(seed_params, nnx.to_pure_dict(params)))
    return params, int(metadata["env_steps"])


def _only(tree: dict, like: dict) -> dict:
    """The entries of `tree` at the paths of `like` (the model's params among its variables);
    orbax hands integer keys (list indices) back as strings."""
    picked = {k: tree[k if k in tree else str(k)] for k in like}
    return {k: _only(picked[k], v) if isinstance(v, dict) else picked[k] for k, v in like.items()}
