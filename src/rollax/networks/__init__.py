"""Distributions (`distributions.py`), the one policy output and how actions are scored
(`policy.py`), the generic MLP policy (`mlp.py`) and the policy-kind registry (`kinds.py`).
Nothing is imported here, so registering a policy kind imports no jax."""
