"""Benchmarks of aes_rl: throughput, loop overhead, slot scaling, time efficiency, learning.

Each module runs as `python -m benchmarks.NAME [--quick]` from the repository root, prints its
table and writes its own section of `benchmarks/RESULTS.md` (see `benchmarks.common`).
"""

import os

# Runs before any benchmark module (and so before jaxlib loads): no XLA log noise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
