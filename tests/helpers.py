"""Small configurations shared by the loop, checkpoint and CLI tests."""

import time

import jax
import jax.extend
import numpy as np

from aes_rl.config import preset


def probe_cfg(algo="aes-rl", env="probe", **overrides):
    """A tiny, fast-compiling configuration on a pure-JAX probe env."""
    base = dict(
        actor_hidden=(16, 16),
        critic_hidden=(32, 32),
        ticks_per_chunk=100,
        episode_length=10,
        warmup_steps=200,
        buffer_size=4000,
        batch_size=64,
        n_mean_evals=2,
    )
    # The clock the loop tests were written for: a tick is one env step, 10 actor steps, 2
    # critic steps (test_schedule covers the other clocks).
    base.update(env_steps_per_tick=1, actor_steps_per_tick=10, critic_steps_per_tick=2)
    # A critic worker whose jobs are one step: a fresh mean and critic every step (the
    # authors' 1000-step jobs are longer than these runs; test_schedule covers jobs).
    base.update(critic_job_steps=1)
    if algo == "td3":
        base.update(actor_lr=1e-3, critic_lr=1e-3)
    base.update(overrides)
    return preset(env, algo, **base)


def assert_trees_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def probe_flags(**overrides) -> list[str]:
    """`aes-rl train` flags of a tiny probe-env run; overrides by field name (None drops one)."""
    flags = dict(
        env="probe",
        warmup_steps=100,
        episode_length=10,
        actor_hidden=(16, 16),
        critic_hidden=(16, 16),
        ticks_per_chunk=100,
        buffer_size=4000,
        batch_size=32,
        n_mean_evals=1,
    )
    flags.update(overrides)
    argv = []
    for name, value in flags.items():
        if value is None:
            continue
        values = value if isinstance(value, tuple) else (value,)
        argv += ["--" + name.replace("_", "-"), *(str(v) for v in values)]
    return argv + ["--quiet"]


def wait_for(pred, proc, timeout=120.0, poll=0.001) -> bool:
    """Poll `pred` until it holds (True) or `proc` exits or the timeout passes (False)."""
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if pred():
            return True
        time.sleep(poll)
    return False


def sub_jaxprs(eqn):
    """The jaxprs nested in an equation (a loop's body, a cond's branches), unwrapped."""
    for value in eqn.params.values():
        for sub in value if isinstance(value, tuple | list) else (value,):
            if isinstance(sub, jax.extend.core.ClosedJaxpr):
                yield sub.jaxpr
            elif isinstance(sub, jax.extend.core.Jaxpr):
                yield sub
