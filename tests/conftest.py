"""Shared test set-up: a persistent compilation cache so repeated compiles are cheap, and a
bound on the compiled programs one test process keeps alive."""

import os

# MuJoCo picks its GL backend at first import; EGL is the one that renders headless here.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # XLA logs cache loads as ERROR lines

import jax
import pytest

_CACHE = os.environ.get("AES_RL_JAX_CACHE", os.path.expanduser("~/.cache/aes_rl/jax"))
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


# A test process compiles thousands of programs (every test builds its own configs; every eager
# op of a new shape is a program), each holding memory mappings while JAX caches it; past
# Linux's per-process limit (vm.max_map_count) XLA cannot map the next one and the worker dies.
# After each test the cached programs are dropped if the count nears the limit; they are
# rebuilt, from the persistent cache.
@pytest.fixture(autouse=True)
def _bounded_compiled_programs():
    yield
    from aes_rl import program

    program.bound_compiled_programs()
