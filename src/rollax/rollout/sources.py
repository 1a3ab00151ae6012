"""The batch-source protocol and the registry that picks a source for an env.

A batch source turns (env, policy, key) into the batches an algorithm learns from (`Steps` or
`Sequences`, its `batch_type`), and knows how to evaluate a policy on its env and what to show
of it. The plan picks one per run: the first of the env's registered sources whose batch type
the algorithm learns from (`batch_sources`). Every method is pure and runs inside the compiled
program, per seed; a domain adds its own source class and one `register_batch_sources` line.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any, ClassVar


@dataclasses.dataclass(frozen=True)
class SourceSettings:
    """What the plan tells a source: how much to sample per iteration, how to evaluate, and
    what the algorithm needs besides the samples."""

    num_envs: int  # envs stepped side by side, or samples per iteration
    num_steps: int = 1  # steps of each env per iteration (1 for sources of whole samples)
    group_size: int = 1  # samples of the same prompt, contiguous (1: independent samples)
    eval_episodes: int = 10
    eval_max_steps: int = 1000
    needs_values: bool = False  # the algorithm's critic: values of the sampled steps
    needs_reference: bool = False  # the frozen reference policy's log-probs of the samples
    shard: Callable[[Any], Any] = lambda tree: tree  # splits a batch over a mesh's data axis
    reward_scaling: Any = None  # a `RewardScaling` when rewards are normalised (`scales_rewards`)


FAULT = "fault: "


class BatchSource:
    """Base class: what the training loop calls on a source (the defaults show nothing)."""

    batch_type: ClassVar[type]
    scales_rewards: ClassVar[bool] = False  # whether it applies `settings.reward_scaling`

    def __init__(self, env: Any, env_params: Any, settings: SourceSettings):
        self.env, self.env_params, self.settings = env, env_params, settings

    def check(self, algorithm_name: str) -> None:
        """A ValueError naming what this env or budget lacks for the source (at plan time)."""

    def check_policy(self, model: Any) -> None:
        """A ValueError when the source cannot sample with `model` (an abstract one: shapes)."""

    def init(self, key: Any) -> Any:
        """The state carried from one iteration to the next (env states); `()` for none."""
        return ()

    def sample(self, policy: Any, reference: Any, state: Any, key: Any) -> tuple:
        """`(state, batch, episodes, metrics)`: the batch (`batch_type`), the finished
        episodes' `(returns, lengths, dones)` for the episode statistics, and scalar metrics of
        the samples themselves (logged as `train/<name>`). A metric named `FAULT` + a
        description counts samples that break the env's contract (user code inside the
        compiled chunk cannot raise): a nonzero count stops the run with that description."""
        raise NotImplementedError

    def fault_detail(self, description: str) -> str:
        """The message for a `FAULT` metric's description (a source whose host code knows
        more, e.g. which Python function failed on which prompt, says it here)."""
        return description

    def evaluate(self, policy: Any, key: Any) -> tuple[Any, dict]:
        """`(returns [eval_episodes], {name: scalar})` of the greedy policy."""
        raise NotImplementedError

    @property
    def shows_images(self) -> bool:
        """Whether `images` draws anything."""
        return False

    def images(self, policy: Any, key: Any) -> Any:
        """Pictures `[B, H, W]` in [0, 1] of the greedy policy's samples."""
        raise NotImplementedError(f"{type(self).__name__} draws no pictures")

    def sample_images(self, policy: Any, tasks: Any, count: int, key: Any, greedy: bool) -> Any:
        """Pictures `[B, H, W]` in [0, 1] of the policy's samples: one per task key in `tasks`
        (e.g. classes), or, with `tasks` None, `count` of them from the env's own resets."""
        raise ValueError(f"{type(self).__name__} draws no samples as pictures (sample_images is "
                         "for generative runs)")

    def film(self, policy: Any, key: Any) -> Any:
        """Pictures `[F, B, H, W]` of the policy's samples being made, one frame per stage (a
        denoising chain's steps), or None when its samples are made in one step."""
        return None

    @property
    def shows_texts(self) -> bool:
        """Whether `text_samples` shows anything."""
        return False

    def text_samples(self, policy: Any, key: Any) -> dict:
        """Arrays of the policy's samples that `format_texts` turns into text (on the host)."""
        raise NotImplementedError(f"{type(self).__name__} shows no texts")

    def format_texts(self, samples: dict) -> str:
        raise NotImplementedError(f"{type(self).__name__} shows no texts")

    def generate_texts(self, model: Any, prompts: list[str], key: Any, greedy: bool = True,
                       temperature: float = 1.0, top_k: int = 0, transcript: bool = False) -> list:
        """Completion texts of `prompts` (on the host, for a loaded agent)."""
        raise ValueError("generate is for agents trained on a token task (rollax/Tokens-*)")


def check_whole_samples(settings: SourceSettings, algorithm_name: str, what: str) -> None:
    """A source of whole samples (`what`: a generation, a completion) takes one per env and
    iteration, in groups that divide the envs; a ValueError naming the budget key otherwise."""
    if settings.num_steps != 1:
        raise ValueError(f"budget.num_steps={settings.num_steps}: {algorithm_name} here samples one "
                         f"whole {what} per env and iteration; set budget.num_steps = 1")
    if settings.num_envs % settings.group_size:
        raise ValueError(f"budget.num_envs={settings.num_envs} must be a multiple of the group size "
                         f"{settings.group_size}")


DEFAULT_SOURCES = ("rollax.rollout.collector:EnvRollouts", "rollax.rollout.groups:GenerationGroups")
# (env class, its sources), newest first; "module:Name" paths, imported when a plan asks
_REGISTERED: list[tuple[str, tuple[str, ...]]] = []


def register_batch_sources(env_class: str, *sources: str) -> None:
    """Envs of `env_class` ("module:Class") sample with `sources` ("module:Class" each), in
    order of preference; every other env with the default ones (env rollouts, one-step groups)."""
    _REGISTERED.insert(0, (env_class, sources))


def batch_sources(env: Any) -> tuple[type[BatchSource], ...]:
    """The source classes registered for `env`'s class (its nearest registered base)."""
    for env_class, sources in _REGISTERED:
        if isinstance(env, _load(env_class)):
            return tuple(_load(source) for source in sources)
    return tuple(_load(source) for source in DEFAULT_SOURCES)


def _load(path: str) -> Any:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)
