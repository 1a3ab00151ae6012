"""How the diffusion domain joins the engine: its env ids, its policy kind ("denoiser") and its
batch source (sampled chains). Importing this module imports no jax; the base models load (or
pretrain on first use, then come from the cache) when a factory is called through `rollax.make`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rollax.envs.registry import register
from rollax.networks.kinds import register_policy_kind
from rollax.rollout.sources import register_batch_sources

if TYPE_CHECKING:
    from rollax.diffusion.env import ChainParams, DenoisingChain


def make_digit_chain(model: str, *, num_steps: int = 10, noise: float | None = None,
                     target_class: int = -1, class_weight: float = 1.0,
                     realism_weight: float = 0.1, class_reward: str = "log_prob",
                     denoiser: dict | None = None) -> tuple[DenoisingChain, ChainParams]:
    """A digit base model's denoising chain of `num_steps` steps, conditioned on a class
    (uniform, or `target_class`); reward = class_weight * log p(class | x) + realism_weight *
    VAE realism (the latent envs' reward), judged by the digits' independent judge. `noise`:
    DDIM's eta ("ddpm") or the flow SDE's a ("flow"), None: the sampler's memoryless default;
    `denoiser`: the base model's config."""
    from rollax.diffusion.env import DenoisingChain
    from rollax.diffusion.pretrained import denoiser_config, load_denoiser
    from rollax.generative.judge import load_digit_judge
    from rollax.generative.pretrained import load_pretrained
    from rollax.generative.rewards import ClassAndRealismReward

    config = denoiser_config({**(denoiser or {}), "model": model})
    sampler = config.sampler(num_steps, noise)
    base, _ = load_denoiser(config)
    classifier, _ = load_pretrained("classifier")
    vae, _ = load_pretrained("vae")
    reward = ClassAndRealismReward(classifier, vae, class_weight, realism_weight, class_reward)
    env = DenoisingChain(base, sampler, reward, num_conditions=10, evaluator=load_digit_judge(),
                         name=f"rollax/{'Diffusion' if model == 'ddpm' else 'Flow'}Digit-v0")
    if isinstance(target_class, bool) or not isinstance(target_class, int) or \
            not -1 <= target_class < env.num_conditions:
        raise ValueError(f"target_class={target_class!r} must be -1 (uniform) or a class in "
                         f"[0, {env.num_conditions})")
    return env, env.default_params.replace(target_index=target_class)


def make_diffusion_digit(**settings: Any) -> tuple[DenoisingChain, ChainParams]:
    """`rollax/DiffusionDigit-v0`: the DDPM's DDIM chain (see `make_digit_chain`)."""
    return make_digit_chain("ddpm", **settings)


def make_flow_digit(**settings: Any) -> tuple[DenoisingChain, ChainParams]:
    """`rollax/FlowDigit-v0`: the rectified flow's SDE chain (see `make_digit_chain`)."""
    return make_digit_chain("flow", **settings)


register("rollax/DiffusionDigit-v0", make_diffusion_digit)
register("rollax/FlowDigit-v0", make_flow_digit)
register_policy_kind("denoiser", "rollax.diffusion.policy:DENOISER_KIND")
register_batch_sources("rollax.diffusion.env:DenoisingChain", "rollax.diffusion.source:Chains")
