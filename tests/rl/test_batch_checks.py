"""Bad trainer batches are rejected on the host, naming the key, before anything is traced.

One tiny model and trainer per algorithm (module-scoped: each JAX compile costs seconds). The
regression tests are the reported cases (NaN parameters after one step, NaN losses, silent
broadcasting, JAX-internal messages); the property suite corrupts one key of a random valid
batch at a time and checks the error names it and the parameters stay as they were.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollax import (
    DPOTrainer,
    GRPOTrainer,
    PPOTrainer,
    REINFORCETrainer,
    RLOOTrainer,
)
from rollax.networks.distributions import Categorical, DiagGaussian

OBS_DIM, NUM_ACTIONS, VOCAB, SEQ_LEN, T, N, B = 3, 3, 5, 3, 2, 2, 4


class Discrete(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(OBS_DIM, NUM_ACTIONS, rngs=rngs)

    def __call__(self, observations):
        return Categorical(self.linear(observations))


class GaussianActorCritic(nnx.Module):
    def __init__(self, rngs):
        self.mean, self.value = nnx.Linear(OBS_DIM, 1, rngs=rngs), nnx.Linear(OBS_DIM, 1, rngs=rngs)
        self.log_std = nnx.Param(jnp.zeros((1,)))

    def __call__(self, observations):
        mean = self.mean(observations)
        return DiagGaussian(mean, jnp.broadcast_to(self.log_std[...], mean.shape)), self.value(observations)


class Tokens(nnx.Module):
    def __init__(self, rngs):
        self.table = nnx.Param(0.1 * jax.random.normal(rngs.params(), (VOCAB, VOCAB)))

    def __call__(self, tokens):
        return Categorical(self.table[...][tokens])


TRAINERS = {"reinforce": (REINFORCETrainer, Discrete), "ppo": (PPOTrainer, GaussianActorCritic),
            "grpo": (GRPOTrainer, Tokens), "rloo": (RLOOTrainer, Discrete), "dpo": (DPOTrainer, Discrete)}


def valid_batch(name, rng):
    """A random valid batch of fixed shapes (so valid batches compile once per trainer)."""
    def floats(*shape, low=-1.0, high=1.0):
        return rng.uniform(low, high, shape).astype(np.float32)

    def choices(*shape, n=NUM_ACTIONS):
        return rng.integers(0, n, shape).astype(np.int32)

    def near_uniform(n, *shape):  # old log-probs near the fresh policy's, so the clipped
        return np.float32(-np.log(n)) + floats(*shape, low=-0.05, high=0.05)  # ratio has a gradient

    if name == "reinforce":
        return {"observations": floats(T, N, OBS_DIM), "actions": choices(T, N), "rewards": floats(T, N),
                "dones": rng.random((T, N)) < 0.5}
    if name == "ppo":
        return {"observations": floats(T, N, OBS_DIM), "actions": floats(T, N, 1), "rewards": floats(T, N),
                "values": floats(T, N), "log_probs": floats(T, N, low=-3, high=0), "dones": np.ones((T, N), bool)}
    if name == "grpo":
        mask = np.ones((B, SEQ_LEN), bool)
        mask[1, -1] = False
        return {"observations": choices(B, SEQ_LEN, n=VOCAB), "actions": choices(B, SEQ_LEN, n=VOCAB),
                "mask": mask, "rewards": floats(B), "log_probs": near_uniform(VOCAB, B, SEQ_LEN),
                "ref_log_probs": floats(B, SEQ_LEN, low=-3, high=0), "group_size": 2}
    if name == "rloo":
        return {"observations": floats(B, OBS_DIM), "actions": choices(B), "rewards": floats(B),
                "log_probs": near_uniform(NUM_ACTIONS, B), "ref_log_probs": floats(B, low=-3, high=0),
                "group_size": 2}
    return {"chosen_observations": floats(3, OBS_DIM), "chosen_actions": choices(3),
            "rejected_observations": floats(3, OBS_DIM), "rejected_actions": choices(3),
            "ref_chosen_log_probs": floats(3, low=-3, high=0), "ref_rejected_log_probs": floats(3, low=-3, high=0)}


@pytest.fixture(scope="module")
def trainers():
    out = {}
    for name, (trainer_class, model_class) in TRAINERS.items():
        model = model_class(nnx.Rngs(0))
        out[name] = trainer_class(model, nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param))
    return out


def parameters(trainer):
    return [np.array(leaf) for leaf in jax.tree.leaves(nnx.state(trainer.model, nnx.Param))]


def assert_rejected(trainer, batch, key, *fragments):
    """ValueError naming `batch[key]` (and each fragment); no parameter moved, nothing traced."""
    before, traces = parameters(trainer), trainer.trace_count
    with pytest.raises(ValueError) as caught:
        trainer.train_step(batch)
    message = str(caught.value)
    assert f"'{key}'" in message, message
    for fragment in fragments:
        assert re.search(fragment, message), message
    assert trainer.trace_count == traces
    for old, new in zip(before, parameters(trainer), strict=True):
        np.testing.assert_array_equal(old, new)


# ----------------------------------------------------------------- the reported cases


@pytest.mark.parametrize(("name", "key"), [("reinforce", "observations"), ("ppo", "observations"),
                                           ("ppo", "values"), ("ppo", "log_probs"), ("ppo", "actions"),
                                           ("grpo", "log_probs"), ("grpo", "ref_log_probs"),
                                           ("rloo", "ref_log_probs"), ("dpo", "ref_chosen_log_probs"),
                                           ("dpo", "rejected_observations")])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_values_are_rejected_before_they_reach_the_parameters(trainers, name, key, bad):
    batch = valid_batch(name, np.random.default_rng(0))
    batch[key] = batch[key].copy()
    batch[key].flat[1] = bad
    assert_rejected(trainers[name], batch, key, "non-finite")


@pytest.mark.parametrize(("name", "key"), [("reinforce", "rewards"), ("rloo", "rewards"),
                                           ("ppo", "rewards"), ("ppo", "values"), ("grpo", "rewards")])
@pytest.mark.parametrize("size", [3e38, -2e9])
def test_rewards_and_values_whose_sums_overflow_are_rejected(trainers, name, key, size):
    # finite, yet their returns and squares overflow float32: the parameters became NaN
    batch = valid_batch(name, np.random.default_rng(0))
    batch[key] = np.full_like(batch[key], size)
    assert_rejected(trainers[name], batch, key, "magnitude", "1e[+]09")


@pytest.mark.parametrize(("name", "key", "bad"), [
    ("reinforce", "dones", 0.5), ("reinforce", "dones", 2), ("ppo", "dones", -1.0),
    ("grpo", "mask", 0.5), ("grpo", "mask", 2)])
def test_flags_and_masks_must_be_booleans(trainers, name, key, bad):
    batch = valid_batch(name, np.random.default_rng(0))
    batch[key] = np.asarray(batch[key]).astype(np.asarray(bad).dtype)
    batch[key].flat[1] = bad
    where = tuple(int(i) for i in np.unravel_index(1, batch[key].shape))
    assert_rejected(trainers[name], batch, key, "booleans", re.escape(f"got {bad!r} at index {where}"))


def test_flags_given_as_0_and_1_numbers_are_booleans(trainers):
    batch = valid_batch("reinforce", np.random.default_rng(0))
    as_numbers = {**batch, "dones": batch["dones"].astype(np.float32)}
    first = trainers["reinforce"].train_step(batch)
    model = Discrete(nnx.Rngs(0))  # the same start, the same update
    second = REINFORCETrainer(model, nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param))
    np.testing.assert_allclose(float(second.train_step(as_numbers)["loss"]), float(first["loss"]))


@pytest.mark.parametrize(("name", "key"), [("grpo", "mask"), ("dpo", "chosen_mask")])
def test_a_mask_that_leaves_nothing_is_rejected(trainers, name, key):
    batch = valid_batch(name, np.random.default_rng(0))
    shape = batch["mask"].shape if key == "mask" else batch["chosen_actions"].shape
    batch[key] = np.zeros(shape, bool)
    assert_rejected(trainers[name], batch, key, "False everywhere")


def test_integer_rewards_are_rewards(trainers):
    batch = valid_batch("rloo", np.random.default_rng(0))
    batch["rewards"] = np.arange(len(batch["rewards"]), dtype=np.int32)
    assert np.isfinite(float(trainers["rloo"].train_step(batch)["loss"]))


@pytest.mark.parametrize("action", [7, NUM_ACTIONS, -1])
@pytest.mark.parametrize(("name", "key"), [("reinforce", "actions"), ("rloo", "actions"),
                                           ("dpo", "chosen_actions")])
def test_out_of_range_discrete_actions_are_rejected(trainers, name, key, action):
    batch = valid_batch(name, np.random.default_rng(1))
    batch[key] = batch[key].copy()
    batch[key].flat[0] = action
    assert_rejected(trainers[name], batch, key, f"action {action}", rf"\[0, {NUM_ACTIONS}\)")


def test_grpo_token_outside_the_vocabulary_is_rejected(trainers):
    batch = valid_batch("grpo", np.random.default_rng(2))
    batch["actions"] = batch["actions"].copy()
    batch["actions"][2, 1] = VOCAB
    assert_rejected(trainers["grpo"], batch, "actions", f"action {VOCAB}")


def test_dpo_reference_log_probs_shaped_b_by_1_do_not_broadcast(trainers):
    batch = valid_batch("dpo", np.random.default_rng(3))
    batch["ref_chosen_log_probs"] = batch["ref_chosen_log_probs"][:, None]
    assert_rejected(trainers["dpo"], batch, "ref_chosen_log_probs", r"\(3, 1\)", r"expected \(3,\)")


@pytest.mark.parametrize("name", ["grpo", "dpo", "rloo", "reinforce"])
def test_empty_batches_are_rejected(trainers, name):
    batch = {k: v[:0] if isinstance(v, np.ndarray) else v for k, v in valid_batch(name, np.random.default_rng(4)).items()}
    first = next(iter(batch))
    assert_rejected(trainers[name], batch, first, "empty")


@pytest.mark.parametrize(("name", "key"), [("reinforce", "observations"), ("ppo", "observations"),
                                           ("rloo", "observations"), ("dpo", "chosen_observations")])
def test_observations_the_model_was_not_built_for_are_named(trainers, name, key):
    batch = valid_batch(name, np.random.default_rng(5))
    batch[key] = np.concatenate([batch[key], batch[key][..., :1]], axis=-1)  # one feature too many
    assert_rejected(trainers[name], batch, key, "does not accept")


@pytest.mark.parametrize(("name", "key", "change"), [
    ("reinforce", "actions", lambda a: a.astype(np.float32)),  # floats for a categorical policy
    ("ppo", "actions", lambda a: a[..., 0]),  # Gaussian actions without their action axis
    ("ppo", "actions", lambda a: np.concatenate([a, a], -1)),  # would broadcast against the mean
    ("ppo", "values", lambda v: v[..., None]),  # [T, N, 1]
    ("rloo", "log_probs", lambda v: np.stack([v, v], 1)),  # per-token log-probs for RLOO
    ("grpo", "mask", lambda m: m[:, :-1]),  # a mask shorter than the sequences
    ("grpo", "ref_log_probs", lambda v: v[:, 0]),  # sequence-level next to per-token log_probs
    ("grpo", "rewards", lambda v: np.stack([v, v], 1)),  # two "tokens" for three-token sequences
    ("reinforce", "observations", lambda o: o.astype(str)),  # not numbers
])
def test_wrong_shapes_ranks_and_dtypes_are_named(trainers, name, key, change):
    batch = valid_batch(name, np.random.default_rng(6))
    batch[key] = change(batch[key])
    assert_rejected(trainers[name], batch, key)


def test_ppo_needs_a_value_from_the_model():
    model = Discrete(nnx.Rngs(0))
    trainer = PPOTrainer(model, nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param))
    batch = {**valid_batch("ppo", np.random.default_rng(7)),
             "actions": np.zeros((T, N), np.int32)}
    with pytest.raises(ValueError, match="actor-critic"):
        trainer.train_step(batch)
    assert trainer.trace_count == 0


def test_check_batches_false_skips_the_value_checks():
    model = Discrete(nnx.Rngs(0))
    trainer = RLOOTrainer(model, nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param), check_batches=False)
    batch = valid_batch("rloo", np.random.default_rng(8))
    batch["rewards"] = batch["rewards"].copy()
    batch["rewards"][0] = np.nan
    before = parameters(trainer)
    # trusted, not scanned: the NaN reaches the update, which is refused, naming the parameters
    with pytest.raises(ValueError, match=r"RLOOTrainer update made parameters non-finite "
                                         r"\(linear/bias, linear/kernel\).*'mean_reward': nan"):
        trainer.train_step(batch)
    assert all(np.array_equal(a, b) for a, b in zip(before, parameters(trainer), strict=True))
    with pytest.raises(ValueError, match="unknown batch keys"):  # the key checks stay
        trainer.train_step({**batch, "advantages": batch["rewards"]})


# ----------------------------------------------------------------- property-based


def corruptions(name, batch):
    """`(key, kind)` pairs that make `batch` invalid."""
    arrays = {k: v for k, v in batch.items() if isinstance(v, np.ndarray)}
    out = [(k, kind) for k in arrays for kind in ("shorter", "extra_axis", "empty")]
    out += [(k, kind) for k, v in arrays.items() if v.dtype.kind == "f" for kind in ("nan", "inf")]
    discrete_actions = [k for k in arrays if k.endswith("actions") and arrays[k].dtype.kind == "i"]
    out += [(k, kind) for k in discrete_actions for kind in ("too_big", "negative")]
    return out


def corrupt(array, kind, position, size):
    array = array.copy()
    index = np.unravel_index(position % array.size, array.shape)
    if kind in ("nan", "inf"):
        array[index] = np.nan if kind == "nan" else -np.inf
    elif kind == "too_big":
        array[index] = size + position % 3
    elif kind == "negative":
        array[index] = -1 - position % 3
    elif kind == "shorter":
        array = array[:-1]
    elif kind == "extra_axis":  # a trailing axis of 2: no reading of the batch accepts it
        array = np.stack([array, array], -1)
    else:
        array = array[:0]
    return array


@pytest.mark.parametrize("name", list(TRAINERS))
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_one_corrupted_key_is_named_and_nothing_trains(trainers, name, data):
    batch = valid_batch(name, np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed")))
    key, kind = data.draw(st.sampled_from(corruptions(name, batch)), label="corruption")
    position = data.draw(st.integers(0, 1000), label="position")
    size = VOCAB if name == "grpo" else NUM_ACTIONS
    batch[key] = corrupt(batch[key], kind, position, size)
    assert_rejected(trainers[name], batch, key)


@pytest.mark.parametrize("name", list(TRAINERS))
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16))
def test_valid_random_batches_still_train(trainers, name, seed):
    trainer = trainers[name]
    batch = valid_batch(name, np.random.default_rng(seed))
    if name in ("grpo", "rloo"):  # old log-probs from the current policy, as a collector gives them:
        # random ones can clip every ratio and leave no gradient (PPO keeps its value loss)
        batch["log_probs"] = np.asarray(trainer.model(batch["observations"]).log_prob(batch["actions"]))
    before = parameters(trainer)
    metrics = trainer.train_step(batch)
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert any(not np.array_equal(a, b) for a, b in zip(before, parameters(trainer), strict=True))


def test_device_arrays_pass_through_the_checks_unchanged():
    """A batch already on the device is checked on a host copy but handed on as given (one
    upload per step, not a download and a second upload)."""
    from rollax.rl.batch import check_arrays

    trainer_class, model_class = TRAINERS["reinforce"]
    model = model_class(nnx.Rngs(0))
    trainer = trainer_class(model, nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param))
    host = valid_batch("reinforce", np.random.default_rng(0))
    device = {k: jnp.asarray(v) for k, v in host.items()}
    batch_format = trainer.algorithm.formats[0]
    arrays, _ = check_arrays(device, batch_format, trainer.model, {})
    assert all(arrays[k] is device[k] for k in device)
    arrays, _ = check_arrays(host, batch_format, trainer.model, {})
    assert all(isinstance(arrays[k], np.ndarray) for k in host)
