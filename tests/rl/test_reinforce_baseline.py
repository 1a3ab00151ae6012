"""REINFORCE's optional EMA baseline per task key: the baseline sequence and advantages over
successive updates against a plain Python loop, unchanged defaults, and config errors."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from rollax import REINFORCEConfig, REINFORCETrainer
from rollax.rl.registry import get_algorithm

OBS_DIM, NUM_ACTIONS, T, N = 3, 3, 2, 4  # time-major [T, N] batches of two-step episodes
GAMMA, DECAY = 0.9, 0.8
RNG = np.random.default_rng(0)


class LinearSoftmax(nnx.Module):
    def __init__(self, seed: int = 0):
        self.linear = nnx.Linear(OBS_DIM, NUM_ACTIONS, rngs=nnx.Rngs(seed))

    def __call__(self, observations):
        return self.linear(observations)


def make_trainer(config):
    model = LinearSoftmax()
    return REINFORCETrainer(model, nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param), config)


def np_log_probs(model, observations, actions):
    kernel = np.asarray(model.linear.kernel[...], np.float64)
    bias = np.asarray(model.linear.bias[...], np.float64)
    logits = np.asarray(observations, np.float64) @ kernel + bias
    logits -= logits.max(-1, keepdims=True)
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return np.take_along_axis(log_softmax, np.asarray(actions)[..., None], -1)[..., 0]


def loop_returns(rewards, dones, gamma):
    """Discounted returns of a time-major batch, one env and one step at a time."""
    returns = np.zeros(rewards.shape)
    for n in range(rewards.shape[1]):
        running = 0.0
        for t in reversed(range(rewards.shape[0])):
            running = rewards[t, n] + gamma * (0.0 if dones[t, n] else running)
            returns[t, n] = running
    return returns


def np_normalize(x):
    return (x - x.mean()) / (x.std() + 1e-8)


DONES = np.array([[False] * N, [True] * N])
# Batch 1 and 3 hold both keys; batch 2 only key 0, so key 1 must keep its baseline there.
TASK_IDS = [np.array([[0, 1, 0, 1]] * T), np.zeros((T, N), np.int32), np.array([[1, 1, 0, 1]] * T)]


def batches():
    out = []
    for task_ids in TASK_IDS:
        out.append({
            "observations": RNG.normal(size=(T, N, OBS_DIM)).astype(np.float32),
            "actions": RNG.integers(0, NUM_ACTIONS, size=(T, N)).astype(np.int32),
            "rewards": RNG.normal(size=(T, N)).astype(np.float32) + 2.0 * task_ids,
            "dones": DONES, "task_ids": task_ids.astype(np.int32),
        })
    return out


BATCHES = batches()


@pytest.mark.parametrize("normalize", [False, True])
def test_ema_baseline_and_advantages_over_three_updates_match_a_loop(normalize):
    config = REINFORCEConfig(gamma=GAMMA, normalize_returns=normalize, entropy_coeff=0.0,
                             baseline="ema", ema_decay=DECAY, num_baseline_keys=2)
    trainer = make_trainer(config)
    state = trainer.algorithm_state
    np.testing.assert_array_equal(np.asarray(state["baseline"]), [0.0, 0.0])
    assert state["baseline"].dtype == jnp.float32 and state["count"].dtype == jnp.int32

    baseline, seen = {0: 0.0, 1: 0.0}, {0: 0, 1: 0}
    for batch in BATCHES:
        returns = loop_returns(batch["rewards"].astype(np.float64), batch["dones"], GAMMA)
        ids = batch["task_ids"]
        subtracted = np.array([[baseline[int(k)] for k in row] for row in ids])
        advantages = returns - subtracted  # the baseline before this batch
        if normalize:
            advantages = np_normalize(advantages)
        log_probs = np_log_probs(trainer.model, batch["observations"], batch["actions"])
        expected_loss = -np.mean(log_probs * advantages)
        for key in (0, 1):
            if (ids == key).any():
                mean = returns[ids == key].mean()
                baseline[key] = mean if seen[key] == 0 else DECAY * baseline[key] + (1 - DECAY) * mean
                seen[key] += 1

        metrics = trainer.train_step(batch)
        assert float(metrics["policy_loss"]) == pytest.approx(expected_loss, rel=1e-5, abs=1e-6)
        assert float(metrics["baseline_mean"]) == pytest.approx(subtracted.mean(), rel=1e-5, abs=1e-6)
        state = trainer.algorithm_state
        np.testing.assert_allclose(np.asarray(state["baseline"]), [baseline[0], baseline[1]], rtol=1e-5)
        np.testing.assert_array_equal(np.asarray(state["count"]), [seen[0], seen[1]])
    assert trainer.trace_count == 1


def test_without_task_ids_everything_is_key_zero():
    config = REINFORCEConfig(gamma=GAMMA, normalize_returns=False, baseline="ema", ema_decay=DECAY)
    trainer = make_trainer(config)
    batch = {k: v for k, v in BATCHES[0].items() if k != "task_ids"}
    trainer.train_step(batch)
    returns = loop_returns(batch["rewards"].astype(np.float64), DONES, GAMMA)
    np.testing.assert_allclose(np.asarray(trainer.algorithm_state["baseline"]), [returns.mean()], rtol=1e-5)


def test_default_config_keeps_the_plain_behaviour():
    config = REINFORCEConfig(gamma=GAMMA)
    assert (config.baseline, config.ema_decay, config.num_baseline_keys) == ("none", 0.95, 1)
    trainer = make_trainer(config)
    assert trainer.algorithm_state == ()
    batch = {k: v for k, v in BATCHES[0].items() if k != "task_ids"}
    returns = loop_returns(batch["rewards"].astype(np.float64), DONES, GAMMA)
    log_probs = np_log_probs(trainer.model, batch["observations"], batch["actions"])
    metrics = trainer.train_step(batch)
    assert trainer.algorithm_state == ()
    assert "baseline_mean" not in metrics
    assert float(metrics["policy_loss"]) == pytest.approx(-np.mean(log_probs * np_normalize(returns)), rel=1e-5)


def test_registered_init_state_is_the_trainers():
    algorithm = get_algorithm("reinforce")
    assert REINFORCETrainer.algorithm is algorithm
    assert algorithm.init_state(REINFORCEConfig()) == ()
    state = algorithm.init_state(REINFORCEConfig(baseline="ema", num_baseline_keys=3))
    assert state["baseline"].shape == (3,) and state["count"].shape == (3,)


@pytest.mark.parametrize(("field", "value"), [
    ("baseline", "mean"), ("baseline", None), ("ema_decay", 1.0), ("ema_decay", -0.1),
    ("num_baseline_keys", 0), ("num_baseline_keys", 1.5),
])
def test_invalid_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        REINFORCEConfig(**{field: value})


@pytest.mark.parametrize("task_ids", [
    np.full((T, N), 2, np.int32),  # out of range for two keys
    np.full((T, N), -1, np.int32),
    np.zeros((T, N), np.float32),  # not integers
    np.zeros((T, N + 1), np.int32),  # wrong shape
])
def test_bad_task_ids_are_named(task_ids):
    trainer = make_trainer(REINFORCEConfig(baseline="ema", num_baseline_keys=2))
    with pytest.raises(ValueError, match="task_ids"):
        trainer.train_step({**BATCHES[0], "task_ids": task_ids})
