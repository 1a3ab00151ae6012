"""`python -m rollax` runs the CLI."""

from rollax.cli import entry_point

entry_point()
