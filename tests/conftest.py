"""Test-wide settings: CPU JAX (no accelerator needed, deterministic)."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
