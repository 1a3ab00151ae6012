"""Trainer configs: the documented fields and defaults, validated extras, errors that name the field."""

import dataclasses

import pytest

from rollax import DPOConfig, GRPOConfig, PPOConfig, REINFORCEConfig

# The documented fields and defaults (reference/002), in order.
DOCUMENTED = {
    REINFORCEConfig: {"gamma": 0.99, "normalize_returns": True, "entropy_coeff": 0.01},
    PPOConfig: {"gamma": 0.99, "gae_lambda": 0.95, "clip_param": 0.2, "vf_coeff": 0.5,
                "entropy_coeff": 0.01, "max_grad_norm": 0.5},
    GRPOConfig: {"num_generations": 4, "clip_param": 0.2, "beta": 0.01, "entropy_coeff": 0.01,
                 "gamma": 0.99},
    DPOConfig: {"beta": 0.1, "label_smoothing": 0.0, "reference_free": False},
}

# Extras whose defaults must keep the documented behaviour.
EXTRA_DEFAULTS = {
    REINFORCEConfig: {"max_grad_norm": None},
    PPOConfig: {"num_epochs": 1, "num_minibatches": 1, "normalize_advantages": True,
                "clip_value_loss": False, "target_kl": None},
    GRPOConfig: {"epsilon_high": None, "loss_type": "grpo", "scale_rewards": "group",
                 "kl_estimator": "k3", "mask_zero_std_groups": False, "max_grad_norm": None},
    DPOConfig: {"loss_type": "sigmoid", "simpo_gamma": 0.0, "max_grad_norm": None},
}


@pytest.mark.parametrize("config_class", list(DOCUMENTED))
def test_documented_fields_come_first_with_their_defaults(config_class):
    config = config_class()
    names = [f.name for f in dataclasses.fields(config_class)]
    assert names[: len(DOCUMENTED[config_class])] == list(DOCUMENTED[config_class])
    for name, default in {**DOCUMENTED[config_class], **EXTRA_DEFAULTS[config_class]}.items():
        value = getattr(config, name)
        assert value == default and type(value) is type(default), name


@pytest.mark.parametrize("config_class", list(DOCUMENTED))
def test_configs_are_frozen_and_accept_documented_keywords(config_class):
    config = config_class(**DOCUMENTED[config_class])
    assert config == config_class()
    first_field = next(iter(DOCUMENTED[config_class]))
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(config, first_field, 0.5)


def test_replace_validates_again():
    assert PPOConfig().replace(clip_param=0.1).clip_param == 0.1
    with pytest.raises(ValueError, match="clip_param"):
        PPOConfig().replace(clip_param=0.0)


INVALID = [
    (REINFORCEConfig, "gamma", -0.1),
    (REINFORCEConfig, "gamma", 1.01),
    (REINFORCEConfig, "entropy_coeff", -0.01),
    (REINFORCEConfig, "max_grad_norm", 0.0),
    (PPOConfig, "gamma", 1.5),
    (PPOConfig, "gae_lambda", -0.5),
    (PPOConfig, "gae_lambda", 1.1),
    (PPOConfig, "clip_param", 0.0),
    (PPOConfig, "clip_param", -0.2),
    (PPOConfig, "vf_coeff", -1.0),
    (PPOConfig, "entropy_coeff", -0.01),
    (PPOConfig, "max_grad_norm", 0.0),
    (PPOConfig, "num_epochs", 0),
    (PPOConfig, "num_epochs", 2.5),
    (PPOConfig, "num_minibatches", 0),
    (PPOConfig, "target_kl", 0.0),
    (GRPOConfig, "num_generations", 1),
    (GRPOConfig, "num_generations", 0),
    (GRPOConfig, "num_generations", 4.0),
    (GRPOConfig, "clip_param", 0.0),
    (GRPOConfig, "beta", -0.01),
    (GRPOConfig, "entropy_coeff", -1.0),
    (GRPOConfig, "gamma", 2.0),
    (GRPOConfig, "epsilon_high", 0.0),
    (GRPOConfig, "loss_type", "ppo"),
    (GRPOConfig, "scale_rewards", "global"),
    (GRPOConfig, "scale_rewards", True),
    (GRPOConfig, "kl_estimator", "k4"),
    (GRPOConfig, "max_grad_norm", -1.0),
    (DPOConfig, "beta", 0.0),
    (DPOConfig, "beta", -0.1),
    (DPOConfig, "label_smoothing", 0.51),
    (DPOConfig, "label_smoothing", -0.1),
    (DPOConfig, "preference_temperature", -0.1),
    (DPOConfig, "loss_type", "kto"),
    (DPOConfig, "simpo_gamma", -0.5),
    (DPOConfig, "max_grad_norm", 0.0),
]


@pytest.mark.parametrize(("config_class", "field", "value"), INVALID)
def test_invalid_values_name_the_field(config_class, field, value):
    with pytest.raises(ValueError, match=field):
        config_class(**{field: value})


@pytest.mark.parametrize(("config_class", "changes"), [
    (REINFORCEConfig, {"gamma": 0.0, "entropy_coeff": 0.0, "normalize_returns": False}),
    (REINFORCEConfig, {"gamma": 1.0, "max_grad_norm": 1.0}),
    (PPOConfig, {"gae_lambda": 1.0, "gamma": 1.0, "num_epochs": 4, "num_minibatches": 8,
                 "clip_value_loss": True, "target_kl": 0.02, "vf_coeff": 0.0}),
    (GRPOConfig, {"num_generations": 2, "beta": 0.0, "epsilon_high": 0.28, "loss_type": "dr_grpo",
                  "scale_rewards": "none", "kl_estimator": "k1", "mask_zero_std_groups": True}),
    (DPOConfig, {"label_smoothing": 0.5, "reference_free": True, "loss_type": "ipo",
                 "simpo_gamma": 0.5}),
])
def test_boundary_values_are_accepted(config_class, changes):
    config = config_class(**changes)
    for name, value in changes.items():
        assert getattr(config, name) == value


def test_soft_preferences_need_the_sigmoid_loss():
    with pytest.raises(ValueError, match="preference_temperature.*'ipo'"):
        DPOConfig(preference_temperature=0.1, loss_type="ipo")


def test_unknown_field_is_a_type_error():
    with pytest.raises(TypeError, match="clip_range"):
        PPOConfig(clip_range=0.2)
