"""Test-wide settings: CPU JAX (no accelerator needed, deterministic), shared fixtures."""

import os
import tempfile
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One cache root for the whole suite (and across sessions): test runs that share a program
# shape compile it once. Tests that need their own root set ROLLAX_CACHE_DIR themselves.
os.environ.setdefault("ROLLAX_CACHE_DIR", str(Path(tempfile.gettempdir()) / "rollax-test-cache"))

import pytest
from hypothesis import settings

from rollax.cache import enable_compilation_cache

# Property suites draw the same examples on every run, so CI cannot fail on a draw nobody saw
# locally; HYPOTHESIS_PROFILE=explore draws fresh ones when hunting for new cases.
settings.register_profile("deterministic", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))

enable_compilation_cache()


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory):
    """One pretrained-model cache dir per test session, so each generative model trains once:
    under pytest-xdist the workers share it (their base dirs are siblings), and the cache's lock
    lets the first worker that needs a model train it while the others wait."""
    base = tmp_path_factory.getbasetemp()
    path = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "rollax_models"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROLLAX_CACHE_DIR", str(path))
        yield path
