"""The four trainers on tiny NNX models: gradient signs, metrics, jit reuse, bad input, options.

Reference quantities (log-probs, advantages, aggregated losses) are recomputed here in NumPy
from the models' raw outputs, never with the code under test.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from rollax import (
    DPOConfig,
    DPOTrainer,
    GRPOConfig,
    GRPOTrainer,
    PPOConfig,
    PPOTrainer,
    REINFORCEConfig,
    REINFORCETrainer,
)

OBS_DIM, NUM_ACTIONS, VOCAB, SEQ_LEN, BATCH = 3, 3, 5, 4, 4
OBSERVATION = np.array([0.5, -0.3, 1.0], np.float32)

# ----------------------------------------------------------------- tiny models


class DiscretePolicy(nnx.Module):
    """Observations `[B, D]` -> logits `[B, A]`."""

    def __init__(self, rngs: nnx.Rngs):
        self.linear = nnx.Linear(OBS_DIM, NUM_ACTIONS, rngs=rngs)

    def __call__(self, observations):
        return self.linear(observations)


class GaussianPolicy(nnx.Module):
    """Observations `[B, D]` -> `(mean [B, 1], log_std [1])`."""

    def __init__(self, rngs: nnx.Rngs):
        self.mean = nnx.Linear(OBS_DIM, 1, rngs=rngs)
        self.log_std = nnx.Param(jnp.full((1,), -0.5))

    def __call__(self, observations):
        return self.mean(observations), self.log_std[...]


class TokenPolicy(nnx.Module):
    """Tokens `[B, T]` -> next-token logits `[B, T, V]` from a lookup table."""

    def __init__(self, rngs: nnx.Rngs):
        self.table = nnx.Param(0.3 * jax.random.normal(rngs.params(), (VOCAB, VOCAB)))

    def __call__(self, tokens):
        return self.table[...][tokens]


class ActorCritic(nnx.Module):
    """`(policy_output, value [B, 1])` for any of the policies above."""

    def __init__(self, policy: nnx.Module, input_dim: int, rngs: nnx.Rngs):
        self.policy = policy
        self.value = nnx.Linear(input_dim, 1, rngs=rngs)

    def __call__(self, observations):
        features = observations.astype(jnp.float32)
        return self.policy(observations), self.value(features)


POLICIES = {"discrete": DiscretePolicy, "gaussian": GaussianPolicy, "token": TokenPolicy}


def make_model(kind: str, actor_critic: bool = False, seed: int = 0) -> nnx.Module:
    rngs = nnx.Rngs(seed)
    policy = POLICIES[kind](rngs)
    if actor_critic:
        return ActorCritic(policy, SEQ_LEN if kind == "token" else OBS_DIM, rngs)
    return policy


def make_trainer(trainer_class, model, config=None, tx=None, **kwargs):
    optimizer = nnx.Optimizer(model, tx or optax.sgd(0.1), wrt=nnx.Param)
    return trainer_class(model, optimizer, config, **kwargs)


# ----------------------------------------------------------------- NumPy references


def np_log_softmax(logits):
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def policy_output(model, observations):
    output = model(jnp.asarray(observations))
    return output[0] if isinstance(model, ActorCritic) else output


def np_log_probs(kind, model, observations, actions, mask=None):
    """Per-sample log pi(a|s) `[B]` (token models: masked sum over tokens)."""
    output = policy_output(model, observations)
    if kind == "gaussian":
        mean, log_std = (np.asarray(x, np.float64) for x in output)
        z = (np.asarray(actions) - mean) / np.exp(log_std)
        return np.sum(-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi), axis=-1)
    log_probs = np.take_along_axis(np_log_softmax(output), np.asarray(actions)[..., None], -1)[..., 0]
    if kind == "token":
        return np.sum(np.where(True if mask is None else mask, log_probs, 0.0), axis=-1)
    return log_probs


def np_token_terms(model, tokens, actions):
    """Per-token log-probs and entropies `[B, L]` of a token policy."""
    log_softmax = np_log_softmax(model(jnp.asarray(tokens)))
    log_probs = np.take_along_axis(log_softmax, np.asarray(actions)[..., None], -1)[..., 0]
    return log_probs, -np.sum(np.exp(log_softmax) * log_softmax, -1)


def np_group_advantages(rewards, group_size):
    groups = np.asarray(rewards, np.float64).reshape(-1, group_size)
    advantages = np.zeros_like(groups)
    for g, group in enumerate(groups):
        if not np.all(group == group[0]):
            advantages[g] = (group - group.mean()) / (group.std() + 1e-8)
    return advantages.ravel()


def gaussian_mean(model):
    return float(np.asarray(policy_output(model, OBSERVATION[None])[0])[0, 0])


# ----------------------------------------------------------------- batches with one better sample


def inputs(kind, model):
    """Observations and actions `[B, ...]` with row 0 as the rewarded sample, plus a token mask."""
    if kind == "token":
        observations = np.tile(np.arange(SEQ_LEN) % VOCAB, (BATCH, 1)).astype(np.int32)
        actions = ((np.arange(BATCH)[:, None] + np.arange(SEQ_LEN)[None]) % VOCAB).astype(np.int32)
        mask = np.ones((BATCH, SEQ_LEN), bool)
        mask[1, -1] = mask[3, -2:] = False
        return observations, actions, mask
    observations = np.tile(OBSERVATION, (BATCH, 1))
    if kind == "discrete":
        return observations, np.array([0, 1, 2, 1], np.int32), None
    mean = gaussian_mean(model)
    return observations, (mean + np.array([[1.0], [-1.0], [-0.5], [-1.5]])).astype(np.float32), None


def sign_check_batch(trainer_name, kind, model):
    observations, actions, mask = inputs(kind, model)
    rewards = np.array([1.0, 0.0, 0.0, 0.0], np.float32)
    token_mask = {} if mask is None else {"mask": mask}
    if trainer_name == "reinforce":
        return {"observations": observations, "actions": actions, "rewards": rewards,
                "dones": np.ones(BATCH, bool), **token_mask}
    if trainer_name == "ppo":
        log_probs = np_log_probs(kind, model, observations, actions, mask).astype(np.float32)
        return {"observations": observations, "actions": actions, "rewards": rewards,
                "values": np.zeros(BATCH, np.float32), "log_probs": log_probs, "dones": np.ones(BATCH, bool)}
    if trainer_name == "grpo":  # two groups of two; the second has equal rewards
        batch = {"observations": observations, "actions": actions,
                 "rewards": np.array([1.0, 0.0, 0.5, 0.5], np.float32), "group_size": 2, **token_mask}
        if kind == "token":  # per-token old log-probs
            batch["log_probs"] = np_token_terms(model, observations, actions)[0].astype(np.float32)
        elif kind == "discrete":  # per-sequence old log-probs
            batch["log_probs"] = np_log_probs(kind, model, observations, actions).astype(np.float32)
        return batch  # gaussian: on-policy, no old log-probs
    # dpo: row 0 is chosen against each of the other rows
    chosen = {"chosen_observations": observations[1:], "chosen_actions": np.repeat(actions[:1], 3, 0)}
    rejected = {"rejected_observations": observations[1:], "rejected_actions": actions[1:]}
    if mask is not None:
        chosen["chosen_mask"], rejected["rejected_mask"] = np.repeat(mask[:1], 3, 0), mask[1:]
    ref_chosen = np_log_probs(kind, model, observations[1:], chosen["chosen_actions"], chosen.get("chosen_mask"))
    ref_rejected = np_log_probs(kind, model, observations[1:], actions[1:], rejected.get("rejected_mask"))
    return {**chosen, **rejected, "ref_chosen_log_probs": ref_chosen.astype(np.float32),
            "ref_rejected_log_probs": ref_rejected.astype(np.float32)}


def preference(kind, model, batch, trainer_name):
    """What the update should increase: log pi of the rewarded sample (DPO: chosen minus rejected)."""
    if kind == "gaussian":
        return gaussian_mean(model)  # the rewarded action lies above the initial mean
    if trainer_name == "dpo":
        chosen = np_log_probs(kind, model, batch["chosen_observations"], batch["chosen_actions"],
                              batch.get("chosen_mask"))
        rejected = np_log_probs(kind, model, batch["rejected_observations"], batch["rejected_actions"],
                                batch.get("rejected_mask"))
        return float(np.mean(chosen - rejected))
    log_probs = np_log_probs(kind, model, batch["observations"], batch["actions"], batch.get("mask"))
    return float(log_probs[0])


TRAINERS = {
    "reinforce": (REINFORCETrainer, REINFORCEConfig(), False),
    "ppo": (PPOTrainer, PPOConfig(), True),
    "grpo": (GRPOTrainer, GRPOConfig(), False),
    "dpo": (DPOTrainer, DPOConfig(), False),
}
METRICS = {
    "reinforce": {"loss", "policy_loss", "mean_reward", "reward_std", "entropy", "grad_norm"},
    "ppo": {"loss", "policy_loss", "value_loss", "entropy", "mean_reward", "advantage_mean",
            "kl_divergence", "approx_kl", "clip_fraction", "explained_variance", "grad_norm"},
    "grpo": {"loss", "policy_loss", "mean_reward", "group_advantage_std", "kl_penalty", "approx_kl",
             "entropy", "frac_reward_zero_std", "clip_ratio"},
    "dpo": {"loss", "dpo_loss", "chosen_reward", "rejected_reward", "reward_margin", "reward_accuracy",
            "logps_chosen", "logps_rejected"},
}
# PPO scores one action per step; a token model's completions are token-level PPO (a `mask`)
CASES = [(name, kind) for name in TRAINERS for kind in POLICIES if (name, kind) != ("ppo", "token")]


@pytest.fixture(scope="module", params=CASES, ids=[f"{n}-{k}" for n, k in CASES])
def one_step(request):
    """One `train_step` per (trainer, policy kind), shared by the tests that inspect it."""
    name, kind = request.param
    trainer_class, config, actor_critic = TRAINERS[name]
    model = make_model(kind, actor_critic)
    tx = optax.adam(0.02) if name == "grpo" else optax.sgd(0.2)
    trainer = make_trainer(trainer_class, model, config, tx)
    batch = sign_check_batch(name, kind, model)
    before = preference(kind, model, batch, name)
    metrics = trainer.train_step(batch)
    after = preference(kind, model, batch, name)
    return {"name": name, "kind": kind, "trainer": trainer, "batch": batch, "metrics": metrics,
            "before": before, "after": after}


def test_update_favours_the_rewarded_sample(one_step):
    assert one_step["after"] > one_step["before"] + 1e-4, one_step["name"]


def test_documented_metrics_are_present_and_finite(one_step):
    metrics = one_step["metrics"]
    missing = METRICS[one_step["name"]] - set(metrics)
    assert not missing
    for key, value in metrics.items():
        assert np.ndim(value) == 0 and np.isfinite(float(value)), key


def test_step_metrics_measured_before_the_update(one_step):
    name, metrics = one_step["name"], one_step["metrics"]
    if name == "dpo":  # reference = initial policy, so every implicit reward starts at 0
        assert float(metrics["chosen_reward"]) == pytest.approx(0.0, abs=1e-5)
        assert float(metrics["reward_margin"]) == pytest.approx(0.0, abs=1e-5)
        assert float(metrics["dpo_loss"]) == pytest.approx(math.log(2), abs=1e-5)
    elif name == "grpo":
        assert float(metrics["frac_reward_zero_std"]) == pytest.approx(0.5)
        assert float(metrics["mean_reward"]) == pytest.approx(0.5)
        assert float(metrics["approx_kl"]) == pytest.approx(0.0, abs=1e-5)
    else:
        assert float(metrics["mean_reward"]) == pytest.approx(0.25)
        assert float(metrics["reward_std"] if name == "reinforce" else metrics["advantage_mean"]) == (
            pytest.approx(math.sqrt(3) / 4 if name == "reinforce" else 0.25, rel=1e-5))


# ----------------------------------------------------------------- jit reuse


def test_train_step_compiles_once_per_shape():
    model = make_model("discrete")
    trainer = make_trainer(REINFORCETrainer, model)
    batch = sign_check_batch("reinforce", "discrete", model)
    trainer.train_step(batch)
    trainer.train_step(batch)
    assert trainer.trace_count == 1
    aliased = {("states" if k == "observations" else k): v for k, v in batch.items()}
    metrics = trainer.train_step(aliased)  # the documented alias is the same batch
    assert trainer.trace_count == 1 and np.isfinite(float(metrics["loss"]))
    longer = {k: np.concatenate([v, v]) for k, v in batch.items()}
    trainer.train_step(longer)
    assert trainer.trace_count == 2


# ----------------------------------------------------------------- bad input

REQUIRED = {
    "reinforce": ("observations", "actions", "rewards"),
    "ppo": ("observations", "actions", "rewards", "values", "log_probs"),
    "grpo": ("observations", "actions", "rewards"),
    "dpo": ("chosen_observations", "chosen_actions", "rejected_observations", "rejected_actions",
            "ref_chosen_log_probs", "ref_rejected_log_probs"),
}


def fresh(name, kind="discrete", config=None, **kwargs):
    trainer_class, default_config, actor_critic = TRAINERS[name]
    model = make_model(kind, actor_critic)
    trainer = make_trainer(trainer_class, model, config or default_config, **kwargs)
    return trainer, sign_check_batch(name, kind, model)


@pytest.mark.parametrize(("name", "key"), [(n, k) for n, keys in REQUIRED.items() for k in keys])
def test_missing_required_key_is_named(name, key):
    trainer, batch = fresh(name)
    del batch[key]
    with pytest.raises(ValueError, match=key):
        trainer.train_step(batch)


@pytest.mark.parametrize("name", list(TRAINERS))
def test_unknown_key_is_rejected(name):
    trainer, batch = fresh(name)
    with pytest.raises(ValueError, match="advantage"):
        trainer.train_step({**batch, "advantage": np.zeros(BATCH)})


@pytest.mark.parametrize(("name", "key"), [("reinforce", "actions"), ("ppo", "log_probs"), ("ppo", "values"),
                                           ("grpo", "observations"), ("dpo", "rejected_actions"),
                                           ("dpo", "ref_chosen_log_probs")])
def test_mismatched_leading_shape_is_named(name, key):
    trainer, batch = fresh(name)
    batch[key] = np.concatenate([batch[key], batch[key][:1], batch[key][:1]])
    with pytest.raises(ValueError, match=key):
        trainer.train_step(batch)


@pytest.mark.parametrize("name", ["reinforce", "ppo", "grpo"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rewards_are_rejected(name, bad):
    trainer, batch = fresh(name)
    batch["rewards"] = batch["rewards"].copy()
    batch["rewards"][2] = bad
    with pytest.raises(ValueError, match="rewards"):
        trainer.train_step(batch)


def test_group_size_must_divide_the_batch():
    trainer, batch = fresh("grpo")
    with pytest.raises(ValueError, match="group_size=3"):
        trainer.train_step({**batch, "group_size": 3})
    trainer, batch = fresh("grpo", config=GRPOConfig(num_generations=3))
    del batch["group_size"]
    with pytest.raises(ValueError, match="group_size=3"):
        trainer.train_step(batch)


def test_ppo_batch_must_split_into_minibatches():
    trainer, batch = fresh("ppo", config=PPOConfig(num_minibatches=3))
    with pytest.raises(ValueError, match="num_minibatches"):
        trainer.train_step(batch)


def test_ppo_needs_an_actor_critic():
    model = make_model("discrete")
    trainer = make_trainer(PPOTrainer, model)
    _, batch = fresh("ppo")
    with pytest.raises(ValueError, match="actor-critic"):
        trainer.train_step(batch)


def test_truncation_without_bootstrap_values_is_rejected():
    trainer, batch = fresh("reinforce")
    with pytest.raises(ValueError, match="bootstrap_values"):
        trainer.train_step({**batch, "truncated": np.zeros(BATCH, bool)})


def test_dpo_rejects_precomputed_policy_log_probs():
    trainer, _ = fresh("dpo")
    precomputed = {"chosen_log_probs": np.zeros(3), "rejected_log_probs": np.zeros(3),
                   "ref_chosen_log_probs": np.zeros(3), "ref_rejected_log_probs": np.zeros(3)}
    with pytest.raises(ValueError, match="from the model, so precomputed 'chosen_log_probs'"):
        trainer.train_step(precomputed)
    simpo, _ = fresh("dpo", config=DPOConfig(reference_free=True))
    with pytest.raises(ValueError, match="chosen_observations"):
        simpo.train_step(precomputed)


@pytest.mark.parametrize("key", ["ref_chosen_log_probs", "ref_rejected_log_probs"])
def test_dpo_without_reference_names_the_missing_key(key):
    trainer, batch = fresh("dpo")
    del batch[key]
    with pytest.raises(ValueError, match=key):
        trainer.train_step(batch)


def test_trainer_rejects_another_trainers_config():
    with pytest.raises(TypeError, match="PPOConfig"):
        make_trainer(PPOTrainer, make_model("discrete", True), REINFORCEConfig())


# ----------------------------------------------------------------- DPO reference model and SimPO


def test_dpo_with_reference_model_matches_numpy():
    model, reference = make_model("discrete", seed=0), make_model("discrete", seed=1)
    trainer = make_trainer(DPOTrainer, model, DPOConfig(beta=0.5), reference_model=reference)
    batch = sign_check_batch("dpo", "discrete", model)
    del batch["ref_chosen_log_probs"], batch["ref_rejected_log_probs"]
    sides = {}
    for side in ("chosen", "rejected"):
        args = batch[f"{side}_observations"], batch[f"{side}_actions"]
        sides[side] = np_log_probs("discrete", model, *args) - np_log_probs("discrete", reference, *args)
    before = preference("discrete", model, batch, "dpo")
    metrics = trainer.train_step(batch)
    h = sides["chosen"] - sides["rejected"]
    assert float(metrics["chosen_reward"]) == pytest.approx(0.5 * sides["chosen"].mean(), rel=1e-4)
    assert float(metrics["rejected_reward"]) == pytest.approx(0.5 * sides["rejected"].mean(), rel=1e-4)
    assert float(metrics["reward_accuracy"]) == pytest.approx(np.mean(h > 0))
    assert float(metrics["dpo_loss"]) == pytest.approx(np.mean(np.log1p(np.exp(-0.5 * h))), rel=1e-4)
    assert preference("discrete", model, batch, "dpo") > before


def test_simpo_loss_is_length_normalised_with_margin():
    model = make_model("token")
    config = DPOConfig(beta=2.0, reference_free=True, simpo_gamma=0.3)
    trainer = make_trainer(DPOTrainer, model, config)
    batch = sign_check_batch("dpo", "token", model)
    del batch["ref_chosen_log_probs"], batch["ref_rejected_log_probs"]
    average = {}
    for side in ("chosen", "rejected"):
        log_probs, _ = np_token_terms(model, batch[f"{side}_observations"], batch[f"{side}_actions"])
        mask = batch[f"{side}_mask"]
        average[side] = np.sum(np.where(mask, log_probs, 0), 1) / mask.sum(1)
    z = 2.0 * (average["chosen"] - average["rejected"]) - 0.3
    metrics = trainer.train_step(batch)
    assert float(metrics["dpo_loss"]) == pytest.approx(np.mean(np.log1p(np.exp(-z))), rel=1e-4)
    assert float(metrics["logps_rejected"]) == pytest.approx(average["rejected"].mean(), rel=1e-4)


# ----------------------------------------------------------------- PPO options


def ppo_terminal_batch(model, rewards, old_values):
    """Every step ends its episode, so advantages are r - V_old and value targets are r."""
    observations, actions, _ = inputs("discrete", model)
    log_probs = np_log_probs("discrete", model, observations, actions).astype(np.float32)
    return {"observations": observations, "actions": actions, "rewards": rewards,
            "values": old_values, "log_probs": log_probs, "dones": np.ones(BATCH, bool)}


@pytest.mark.parametrize("clip_value_loss", [False, True])
def test_ppo_value_loss_formula(clip_value_loss):
    model = make_model("discrete", actor_critic=True)
    trainer = make_trainer(PPOTrainer, model, PPOConfig(clip_value_loss=clip_value_loss, clip_param=0.2))
    rewards = np.array([1.0, -0.5, 2.0, 0.3], np.float32)
    values = np.asarray(model(jnp.asarray(inputs("discrete", model)[0]))[1], np.float64)[:, 0]
    old_values = (values + np.array([0.05, -0.5, 0.6, -0.1])).astype(np.float32)  # two within the clip
    metrics = trainer.train_step(ppo_terminal_batch(model, rewards, old_values))
    error = (values - rewards) ** 2
    if clip_value_loss:
        clipped = old_values + np.clip(values - old_values, -0.2, 0.2)
        error = np.maximum(error, (clipped - rewards) ** 2)
    assert float(metrics["value_loss"]) == pytest.approx(0.5 * error.mean(), rel=1e-4)
    assert float(metrics["advantage_mean"]) == pytest.approx(np.mean(rewards - old_values), rel=1e-4)


def test_ppo_target_kl_stops_further_updates():
    def train(config):
        model = make_model("discrete", actor_critic=True)
        trainer = make_trainer(PPOTrainer, model, config, optax.sgd(2.0))
        rewards = np.array([1.0, 0.0, -1.0, 0.5], np.float32)
        trainer.train_step(ppo_terminal_batch(model, rewards, np.zeros(BATCH, np.float32)))
        return np.asarray(model.policy.linear.kernel[...])

    one_step = train(PPOConfig())
    stopped = train(PPOConfig(num_epochs=2, target_kl=1e-6))
    unstopped = train(PPOConfig(num_epochs=2))
    np.testing.assert_allclose(stopped, one_step, rtol=1e-5, atol=1e-6)
    assert np.max(np.abs(unstopped - one_step)) > 1e-3


def test_ppo_terminated_wins_over_truncated_on_the_same_step():
    """Gymnasium may flag both at a time limit that ends the episode: no bootstrap then."""
    model = make_model("discrete", actor_critic=True)
    trainer = make_trainer(PPOTrainer, model, PPOConfig(gamma=0.5, gae_lambda=1.0))
    observations, actions, _ = inputs("discrete", model)
    rewards = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    batch = {"observations": observations, "actions": actions, "rewards": rewards,
             "values": np.zeros(BATCH, np.float32),
             "log_probs": np_log_probs("discrete", model, observations, actions).astype(np.float32),
             "terminated": np.array([False, True, False, True]),
             "truncated": np.array([True, True, False, False]),
             "bootstrap_values": np.array([10.0, 100.0, 0.0, 0.0], np.float32)}
    metrics = trainer.train_step(batch)
    # by hand: step 0 truncated -> 1 + 0.5 * 10; step 1 terminated -> 2; steps 2, 3: 3 + 0.5 * 4, 4
    assert float(metrics["advantage_mean"]) == pytest.approx((6.0 + 2.0 + 5.0 + 4.0) / 4, rel=1e-5)


# ----------------------------------------------------------------- GRPO options


def grpo_token_batch(model, rewards):
    observations, actions, mask = inputs("token", model)
    current, _ = np_token_terms(model, observations, actions)
    offsets = np.random.default_rng(0).uniform(-0.4, 0.4, size=current.shape)  # some ratios clip
    return {"observations": observations, "actions": actions, "rewards": rewards, "mask": mask,
            "group_size": 2, "log_probs": (current + offsets).astype(np.float32)}


def np_aggregate(token_loss, mask, loss_type):
    """The docstring's aggregations, written as loops."""
    if loss_type == "grpo":
        rows = [token_loss[b][mask[b]].mean() for b in range(len(mask)) if mask[b].any()]
        return sum(rows) / len(rows)
    if loss_type in ("bnpo", "dapo"):
        return token_loss[mask].sum() / mask.sum()
    return token_loss[mask].sum() / token_loss.size  # dr_grpo


