"""How the digits domain joins the engine: its env ids and its policy kinds ("noise_latent",
"generator"). Nothing trains or even imports jax at import: the env modules import, and models
load (or pretrain on first use, then come from the cache), when a factory is called through
`rollax.make`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rollax.envs.registry import register
from rollax.networks.kinds import register_policy_kind

if TYPE_CHECKING:
    from rollax.generative.latent_env import LatentEnv, LatentEnvParams
    from rollax.generative.reconstruction_env import ReconstructionEnv


def make_vae_digit(
    target_class: int = -1,
    *,
    horizon: int = 1,
    action_bound: float = 3.0,
    reward_on: str = "final",
    class_weight: float = 1.0,
    realism_weight: float = 0.1,
    class_reward: str = "log_prob",
    noise: bool = False,
    action: str = "latent",
    vae: dict | None = None,
) -> tuple[LatentEnv, LatentEnvParams]:
    """`rollax/VAEDigit-v0`: observe a one-hot target class (uniform, or `target_class`), act with
    a VAE latent; reward = class_weight * log p(target | x) + realism_weight * VAE realism
    (`class_reward="prob"`: p(target | x), which saturates).
    Evaluation: an independent judge's success rate, the realism against real digits, and the
    samples' diversity. `noise=True` adds a prior noise sample to the observation (for
    noise-conditioned policies); `action="sample"` makes the decoder itself the policy.
    `vae`: config overrides of the VAE the env decodes with (e.g. `{"kl_weight": 0.1}`); the
    judge's realism stays the default VAE's, so every run is judged alike."""
    from rollax.generative.judge import load_digit_judge
    from rollax.generative.latent_env import LatentEnv, one_hot_conditions, with_target
    from rollax.generative.pretrained import load_pretrained
    from rollax.generative.rewards import ClassAndRealismReward

    model, _ = load_pretrained("vae", **_overrides("vae", vae))
    classifier, _ = load_pretrained("classifier")
    reward = ClassAndRealismReward(classifier, model, class_weight, realism_weight, class_reward)
    env = LatentEnv(model.decoder, reward, model.latent_dim, conditions=one_hot_conditions(10),
                    horizon=horizon, action_bound=action_bound, reward_on=reward_on,
                    name="rollax/VAEDigit-v0", evaluator=load_digit_judge(), noise=noise,
                    action=action)
    return env, with_target(env, env.default_params, target_class)


def make_vae_reconstruct(
    *, split: str = "train", horizon: int = 1, action_bound: float = 3.0, reward_on: str = "final"
) -> tuple[ReconstructionEnv, LatentEnvParams]:
    """`rollax/VAEReconstruct-v0`: observe a real digit from `split`, reconstruct it via a latent."""
    from rollax.generative.data import load_digits_split
    from rollax.generative.pretrained import load_pretrained
    from rollax.generative.reconstruction_env import ReconstructionEnv

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    data = load_digits_split()
    images = data.train_images if split == "train" else data.test_images
    vae, _ = load_pretrained("vae")
    env = ReconstructionEnv(vae, images, horizon=horizon, action_bound=action_bound,
                            reward_on=reward_on)
    return env, env.default_params


def make_gan_discriminator(
    *, horizon: int = 1, action_bound: float = 3.0, reward_on: str = "final", kind: str = "logit",
    noise: bool = False, action: str = "latent", gan: dict | None = None,
) -> tuple[LatentEnv, LatentEnvParams]:
    """`rollax/GANDiscriminator-v0`: act with a generator latent; reward = discriminator logit
    (`kind="logit"`) or log D(x) (`kind="log_prob"`). Unconditioned. Evaluation adds the judge's
    confident share, the VAE realism, which the discriminator reward does not see, and the
    samples' diversity and class coverage. `noise`/`action` as for `rollax/VAEDigit-v0`;
    `gan`: config overrides of the GAN (e.g. `{"discriminator_epochs": 50}`)."""
    from rollax.generative.judge import load_digit_judge
    from rollax.generative.latent_env import LatentEnv
    from rollax.generative.pretrained import load_pretrained
    from rollax.generative.rewards import DiscriminatorReward

    gan, _ = load_pretrained("gan", **_overrides("gan", gan))
    env = LatentEnv(gan.generator, DiscriminatorReward(gan.discriminator, kind), gan.latent_dim,
                    horizon=horizon, action_bound=action_bound, reward_on=reward_on,
                    name="rollax/GANDiscriminator-v0", evaluator=load_digit_judge(), noise=noise,
                    action=action)
    return env, env.default_params


def _overrides(name: str, overrides: Any) -> Mapping:
    """The config overrides an env param names its model by (None: the default model)."""
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise ValueError(f"{name} must be a table of {name} config overrides, e.g. "
                         f"{name}={{...}} in Python or [params.{name}] in TOML; got {overrides!r}")
    return overrides


register("rollax/VAEDigit-v0", make_vae_digit)
register("rollax/VAEReconstruct-v0", make_vae_reconstruct)
register("rollax/GANDiscriminator-v0", make_gan_discriminator)
register_policy_kind("noise_latent", "rollax.generative.policies:NOISE_LATENT_KIND")
register_policy_kind("generator", "rollax.generative.policies:GENERATOR_KIND")
