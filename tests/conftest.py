"""Test-wide settings: CPU JAX (no accelerator needed, deterministic), shared fixtures."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory):
    """One pretrained-model cache dir per test session, so each generative model trains once."""
    path = tmp_path_factory.getbasetemp() / "rollax_models"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROLLAX_CACHE_DIR", str(path))
        yield path
