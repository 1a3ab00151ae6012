"""`python -m rollax` runs the CLI."""

from rollax.cli import main

raise SystemExit(main())