def np_grpo_token_loss(model, batch, low, high, beta=0.0, entropy_coeff=0.0, ref=None):
    current, entropy = np_token_terms(model, batch["observations"], batch["actions"])
    advantages = np_group_advantages(batch["rewards"], batch["group_size"])[:, None]
    ratio = np.exp(current - batch["log_probs"])
    surrogate = -np.minimum(ratio * advantages, np.clip(ratio, 1 - low, 1 + high) * advantages)
    kl = 0.0 if ref is None else np.exp(ref - current) - 1 - (ref - current)
    return surrogate, surrogate + beta * kl - entropy_coeff * entropy, kl


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_grpo_loss_types_aggregate_tokens_as_documented(loss_type):
    model = make_model("token")
    high = 0.28 if loss_type == "dapo" else 0.2
    config = GRPOConfig(loss_type=loss_type, beta=0.0, entropy_coeff=0.0,
                        epsilon_high=high if loss_type == "dapo" else None)
    trainer = make_trainer(GRPOTrainer, model, config)
    batch = grpo_token_batch(model, np.array([1.0, 0.0, 0.2, 0.9], np.float32))
    surrogate, _, _ = np_grpo_token_loss(model, batch, 0.2, high)
    metrics = trainer.train_step(batch)
    want = np_aggregate(surrogate, batch["mask"], loss_type)
    assert float(metrics["policy_loss"]) == pytest.approx(want, rel=1e-4, abs=1e-6)
    assert float(metrics["loss"]) == pytest.approx(want, rel=1e-4, abs=1e-6)


