"""aes_rl: asynchronous evolution strategies + TD3 (AES-RL, Lee et al. NeurIPS 2020) in JAX."""

__version__ = "0.1.0"
