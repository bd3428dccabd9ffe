"""A new algorithm is one record in the registry: a toy one, defined in this file, runs.

The toy is "greedy": an asynchronous ES whose tell moves the mean to any member that beat
f_mu and keeps a fixed variance. It reuses the asynchronous family (population control, RL
jobs, mean evaluations, the shared critic) and touches neither the loop nor the config.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aes_rl import algorithms, run
from aes_rl.config import Config, preset
from aes_rl.es.strategies import AsyncStrategy


class GreedyState(NamedTuple):
    mean: jax.Array
    var: jax.Array
    moves: jax.Array  # [] i32, members that became the mean


def _tell_many(state, xs, rets, mean_rets, mask):
    def one(st, inp):
        x, f, f_mu, m = inp
        better = m & (f > f_mu)
        st = GreedyState(jnp.where(better, x, st.mean), st.var, st.moves + better)
        return st, better.astype(jnp.float32)

    return jax.lax.scan(one, state, (xs, rets, mean_rets, mask))


def _greedy(cfg, h):
    return AsyncStrategy(
        init=lambda mu: GreedyState(mu, jnp.full_like(mu, h.var_init), jnp.zeros((), jnp.int32)),
        sample=lambda key, st: st.mean + jnp.sqrt(st.var) * jax.random.normal(key, st.mean.shape),
        tell_many=_tell_many,
        mean=lambda st: st.mean,
        var=lambda st: st.var,
    )


GREEDY = algorithms.Algorithm(
    "greedy", "async", "toy: the mean jumps to any member that beat f_mu", _greedy, needs_f_mu=True
)


@pytest.fixture
def greedy():
    algorithms.register(GREEDY)
    yield GREEDY
    algorithms.unregister("greedy")


def test_a_registered_toy_algorithm_runs_on_the_loop_and_learns_its_own_way(greedy, tmp_path):
    cfg = preset("probe", "greedy", actor_hidden=(4,), critic_hidden=(8,), ticks_per_chunk=100)
    assert cfg.is_async and not cfg.is_sync
    out = run.train(cfg, run.RunSettings(str(tmp_path / "r"), steps=900, progress=False))
    state = out.state
    c = state.counters
    assert int(c.total_steps[0]) >= 900
    told = int(c.arrivals[0]) - int(c.nonfinite_arrivals[0])
    moves = int(state.es.moves[0])
    assert 0 < moves <= told  # some members beat f_mu and became the mean, never more
    np.testing.assert_array_equal(state.es.var, np.float32(cfg.var_init))  # its fixed variance
    assert int(c.critic_steps[0]) > 0  # the family's shared critic trained
    assert state.fam is None  # the state holds only its family's parts (no generation)
    # resume reads it back through the registry (config.json names the algorithm)
    again = run.resume(tmp_path / "r", steps=1200, progress=False)
    assert int(again.state.counters.total_steps[0]) >= 1200


def test_an_unregistered_algorithm_is_a_one_line_error_naming_the_registered_ones():
    with pytest.raises(ValueError, match=r"^algo: unknown 'greedy'; allowed: aes-rl, acem-rl"):
        preset("probe", "greedy")
    with pytest.raises(ValueError, match=r"^algo: unknown 'greedy'"):
        Config(algo="greedy", env="probe")


def test_registering_twice_or_into_an_unknown_family_is_refused(greedy):
    with pytest.raises(ValueError, match="already registered"):
        algorithms.register(GREEDY)
    with pytest.raises(ValueError, match="family: unknown 'nope'"):
        algorithms.register(algorithms.Algorithm("x", "nope", "", _greedy))


def test_the_tick_names_no_algorithm():
    """The engine reads the algorithm's record, never its name."""
    import inspect
    import pkgutil

    import aes_rl.engine as engine_pkg

    src = "".join(
        inspect.getsource(__import__(f"aes_rl.engine.{m.name}", fromlist=["_"]))
        for m in pkgutil.iter_modules(engine_pkg.__path__)
    )
    for name in algorithms.names():
        assert f'"{name}"' not in src, name
    assert "cfg.algo ==" not in src and "is_async" not in src and "is_sync" not in src
