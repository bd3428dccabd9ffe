"""Shared test set-up: a persistent compilation cache so repeated compiles are cheap."""

import os

# MuJoCo picks its GL backend at first import; EGL is the one that renders headless here.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # XLA logs cache loads as ERROR lines

import jax

_CACHE = os.environ.get("AES_RL_JAX_CACHE", os.path.expanduser("~/.cache/aes_rl/jax"))
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
