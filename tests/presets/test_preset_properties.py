"""Property-based bad input over the preset loader (the path of `rollax train --set`): for many
keys, generated wrong-typed or out-of-range values are a `PresetError` (a ValueError) whose message
names the key, never another exception type. Loading builds and compiles nothing, so this is quick.
"""

import json
import math
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollax.presets import PresetError, load_experiment

CARTPOLE = Path(__file__).resolve().parents[2] / "experiments" / "cartpole_ppo.toml"
SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])

BOOLS = st.booleans()
WORDS = st.text(string.ascii_letters, min_size=1, max_size=8)
LISTS = st.lists(st.integers(-3, 3), max_size=2)
TABLES = st.dictionaries(WORDS, st.integers(), min_size=1, max_size=2)
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])


def not_integer(low: int, high: int | None = None):
    """Values an integer key in [low, high] must refuse."""
    outside = st.integers(max_value=low - 1)
    if high is not None:
        outside = outside | st.integers(min_value=high + 1, max_value=2**80)
    return outside | BOOLS | st.floats() | WORDS | LISTS | TABLES


def not_number(low: float, high: float = math.inf, low_open: bool = False):
    """Values a finite-number key in [low, high] (or (low, high]) must refuse."""
    below = st.floats(max_value=low, exclude_max=not low_open, allow_nan=False)
    outside = below | NON_FINITE
    if high < math.inf:
        outside = outside | st.floats(min_value=high, exclude_min=True, allow_nan=False)
    return outside | BOOLS | WORDS | LISTS | TABLES


NOT_BOOL = st.integers() | st.floats() | WORDS | LISTS | TABLES
NOT_STRING = st.integers() | st.floats() | BOOLS | LISTS | TABLES

# key -> values it must refuse (TOML can hold each of them, so --set can send it)
BAD_VALUES = {
    "seeds": not_integer(1, 256),
    "seed": not_integer(0, 2**31 - 1),
    "name": NOT_STRING | st.sampled_from(["", "..", "../up", "a/b", ".hidden", "a b", "x..y"]),
    "tags": st.integers() | WORDS | st.lists(st.integers(), min_size=1, max_size=2),
    "env.id": NOT_STRING,
    "env.params": st.integers() | WORDS | LISTS | BOOLS,
    "env.solved_threshold": NON_FINITE | BOOLS | WORDS | LISTS,
    "budget.total_steps": not_integer(1, 2**31 - 1),
    "budget.num_envs": not_integer(1),
    "budget.num_steps": not_integer(1),
    "budget.iterations_per_chunk": not_integer(0, 2**31 - 1),
    "eval.every_steps": not_integer(0, 2**31 - 1),
    "eval.episodes": not_integer(1, 2**16),
    "agent.algorithm": NOT_STRING | WORDS.filter(
        lambda w: w not in ("ppo", "reinforce", "grpo", "dpo", "rloo")),
    "agent.optimizer.name": NOT_STRING | WORDS.filter(
        lambda w: w not in ("adam", "adamw", "sgd", "rmsprop")),
    "agent.optimizer.learning_rate": not_number(0.0, low_open=True),
    "agent.optimizer.eps": not_number(0.0),
    "agent.optimizer.anneal_lr": NOT_BOOL,
    "agent.network.hidden_sizes": (st.integers() | WORDS | BOOLS
                                   | st.lists(st.integers(max_value=0) | st.floats() | BOOLS,
                                              min_size=1, max_size=3)),
    "agent.network.activation": NOT_STRING | WORDS.filter(
        lambda w: w not in ("tanh", "relu", "gelu", "elu", "silu", "swish", "leaky_relu")),
    "agent.network.shared_torso": NOT_BOOL,
    "agent.network.log_std_init": NON_FINITE | BOOLS | WORDS | LISTS,
    "agent.config.gamma": not_number(0.0, 1.0),
    "agent.config.gae_lambda": not_number(0.0, 1.0),
    "agent.config.clip_param": not_number(0.0, low_open=True),
    "agent.config.vf_coeff": not_number(0.0),
    "agent.config.entropy_coeff": not_number(0.0),
    "agent.config.max_grad_norm": not_number(0.0, low_open=True),
    "agent.config.num_epochs": not_integer(1),
    "agent.config.num_minibatches": not_integer(1),
    "agent.config.normalize_advantages": NOT_BOOL,
    "agent.config.clip_value_loss": NOT_BOOL,
    "agent.config.target_kl": not_number(0.0, low_open=True),
    "logging.root": NOT_STRING | st.just(""),
    "logging.enabled": NOT_BOOL,
    "logging.checkpoint": NOT_BOOL,
    "logging.plot": NOT_BOOL,
    "logging.images": NOT_BOOL,
    "logging.progress": NOT_BOOL,
    "logging.best_metric": NOT_STRING | WORDS,
    "logging.best_mode": NOT_STRING | WORDS.filter(lambda w: w not in ("max", "min")),
    "logging.checkpoint_every_seconds": not_number(0.0, low_open=True),
}


def toml_literal(value) -> str:
    """A TOML literal for `value`, as a user would type it after `--set key=`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # the letters and signs drawn here escape alike in TOML
    if isinstance(value, list):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    return "{" + ", ".join(f"{k} = {toml_literal(v)}" for k, v in value.items()) + "}"


@pytest.mark.parametrize("key", sorted(BAD_VALUES))
@SETTINGS
@given(data=st.data())
def test_a_bad_value_is_a_preset_error_naming_its_key(key, data):
    value = data.draw(BAD_VALUES[key], label=key)
    with pytest.raises(PresetError) as caught:
        load_experiment(CARTPOLE, [f"{key}={toml_literal(value)}"])
    assert key in str(caught.value), str(caught.value)


# a word is a fine value for these (env ids are looked up when the env is built)
WORD_KEYS = ("name", "logging.root", "logging.best_metric", "env.id")


@pytest.mark.parametrize("key", [k for k in sorted(BAD_VALUES) if k not in WORD_KEYS])
@SETTINGS
@given(word=WORDS.filter(lambda w: w not in ("true", "false", "nan", "inf")))
def test_a_bare_word_on_the_command_line_is_refused_naming_its_key(key, word):
    # `--set key=word` that is no TOML literal arrives as the string "word"
    if key in ("agent.algorithm", "agent.optimizer.name", "agent.network.activation",
               "logging.best_mode"):
        word = f"{word}_9"  # no registered name ends so
    with pytest.raises(PresetError) as caught:
        load_experiment(CARTPOLE, [f"{key}={word}"])
    assert key in str(caught.value), str(caught.value)
