"""What the run logger costs per call: `Logger.log_scalars` of N tags (TensorBoard event plus
`metrics.jsonl` record), as the training loop calls it once per seed and iteration.

    python benchmarks/logging_overhead.py [--tags 15] [--calls 2000]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from rollax.logging.logger import Logger


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=15)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    metrics = {f"train/metric_{i}": np.float32(i) for i in range(args.tags)}  # the loop's kind
    with tempfile.TemporaryDirectory() as folder:
        logger = Logger(folder)
        start = time.perf_counter()
        for step in range(args.calls):
            logger.log_scalars(metrics, step)
        logger.flush()
        seconds = time.perf_counter() - start
        logger.close()
    print(f"log_scalars of {args.tags} tags: {seconds / args.calls * 1e6:.0f} us per call "
          f"({args.calls} calls)")


if __name__ == "__main__":
    main()
