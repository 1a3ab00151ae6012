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


def pytest_configure(config):
    """The default suite compiles many small programs and runs each a few iterations: XLA's
    optimisations (LLVM's passes, the backend's level) cost more than they save there, about a
    quarter of the suite's time. Off for it and its child processes; the `-m slow` learning
    checks run long programs and keep them."""
    if "not slow" in (config.option.markexpr or ""):
        os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
        _optimisations(False)


def _optimisations(on: bool) -> bool:
    """Switch XLA's optimisations for this process's compiles; whether they were on."""
    import jax

    was_on = _OPTIMISATIONS["on"]
    jax.config.update("jax_disable_most_optimizations", not on)
    _OPTIMISATIONS["on"] = on
    return was_on


_OPTIMISATIONS = {"on": True}


@pytest.fixture(scope="session")
def shared_cache():
    """The suite's pretrained models: the cache root's `models/` (the root set above, shared
    across sessions like the compiled programs), so each model trains once; under pytest-xdist
    the cache's lock lets the first worker that needs a model train it while the others wait.
    Tests of the cache itself use folders of their own."""
    return Path(os.environ["ROLLAX_CACHE_DIR"]) / "models"


@pytest.fixture(scope="session")
def digit_models(shared_cache):
    """`shared_cache` with the digit models pretrained: the classifier, the VAE, the GAN and
    the judge. Pretraining runs thousands of steps, so it compiles with XLA's optimisations
    (the suite turns them off for its small programs: the GAN would take 20 s instead of 7);
    each xdist worker starts with another model, so two workers train two at once."""
    from rollax.generative.judge import JUDGE_CONFIG
    from rollax.generative.pretrained import load_pretrained

    models = [("classifier", {}), ("vae", {}), ("gan", {}), ("classifier", JUDGE_CONFIG)]
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    turn = worker % len(models)
    were_on = _optimisations(True)
    try:
        for name, config in models[turn:] + models[:turn]:
            load_pretrained(name, **config)
    finally:
        _optimisations(were_on)
    return shared_cache
