"""Evaluation of generated digits by models the policy never trains against.

The reward classifier is what a policy optimises, so its own accuracy on the policy's samples
says little: a policy can find images that fool it. `DigitJudge` scores samples with an
independent classifier (trained separately: another seed and width, `JUDGE_CONFIG`) and with
the VAE realism (prior log-density of the re-encoded sample), compared with real test digits.

A reward can also be maximised by drawing one good digit again and again, so the judge also
measures the set: pixel diversity against real digits, and how many classes the samples cover.
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
COVERED_SHARE = 0.03  # a class counts as covered when at least this share of samples shows it


def mean_pairwise_distance(samples: jax.Array, weights: jax.Array) -> jax.Array:
    """Mean L2 distance over the distinct pairs of samples `[B, P]` with weight 1 (`weights
    [B]` in {0, 1}); 0 when fewer than two are weighted."""
    squared = jnp.sum(samples**2, axis=-1)
    gram = squared[:, None] + squared[None, :] - 2.0 * samples @ samples.T
    distances = jnp.sqrt(jnp.maximum(gram, 0.0)) * (1.0 - jnp.eye(samples.shape[0]))
    pairs = weights.sum() ** 2 - jnp.sum(weights**2)
    return (weights @ distances @ weights) / jnp.maximum(pairs, 1.0)


def real_diversity(images: np.ndarray, labels: np.ndarray, num_classes: int
                   ) -> tuple[np.ndarray, float]:
    """Real digits' mean pairwise distance per class `[num_classes]` and over all of them: what
    the samples' diversity is divided by."""
    images = jnp.asarray(images, jnp.float32)
    per_class = [float(mean_pairwise_distance(images, jnp.asarray(labels == c, jnp.float32)))
                 for c in range(num_classes)]
    everything = float(mean_pairwise_distance(images, jnp.ones(len(images), jnp.float32)))
    return np.asarray(per_class, np.float32), everything


class DigitJudge(nnx.Module):
    """Per-sample evaluation metrics `{name: [B]}` for samples `[B, 64]` and one-hot targets.

    - `judge_success`: the judge's top class is the target (only with conditions);
    - `judge_confident`: the judge's top probability is at least `confident_prob`;
    - `realism`: `VAERealismReward` of the sample (higher is more digit-like);
    - `realistic`: realism at least `realism_threshold` (the real test digits' 5th percentile).

    Set metrics (scalars) on the whole batch:
    - `diversity`: the samples' mean pairwise L2 distance over real digits' (`real_diversity`);
      with conditions, per requested class over real digits of that class, averaged over the
      classes with two samples or more, and `diversity_min` the worst of those classes;
    - `classes_covered`: classes the judge finds in at least `COVERED_SHARE` of the samples,
      and `class_entropy` (nats) of the judge's class histogram (log 10 = 2.30 when uniform).
    """

    def __init__(self, judge: Classifier, realism: VAERealismReward, realism_threshold: float,
                 real_class_diversity: np.ndarray, real_overall_diversity: float,
                 confident_prob: float = 0.9):
        if not 0.0 < confident_prob <= 1.0:
            raise ValueError(f"confident_prob must be in (0, 1], got {confident_prob!r}")
        real_class_diversity = np.asarray(real_class_diversity, np.float32)
        if real_class_diversity.ndim != 1 or not np.all(real_class_diversity > 0):
            raise ValueError(f"real_class_diversity must be positive per class, got "
                             f"{real_class_diversity}")
        self.judge = judge
        self.realism = realism
        self.realism_threshold = float(realism_threshold)
        self.real_class_diversity = nnx.Variable(jnp.asarray(real_class_diversity))
        self.real_overall_diversity = float(real_overall_diversity)
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
        return {**metrics, **self.set_metrics(samples, probs.argmax(-1), conditions)}

    def set_metrics(self, samples: jax.Array, judged: jax.Array, conditions: jax.Array | None
                    ) -> dict[str, jax.Array]:
        """Diversity and class coverage of a batch (see the class docstring)."""
        num_classes = self.real_class_diversity.shape[0]
        share = jnp.bincount(judged, length=num_classes) / judged.shape[0]
        metrics = {
            "classes_covered": jnp.sum(share >= COVERED_SHARE).astype(jnp.float32),
            "class_entropy": -jnp.sum(jnp.where(share > 0, share * jnp.log(share), 0.0)),
        }
        if conditions is None:
            everyone = jnp.ones(samples.shape[0], jnp.float32)
            metrics["diversity"] = mean_pairwise_distance(samples, everyone) / self.real_overall_diversity
            return metrics
        members = jax.nn.one_hot(conditions.argmax(-1), num_classes).T  # [classes, B]
        spread = jax.vmap(mean_pairwise_distance, in_axes=(None, 0))(samples, members)
        ratio = spread / self.real_class_diversity[...]
        present = members.sum(-1) >= 2
        metrics["diversity"] = jnp.sum(jnp.where(present, ratio, 0.0)) / jnp.maximum(present.sum(), 1)
        metrics["diversity_min"] = jnp.min(jnp.where(present, ratio, jnp.inf))
        return metrics


def real_digit_realism(realism: VAERealismReward, images: np.ndarray) -> np.ndarray:
    """Realism `[N]` of real digits `[N, 64]`: the reference the samples are compared with."""
    return np.asarray(realism(jnp.asarray(images, jnp.float32)))


def load_digit_judge() -> DigitJudge:
    """The judge (pretrained on first use and cached like the other models) with a VAE realism
    whose threshold is the 5th percentile of the real test digits' realism, and the diversity
    of all 1,797 real digits (per class and overall) as the reference of the samples'."""
    from rollax.generative.data import NUM_CLASSES, load_digits_split
    from rollax.generative.pretrained import load_pretrained

    judge, _ = load_pretrained("classifier", **JUDGE_CONFIG)
    vae, _ = load_pretrained("vae")
    realism = VAERealismReward(vae)
    data = load_digits_split()
    real = real_digit_realism(realism, data.test_images)
    per_class, overall = real_diversity(np.concatenate([data.train_images, data.test_images]),
                                        np.concatenate([data.train_labels, data.test_labels]),
                                        NUM_CLASSES)
    return DigitJudge(judge, realism, float(np.percentile(real, REAL_PERCENTILE)), per_class,
                      overall)


def reconstruction_metrics(samples: jax.Array, conditions: jax.Array | None = None
                           ) -> dict[str, jax.Array]:
    """`{"mse": [B]}`: per-pixel squared error between samples `[B, P]` and targets `[B, P]`."""
    if conditions is None or conditions.shape != samples.shape:
        shape = None if conditions is None else conditions.shape
        raise ValueError(f"reconstruction_metrics needs targets shaped like the samples "
                         f"{samples.shape}, got {shape}")
    return {"mse": jnp.mean((samples - conditions) ** 2, axis=-1)}
