"""Pretraining loops (one jitted `lax.scan` over all epochs) and quality reports."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from rollax.generative.configs import ClassifierConfig, GANConfig, VAEConfig
from rollax.generative.data import DigitsSplit
from rollax.generative.models import GAN, VAE, Classifier

# loss_fn(model, batch_arrays, key) -> scalar
LossFn = Callable[[nnx.Module, tuple[jax.Array, ...], jax.Array], jax.Array]


def _batch_indices(key: jax.Array, num_items: int, batch_size: int) -> jax.Array:
    """A shuffled epoch as `[num_batches, batch_size]` indices (the remainder is dropped)."""
    batch_size = min(batch_size, num_items)
    num_batches = num_items // batch_size
    order = jax.random.permutation(key, num_items)[: num_batches * batch_size]
    return order.reshape(num_batches, batch_size)


def fit(
    model: nnx.Module,
    loss_fn: LossFn,
    data: tuple[np.ndarray, ...],
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    key: jax.Array,
) -> np.ndarray:
    """Train `model` in place with Adam on minibatches of `data` (arrays `[N, ...]`); epoch losses."""
    graphdef, params = nnx.split(model)
    optimizer = optax.adam(learning_rate)
    data = tuple(jnp.asarray(array) for array in data)

    def batch_step(carry, inputs):
        params, opt_state = carry
        indices, key = inputs
        batch = tuple(array[indices] for array in data)
        loss, grads = jax.value_and_grad(
            lambda p: loss_fn(nnx.merge(graphdef, p), batch, key)
        )(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    def epoch_step(carry, key):
        order_key, batch_key = jax.random.split(key)
        indices = _batch_indices(order_key, data[0].shape[0], batch_size)
        keys = jax.random.split(batch_key, indices.shape[0])
        carry, losses = jax.lax.scan(batch_step, carry, (indices, keys))
        return carry, losses.mean()

    @jax.jit
    def run(params, key):
        carry = (params, optimizer.init(params))
        (params, _), losses = jax.lax.scan(epoch_step, carry, jax.random.split(key, epochs))
        return params, losses

    params, losses = run(params, key)
    nnx.update(model, params)
    return np.asarray(losses)


def classifier_loss(model: Classifier, batch: tuple[jax.Array, ...], key: jax.Array) -> jax.Array:
    """Mean cross-entropy of labels `[B]` given images `[B, 64]`."""
    del key
    images, labels = batch
    return optax.softmax_cross_entropy_with_integer_labels(model(images), labels).mean()


def vae_loss(model: VAE, batch: tuple[jax.Array, ...], key: jax.Array,
             kl_weight: float = 1.0) -> jax.Array:
    """Negative ELBO per image: summed pixel BCE + kl_weight * KL(q(z|x) || N(0, I))."""
    (images,) = batch
    logits, mean, log_var = model(images, key)
    bce = optax.sigmoid_binary_cross_entropy(logits, images).sum(-1)
    kl = 0.5 * jnp.sum(jnp.exp(log_var) + mean**2 - 1.0 - log_var, axis=-1)
    return (bce + kl_weight * kl).mean()


def train_classifier(split: DigitsSplit, config: ClassifierConfig) -> Classifier:
    """Classifier trained on the train split."""
    model = Classifier(config.hidden_dim, rngs=nnx.Rngs(config.seed))
    fit(model, classifier_loss, (split.train_images, split.train_labels),
        epochs=config.epochs, batch_size=config.batch_size,
        learning_rate=config.learning_rate, key=jax.random.key(config.seed + 1))
    return model


def train_vae(split: DigitsSplit, config: VAEConfig) -> VAE:
    """VAE trained on the train split's images."""
    model = VAE(config.latent_dim, config.hidden_dim, rngs=nnx.Rngs(config.seed))
    fit(model, functools.partial(vae_loss, kl_weight=config.kl_weight), (split.train_images,),
        epochs=config.epochs, batch_size=config.batch_size,
        learning_rate=config.learning_rate, key=jax.random.key(config.seed + 1))
    return model


