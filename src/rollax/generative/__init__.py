"""Generative models on scikit-learn's digits (VAE, GAN, classifier), pretrained on first use and
cached, plus reward functions and policies for the generative-model environments."""

from rollax.generative.configs import ClassifierConfig, GANConfig, VAEConfig, make_config
from rollax.generative.data import DigitsSplit, load_digits_split
from rollax.generative.judge import (
    JUDGE_CONFIG,
    DigitJudge,
    load_digit_judge,
    real_digit_realism,
    reconstruction_metrics,
)
from rollax.generative.models import (
    GAN,
    VAE,
    Classifier,
    Decoder,
    Discriminator,
    Encoder,
    prior_log_density,
)
from rollax.generative.policies import EncoderPolicy, encoder_policy
from rollax.generative.pretrained import (
    MODEL_NAMES,
    cache_dir,
    cache_path,
    load_pretrained,
    pretrain,
)
from rollax.generative.rewards import (
    ClassAndRealismReward,
    ClassifierReward,
    DiscriminatorReward,
    VAERealismReward,
    reconstruction_reward,
)

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
    "VAEConfig",
    "VAERealismReward",
    "cache_dir",
    "cache_path",
    "encoder_policy",
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
