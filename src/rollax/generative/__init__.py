"""The digits domain: scikit-learn's digits, a VAE, a GAN and a classifier pretrained on first
use and cached, their reward functions and independent judge, the latent environments
(`rollax/VAEDigit-v0`, ...) and the policies built from the models. Importing the package
registers its env ids and policy kinds (no jax); every other name loads on first use."""

from rollax.generative import ids  # noqa: F401  (registers the env ids and policy kinds)
from rollax.lazy import lazy_exports

_NAMES = {
    **dict.fromkeys(("ClassifierConfig", "GANConfig", "VAEConfig", "make_config"),
                    "rollax.generative.configs"),
    **dict.fromkeys(("DigitsSplit", "load_digits_split"), "rollax.generative.data"),
    **dict.fromkeys(("JUDGE_CONFIG", "DigitJudge", "load_digit_judge", "real_digit_realism",
                     "reconstruction_metrics"), "rollax.generative.judge"),
    **dict.fromkeys(("GAN", "VAE", "Classifier", "Decoder", "Discriminator", "Encoder",
                     "prior_log_density"), "rollax.generative.models"),
    **dict.fromkeys(("EncoderPolicy", "encoder_policy"), "rollax.generative.policies"),
    **dict.fromkeys(("MODEL_NAMES", "cache_dir", "cache_path", "load_pretrained", "pretrain"),
                    "rollax.generative.pretrained"),
    **dict.fromkeys(("ClassAndRealismReward", "ClassifierReward", "DiscriminatorReward",
                     "VAERealismReward", "reconstruction_reward"), "rollax.generative.rewards"),
    **dict.fromkeys(("LatentEnv", "from_model"), "rollax.generative.latent_env"),
}
__getattr__, __dir__ = lazy_exports(globals(), _NAMES)
__all__ = [
    "GAN",
    "JUDGE_CONFIG",
    "MODEL_NAMES",
    "VAE",
    "ClassAndRealismReward",
    "Classifier",
    "ClassifierConfig",
    "ClassifierReward",
    "Decoder",
    "DigitJudge",
    "DigitsSplit",
    "Discriminator",
    "DiscriminatorReward",
    "Encoder",
    "EncoderPolicy",
    "GANConfig",
    "LatentEnv",
    "VAEConfig",
    "VAERealismReward",
    "cache_dir",
    "cache_path",
    "encoder_policy",
    "from_model",
    "load_digit_judge",
    "load_digits_split",
    "load_pretrained",
    "make_config",
    "pretrain",
    "prior_log_density",
    "real_digit_realism",
    "reconstruction_metrics",
    "reconstruction_reward",
]
