"""Trainer configurations: the documented fields and defaults, plus validated extras.

Each extra's default keeps the documented behaviour (e.g. PPO does one epoch over one
minibatch unless asked for more). Invalid values raise `ValueError` naming the field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from rollax.checks import check_choice, check_int, check_number, check_types


def _check_range(config, name: str, low: float, high: float, *, low_open=False, high_open=False):
    check_number(f"{type(config).__name__}.{name}", getattr(config, name), low, high,
                 low_open=low_open, high_open=high_open)


def _check_choice(config, name: str, choices: tuple[str, ...]):
    check_choice(f"{type(config).__name__}.{name}", getattr(config, name), choices)


def _check_int(config, name: str, low: int = 1):
    check_int(f"{type(config).__name__}.{name}", getattr(config, name), low)


def _check_optional_positive(config, name: str):
    if getattr(config, name) is not None:
        _check_range(config, name, 0.0, INF, low_open=True)


INF = float("inf")


class _Config:
    def __post_init__(self):
        check_types(self, type(self).__name__)  # booleans are booleans, numbers finite
        self._check_values()

    def replace(self, **changes):
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class REINFORCEConfig(_Config):
    """REINFORCE: discounted returns, optional return normalisation, entropy bonus."""

    gamma: float = 0.99
    normalize_returns: bool = True
    entropy_coeff: float = 0.01
    max_grad_norm: float | None = None  # extra: global-norm gradient clip, off by default
    # extra: moving baseline subtracted from the returns, one per task key (batch `task_ids`)
    baseline: str = "none"  # none | ema
    ema_decay: float = 0.95  # b <- decay * b + (1 - decay) * mean(returns of the key)
    num_baseline_keys: int = 1  # task keys (e.g. condition classes), ids in [0, num_baseline_keys)
    # extra: KL anchor, reward - kl_coeff * (log pi - log pi_ref) per step (the batch then
    # needs `log_probs` and `ref_log_probs`; the training loop scores the initial policy's)
    kl_coeff: float = 0.0

    def _check_values(self):
        _check_range(self, "gamma", 0.0, 1.0)
        _check_range(self, "entropy_coeff", 0.0, INF)
        _check_optional_positive(self, "max_grad_norm")
        _check_range(self, "kl_coeff", 0.0, INF)
        _check_choice(self, "baseline", ("none", "ema"))
        _check_range(self, "ema_decay", 0.0, 1.0, high_open=True)
        _check_int(self, "num_baseline_keys")


@dataclass(frozen=True)
class PPOConfig(_Config):
    """PPO: GAE advantages, clipped surrogate, value loss, entropy bonus, grad clipping."""

    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_param: float = 0.2
    vf_coeff: float = 0.5
    entropy_coeff: float = 0.01
    max_grad_norm: float = 0.5
    # extras
    num_epochs: int = 1
    num_minibatches: int = 1
    normalize_advantages: bool = True
    clip_value_loss: bool = False  # clip V around the rollout's values by clip_param
    target_kl: float | None = None  # skip remaining updates once approx KL exceeds it
    kl_coeff: float = 0.0  # KL anchor to a reference policy, as REINFORCEConfig's

    def _check_values(self):
        _check_range(self, "gamma", 0.0, 1.0)
        _check_range(self, "gae_lambda", 0.0, 1.0)
        _check_range(self, "clip_param", 0.0, INF, low_open=True)
        _check_range(self, "vf_coeff", 0.0, INF)
        _check_range(self, "entropy_coeff", 0.0, INF)
        _check_range(self, "max_grad_norm", 0.0, INF, low_open=True)
        _check_int(self, "num_epochs")
        _check_int(self, "num_minibatches")
        _check_optional_positive(self, "target_kl")
        _check_range(self, "kl_coeff", 0.0, INF)


@dataclass(frozen=True)
class GRPOConfig(_Config):
    """GRPO: critic-free, advantages normalised within groups of generations per prompt."""

    num_generations: int = 4
    clip_param: float = 0.2
    beta: float = 0.01
    entropy_coeff: float = 0.01
    gamma: float = 0.99
    # extras
    epsilon_high: float | None = None  # DAPO clip-higher upper bound; None = clip_param
    loss_type: str = "grpo"  # token aggregation: grpo | bnpo | dr_grpo | dapo
    scale_rewards: str = "group"  # group | batch | none
    kl_estimator: str = "k3"
    mask_zero_std_groups: bool = False  # drop groups with equal rewards from the loss average
    max_grad_norm: float | None = None

    def _check_values(self):
        _check_int(self, "num_generations", 2)
        _check_range(self, "clip_param", 0.0, INF, low_open=True)
        _check_range(self, "beta", 0.0, INF)
        _check_range(self, "entropy_coeff", 0.0, INF)
        _check_range(self, "gamma", 0.0, 1.0)
        _check_optional_positive(self, "epsilon_high")
        _check_choice(self, "loss_type", ("grpo", "bnpo", "dr_grpo", "dapo"))
        _check_choice(self, "scale_rewards", ("group", "batch", "none"))
        _check_choice(self, "kl_estimator", ("k1", "k2", "k3"))
        _check_optional_positive(self, "max_grad_norm")


@dataclass(frozen=True)
class RLOOConfig(_Config):
    """RLOO: each generation's baseline is the mean reward of the other G-1 in its group.

    With `beta > 0` the reward is KL-shaped, r - beta * (log pi - log pi_ref) on sequence
    log-probs (k1, no gradient through it). The clipped ratio applies only when the batch
    carries the sampling policy's `log_probs`.
    """

    num_generations: int = 4
    beta: float = 0.0
    normalize_advantages: bool = False
    clip_param: float = 0.2
    entropy_coeff: float = 0.0
    max_grad_norm: float | None = None

    def _check_values(self):
        _check_int(self, "num_generations", 2)
        _check_range(self, "beta", 0.0, INF)
        _check_range(self, "clip_param", 0.0, INF, low_open=True)
        _check_range(self, "entropy_coeff", 0.0, INF)
        _check_optional_positive(self, "max_grad_norm")


@dataclass(frozen=True)
class DPOConfig(_Config):
    """DPO on preference pairs; `reference_free=True` is SimPO (no reference model)."""

    beta: float = 0.1
    label_smoothing: float = 0.0
    reference_free: bool = False
    # extras
    loss_type: str = "sigmoid"  # sigmoid | ipo | hinge
    simpo_gamma: float = 0.0  # SimPO target margin (reference-free mode)
    length_normalize: bool = True  # SimPO averages token log-probs (reference-free mode)
    # > 0: the loop's pairs carry Bradley-Terry soft labels, p(chosen preferred) =
    # sigmoid(reward gap / T); DPO's optimum is then finite, pi ~ pi_ref exp(r / (beta T)),
    # where hard labels (0) keep pushing towards one best sample
    preference_temperature: float = 0.0
    max_grad_norm: float | None = None

    def _check_values(self):
        _check_range(self, "beta", 0.0, INF, low_open=True)
        _check_range(self, "label_smoothing", 0.0, 0.5)
        _check_range(self, "preference_temperature", 0.0, INF)
        _check_choice(self, "loss_type", ("sigmoid", "ipo", "hinge"))
        if self.preference_temperature > 0 and self.loss_type != "sigmoid":
            raise ValueError(f"preference_temperature={self.preference_temperature} gives soft "
                             f"labels, which only loss_type='sigmoid' takes (got "
                             f"{self.loss_type!r})")
        _check_range(self, "simpo_gamma", 0.0, INF)
        _check_optional_positive(self, "max_grad_norm")
