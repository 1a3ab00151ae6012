"""Evaluation of generated digits by models the policy never trains against.

The reward classifier is what a policy optimises, so its own accuracy on the policy's samples
says little: a policy can find images that fool it. `DigitJudge` scores samples with an
independent classifier (trained separately: another seed and width, `JUDGE_CONFIG`) and with
the VAE realism (prior log-density of the re-encoded sample), compared with real test digits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rollax.generative.models import Classifier
from rollax.generative.rewards import VAERealismReward

# the judge's pretraining config: the reward classifier is `ClassifierConfig()` (width 128, seed 0)
JUDGE_CONFIG = {"hidden_dim": 64, "seed": 1}
REAL_PERCENTILE = 5.0  # a sample is "realistic" when it scores above 95% of real test digits' floor


class DigitJudge(nnx.Module):
    """Per-sample evaluation metrics `{name: [B]}` for samples `[B, 64]` and one-hot targets.

    - `judge_success`: the judge's top class is the target (only with conditions);
    - `judge_confident`: the judge's top probability is at least `confident_prob`;
    - `realism`: `VAERealismReward` of the sample (higher is more digit-like);
    - `realistic`: realism at least `realism_threshold` (the real test digits' 5th percentile).
    """

    def __init__(self, judge: Classifier, realism: VAERealismReward, realism_threshold: float,
                 confident_prob: float = 0.9):
        if not 0.0 < confident_prob <= 1.0:
            raise ValueError(f"confident_prob must be in (0, 1], got {confident_prob!r}")
        self.judge = judge
        self.realism = realism
        self.realism_threshold = float(realism_threshold)
        self.confident_prob = float(confident_prob)

    def __call__(self, samples: jax.Array, conditions: jax.Array | None = None
                 ) -> dict[str, jax.Array]:
        probs = jax.nn.softmax(self.judge(samples), axis=-1)
        realism = self.realism(samples)
        metrics = {
            "judge_confident": (probs.max(-1) >= self.confident_prob).astype(jnp.float32),
            "realism": realism,
            "realistic": (realism >= self.realism_threshold).astype(jnp.float32),
        }
        if conditions is not None:
            if conditions.shape != probs.shape:
                raise ValueError(f"DigitJudge needs one-hot conditions {probs.shape}, "
                                 f"got {conditions.shape}")
            hit = probs.argmax(-1) == conditions.argmax(-1)
            metrics["judge_success"] = hit.astype(jnp.float32)
        return metrics


def real_digit_realism(realism: VAERealismReward, images: np.ndarray) -> np.ndarray:
    """Realism `[N]` of real digits `[N, 64]`: the reference the samples are compared with."""
    return np.asarray(realism(jnp.asarray(images, jnp.float32)))


def load_digit_judge() -> DigitJudge:
    """The judge (pretrained on first use and cached like the other models) with a VAE realism
    whose threshold is the 5th percentile of the real test digits' realism."""
    from rollax.generative.data import load_digits_split
    from rollax.generative.pretrained import load_pretrained

    judge, _ = load_pretrained("classifier", **JUDGE_CONFIG)
    vae, _ = load_pretrained("vae")
    realism = VAERealismReward(vae)
    real = real_digit_realism(realism, load_digits_split().test_images)
    return DigitJudge(judge, realism, float(np.percentile(real, REAL_PERCENTILE)))


def reconstruction_metrics(samples: jax.Array, conditions: jax.Array | None = None
                           ) -> dict[str, jax.Array]:
    """`{"mse": [B]}`: per-pixel squared error between samples `[B, P]` and targets `[B, P]`."""
    if conditions is None or conditions.shape != samples.shape:
        shape = None if conditions is None else conditions.shape
        raise ValueError(f"reconstruction_metrics needs targets shaped like the samples "
                         f"{samples.shape}, got {shape}")
    return {"mse": jnp.mean((samples - conditions) ** 2, axis=-1)}
