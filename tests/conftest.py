"""Shared test set-up: a persistent compilation cache so repeated compiles are cheap, and a
bound on the compiled programs one test process keeps alive."""

import os

# MuJoCo picks its GL backend at first import; EGL is the one that renders headless here.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # XLA logs cache loads as ERROR lines

import gc

import jax
import pytest

_CACHE = os.environ.get("AES_RL_JAX_CACHE", os.path.expanduser("~/.cache/aes_rl/jax"))
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


# A test process compiles thousands of programs (every test builds its own configs; every eager
# op of a new shape is a program). Each keeps a few memory mappings alive, and past Linux's
# per-process limit (vm.max_map_count, about 65k) XLA cannot map the next one and the worker
# dies with a segfault inside the compiler. Dropping the compiled programs when the count
# nears the limit keeps a worker far from it; they are rebuilt, from the persistent cache.
_MAPS_LIMIT = 45_000


def _maps() -> int:
    try:
        with open("/proc/self/maps", "rb") as f:
            return sum(1 for _ in f)
    except OSError:  # not Linux: nothing to count (and no such limit)
        return 0


@pytest.fixture(autouse=True)
def _bounded_compiled_programs():
    yield
    if _maps() > _MAPS_LIMIT:
        from aes_rl import loop

        loop.clear_caches()
        gc.collect()
