"""Whole-process start-up times of `import rollax`, the Python API and the light CLI commands
(prints a table; no assertions: the machine is shared and noisy, so the tests check what is
imported instead).

Each command runs `--repeats` times in a fresh interpreter (the one running this script, so the
same environment); the table shows the min and the median wall time, and `python -c pass` as the
floor every process pays.

Usage: python benchmarks/startup.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics

from timing import run_process

COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "import rollax": ["-c", "import rollax"],
    "import rollax.api (jax, the loop)": ["-c", "import rollax.api"],
    "rollax --help": ["-m", "rollax", "--help"],
    "rollax envs": ["-m", "rollax", "envs"],
    "rollax presets": ["-m", "rollax", "presets"],
    "rollax plot (no arguments)": ["-m", "rollax", "plot"],
}


def wall_times(args: list[str], repeats: int) -> list[float]:
    """Seconds for each of `repeats` runs of `python <args>` (output discarded)."""
    return [run_process(args, check=False, capture=False)[0] for _ in range(repeats)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    print(f"{'command':<34} {'min s':>7} {'median s':>9}   ({args.repeats} runs each)")
    for name, command in COMMANDS.items():
        times = wall_times(command, args.repeats)
        print(f"{name:<34} {min(times):>7.2f} {statistics.median(times):>9.2f}")


if __name__ == "__main__":
    main()