def test_grpo_masks_zero_std_groups_from_the_average():
    model = make_model("token")
    trainer = make_trainer(GRPOTrainer, model, GRPOConfig(mask_zero_std_groups=True, beta=0.0))
    batch = grpo_token_batch(model, np.array([1.0, 0.0, 0.5, 0.5], np.float32))
    _, token_loss, _ = np_grpo_token_loss(model, batch, 0.2, 0.2, entropy_coeff=0.01)
    kept = batch["mask"] & np.array([True, True, False, False])[:, None]
    metrics = trainer.train_step(batch)
    assert float(metrics["loss"]) == pytest.approx(np_aggregate(token_loss, kept, "grpo"), rel=1e-4)
    assert float(metrics["frac_reward_zero_std"]) == pytest.approx(0.5)
    assert np_aggregate(token_loss, kept, "grpo") != pytest.approx(
        np_aggregate(token_loss, batch["mask"], "grpo"), rel=1e-3)  # the mask matters here


def test_grpo_kl_term_only_with_reference_log_probs():
    model = make_model("token")
    trainer = make_trainer(GRPOTrainer, model, GRPOConfig(beta=0.1, entropy_coeff=0.0), optax.sgd(0.0))
    batch = grpo_token_batch(model, np.array([1.0, 0.0, 0.2, 0.9], np.float32))
    without = trainer.train_step(batch)
    assert float(without["kl_penalty"]) == 0.0
    ref = (batch["log_probs"] - 0.3).astype(np.float32)
    with_ref = trainer.train_step({**batch, "ref_log_probs": ref})
    surrogate, token_loss, kl = np_grpo_token_loss(model, batch, 0.2, 0.2, beta=0.1, ref=ref)
    assert float(with_ref["kl_penalty"]) == pytest.approx(np_aggregate(kl, batch["mask"], "grpo"), rel=1e-4)
    assert float(with_ref["kl_penalty"]) > 0
    assert float(with_ref["loss"]) == pytest.approx(np_aggregate(token_loss, batch["mask"], "grpo"), rel=1e-4)
    assert float(without["loss"]) == pytest.approx(np_aggregate(surrogate, batch["mask"], "grpo"), rel=1e-4)