def train_gan(split: DigitsSplit, config: GANConfig) -> GAN:
    """GAN trained with alternating discriminator / non-saturating generator Adam steps."""
    model = GAN(config.latent_dim, config.hidden_dim, rngs=nnx.Rngs(config.seed))
    gen_def, gen_params = nnx.split(model.generator)
    disc_def, disc_params = nnx.split(model.discriminator)
    optimizer = optax.adam(config.learning_rate, b1=0.5)
    images = jnp.asarray(split.train_images)

    def disc_loss(disc_params, real, fake):
        return discriminator_loss(nnx.merge(disc_def, disc_params), real, fake)

    def gen_loss(gen_params, disc_params, latents):
        fake = nnx.merge(gen_def, gen_params)(latents)
        logits = nnx.merge(disc_def, disc_params)(fake)
        return -jax.nn.log_sigmoid(logits).mean()

    def batch_step(carry, inputs):
        gen_params, disc_params, gen_opt, disc_opt = carry
        indices, key = inputs
        real = images[indices]
        latents = jax.random.normal(key, (indices.shape[0], config.latent_dim))
        fake = nnx.merge(gen_def, gen_params)(latents)
        grads = jax.grad(disc_loss)(disc_params, real, jax.lax.stop_gradient(fake))
        updates, disc_opt = optimizer.update(grads, disc_opt, disc_params)
        disc_params = optax.apply_updates(disc_params, updates)
        loss, grads = jax.value_and_grad(gen_loss)(gen_params, disc_params, latents)
        updates, gen_opt = optimizer.update(grads, gen_opt, gen_params)
        gen_params = optax.apply_updates(gen_params, updates)
        return (gen_params, disc_params, gen_opt, disc_opt), loss

    def epoch_step(carry, key):
        order_key, batch_key = jax.random.split(key)
        indices = _batch_indices(order_key, images.shape[0], config.batch_size)
        keys = jax.random.split(batch_key, indices.shape[0])
        carry, losses = jax.lax.scan(batch_step, carry, (indices, keys))
        return carry, losses.mean()

    @jax.jit
    def run(gen_params, disc_params, key):
        carry = (gen_params, disc_params, optimizer.init(gen_params), optimizer.init(disc_params))
        carry, _ = jax.lax.scan(epoch_step, carry, jax.random.split(key, config.epochs))
        return carry[0], carry[1]

    gen_params, disc_params = run(gen_params, disc_params, jax.random.key(config.seed + 1))
    nnx.update(model.generator, gen_params)
    nnx.update(model.discriminator, disc_params)
    return model


def discriminator_loss(discriminator: nnx.Module, real: jax.Array, fake: jax.Array) -> jax.Array:
    """Binary cross-entropy of real images as 1 and generated ones as 0."""
    return (optax.sigmoid_binary_cross_entropy(discriminator(real), jnp.ones(real.shape[0])).mean()
            + optax.sigmoid_binary_cross_entropy(discriminator(fake), jnp.zeros(fake.shape[0])).mean())


def refit_discriminator(model: GAN, images: np.ndarray, config: GANConfig) -> None:
    """Train the discriminator alone for `config.discriminator_epochs` against the frozen
    generator's samples, so that it tells them from real digits as well as it can."""
    gen_def, gen_params = nnx.split(model.generator)

    def loss(discriminator, batch, key):
        (real,) = batch
        fake = nnx.merge(gen_def, gen_params)(jax.random.normal(key, (real.shape[0], config.latent_dim)))
        return discriminator_loss(discriminator, real, fake)

    fit(model.discriminator, loss, (images,), epochs=config.discriminator_epochs,
        batch_size=config.batch_size, learning_rate=config.learning_rate,
        key=jax.random.key(config.seed + 2))


def classifier_report(model: Classifier, split: DigitsSplit) -> dict[str, float]:
    """Train and test accuracy."""
    test_pred = np.asarray(model(jnp.asarray(split.test_images)).argmax(-1))
    train_pred = np.asarray(model(jnp.asarray(split.train_images)).argmax(-1))
    return {
        "test_accuracy": float(np.mean(test_pred == split.test_labels)),
        "train_accuracy": float(np.mean(train_pred == split.train_labels)),
    }


def vae_report(model: VAE, split: DigitsSplit) -> dict[str, float]:
    """Test reconstruction error of the posterior mean, next to the mean-image baseline."""
    images = jnp.asarray(split.test_images)
    mean, log_var = model.encoder(images)
    recon = model.decoder(mean)
    recon_logits = model.decoder.logits(mean)
    kl = 0.5 * jnp.sum(jnp.exp(log_var) + mean**2 - 1.0 - log_var, axis=-1)
    baseline = split.train_images.mean(axis=0)
    return {
        "test_mse": float(jnp.mean((recon - images) ** 2)),
        "test_bce_per_image": float(
            optax.sigmoid_binary_cross_entropy(recon_logits, images).sum(-1).mean()
        ),
        "test_kl_per_image": float(kl.mean()),
        "mean_image_mse": float(np.mean((split.test_images - baseline) ** 2)),
    }


def gan_report(
    model: GAN, classifier: Classifier, split: DigitsSplit, num_samples: int = 1000
) -> dict[str, float]:
    """Share of prior samples the classifier labels with max prob >= 0.9, class coverage, D(x)."""
    latents = jax.random.normal(jax.random.key(1234), (num_samples, model.latent_dim))
    samples = model.generator(latents)
    probs = jax.nn.softmax(classifier(samples), axis=-1)
    confident = np.asarray(probs.max(-1) >= 0.9)
    labels = np.asarray(probs.argmax(-1))[confident]
    counts = np.bincount(labels, minlength=probs.shape[-1])
    real = jax.nn.sigmoid(model.discriminator(jnp.asarray(split.test_images)))
    fake = jax.nn.sigmoid(model.discriminator(samples))
    return {
        "confident_share": float(confident.mean()),
        "classes_covered": int(np.sum(counts >= 0.02 * max(confident.sum(), 1))),
        "discriminator_prob_real_test": float(real.mean()),
        "discriminator_prob_fake": float(fake.mean()),
    }
