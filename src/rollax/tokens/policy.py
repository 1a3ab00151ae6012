"""The "transformer" policy kind: `[agent.network] kind = "transformer"` builds the task-sized
transformer (`width`, `layers`, `heads`), started from the supervised warm start unless
`warm_start = false` (trained until its greedy success on held-out prompts reaches
`warm_start_success`, then cached)."""

from __future__ import annotations

import dataclasses

from flax import nnx

from rollax.checks import check_int, check_number, check_types
from rollax.networks.kinds import PolicyContext, PolicyKind
from rollax.tokens.env import TokenEnv
from rollax.tokens.transformer import TransformerPolicy
from rollax.tokens.warm_start import WarmStartConfig, token_policy, warm_start

MAX_WIDTH = 2**16


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    kind: str = "transformer"
    width: int = 64
    layers: int = 2
    heads: int = 4
    warm_start: bool = True
    warm_start_success: float = 0.3

    def __post_init__(self):
        check_types(self, "agent.network")
        for name in ("width", "layers", "heads"):
            check_int(f"agent.network.{name}", getattr(self, name), 1, MAX_WIDTH)
        if self.width % self.heads:
            raise ValueError(f"agent.network.width={self.width} must be a multiple of "
                             f"agent.network.heads={self.heads}")
        check_number("agent.network.warm_start_success", self.warm_start_success, 0.0, 1.0,
                     low_open=True)

    def warm_start_config(self) -> WarmStartConfig:
        return WarmStartConfig(width=self.width, layers=self.layers, heads=self.heads,
                               target_success=self.warm_start_success)


def _task(context: PolicyContext):
    if not isinstance(context.env, TokenEnv):
        raise ValueError(f"agent.network.kind='transformer' is for token tasks "
                         f"(rollax/Tokens-*), not {context.env_id!r}")
    return context.env.task


def _build(config: TransformerConfig, context: PolicyContext, rngs: nnx.Rngs) -> TransformerPolicy:
    return token_policy(_task(context), config.warm_start_config(), value_head=context.critic,
                        rngs=rngs)


def _warm_start(config: TransformerConfig, context: PolicyContext) -> nnx.State | None:
    """The warm start's parameters (trained on first use, then cached), or None."""
    _task(context)
    if not config.warm_start:
        return None
    model, _ = warm_start(context.env_id, config.warm_start_config(), **context.env_settings)
    return nnx.state(model, nnx.Param)


TRANSFORMER_KIND = PolicyKind("transformer", TransformerConfig, _build, _warm_start)