def test_grpo_per_token_rewards_become_discounted_sequence_rewards():
    model = make_model("token")
    trainer = make_trainer(GRPOTrainer, model, GRPOConfig(gamma=0.5))
    observations, actions, mask = inputs("token", model)
    token_rewards = np.arange(BATCH * SEQ_LEN, dtype=np.float32).reshape(BATCH, SEQ_LEN) / 10
    batch = {"observations": observations, "actions": actions, "rewards": token_rewards, "mask": mask,
             "log_probs": np_token_terms(model, observations, actions)[0].astype(np.float32)}
    metrics = trainer.train_step(batch)
    sequence_rewards = [sum(0.5**t * token_rewards[b, t] for t in range(SEQ_LEN) if mask[b, t])
                        for b in range(BATCH)]
    assert float(metrics["mean_reward"]) == pytest.approx(np.mean(sequence_rewards), rel=1e-5)


def test_ppo_time_major_batch_with_trajectory_keys_matches_a_gae_loop():
    """`[T, N]` with every key `Trajectory.as_batch` yields; V(s_T) comes from bootstrap_values[-1]."""
    model = make_model("discrete", actor_critic=True)
    gamma, lam = 0.9, 0.8
    trainer = make_trainer(PPOTrainer, model, PPOConfig(gamma=gamma, gae_lambda=lam))
    rng = np.random.default_rng(0)
    steps, envs = 3, 2
    rewards = rng.normal(size=(steps, envs)).astype(np.float32)
    values = rng.normal(size=(steps, envs)).astype(np.float32)
    bootstrap = rng.normal(size=(steps, envs)).astype(np.float32)
    terminated = np.array([[False, True], [False, False], [False, False]])
    truncated = np.array([[True, False], [False, False], [False, True]])
    observations = np.tile(OBSERVATION, (steps, envs, 1))
    actions = rng.integers(0, NUM_ACTIONS, size=(steps, envs)).astype(np.int32)
    log_probs = np_log_probs("discrete", model, observations, actions).astype(np.float32)
    batch = {"observations": observations, "actions": actions, "rewards": rewards,
             "dones": terminated | truncated, "terminated": terminated, "truncated": truncated,
             "values": values, "log_probs": log_probs, "bootstrap_values": bootstrap}
    advantages = np.zeros((steps, envs))
    for n in range(envs):
        following = 0.0
        for t in reversed(range(steps)):
            if terminated[t, n]:
                next_value, following = 0.0, 0.0
            elif truncated[t, n] or t == steps - 1:
                next_value, following = bootstrap[t, n], 0.0
            else:
                next_value = values[t + 1, n]
            following = rewards[t, n] + gamma * next_value - values[t, n] + gamma * lam * following
            advantages[t, n] = following
    metrics = trainer.train_step(batch)
    assert float(metrics["advantage_mean"]) == pytest.approx(advantages.mean(), rel=1e-5)
    assert float(metrics["mean_reward"]) == pytest.approx(rewards.mean(), rel=1e-5)
