"""aes_rl: asynchronous evolution strategies + TD3 (AES-RL, Lee et al. NeurIPS 2020) in JAX."""

import os

# XLA's C++ logger reports every persistent-cache load on CPU as an ERROR line about tuning
# pseudo-features ("+prefer-no-gather"), which is noise; set TF_CPP_MIN_LOG_LEVEL yourself
# (before importing jax) to see XLA's own logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.2.0"

# The built-in algorithms register themselves (`aes_rl.registry`) before any config is made.
from aes_rl import algorithms  # noqa: E402, F401
