"""The uniform strategy records: jit, vmap over independent states, and the evosax adapter."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from aes_rl.es import strategies as S
from aes_rl.es.acem import ACEMParams
from aes_rl.es.aes import AESParams
from aes_rl.es.cem import CEMParams
from aes_rl.es.one_plus_one import OnePlusOneParams

D = 5


def _sphere(x):
    return -jnp.sum((x - 1.0) ** 2, axis=-1)


def _leaves_equal(a, b, **tol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol)


ASYNC = {
    "aes": lambda: S.aes_strategy(AESParams("baseline-relative", "adaptive", 1.0), 0.1),
    "acem": lambda: S.acem_strategy(ACEMParams(ring_size=2), 0.1),
    "one_plus_one": lambda: S.one_plus_one_strategy(OnePlusOneParams(), 0.1),
}


@pytest.mark.parametrize("name", list(ASYNC))
def test_async_strategy_vmaps_over_three_states(name):
    strat = ASYNC[name]()
    means = jnp.stack([jnp.zeros(D), jnp.ones(D), -jnp.ones(D)])
    states = jax.vmap(strat.init)(means)
    keys = jax.random.split(jax.random.key(0), 3)
    xs = jax.vmap(
        lambda k, s: jax.vmap(strat.sample, in_axes=(0, None))(jax.random.split(k, 4), s)
    )(keys, states)
    rets = _sphere(xs)  # [3, 4]
    mean_rets = jax.vmap(lambda s: jnp.full(4, _sphere(strat.mean(s))))(states)
    mask = jnp.array([[1, 1, 0, 1], [1, 1, 1, 1], [0, 1, 1, 0]], bool)
    batched, ps = jax.jit(jax.vmap(strat.tell_many))(states, xs, rets, mean_rets, mask)
    for i in range(3):
        state_i = strat.init(means[i])
        single, ps_i = strat.tell_many(state_i, xs[i], rets[i], mean_rets[i], mask[i])
        _leaves_equal(jax.tree.map(lambda a, i=i: a[i], batched), single, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(ps[i], ps_i, rtol=1e-6)
        assert strat.mean(single).shape == strat.var(single).shape == (D,)
    assert not jnp.allclose(strat.mean(batched)[0], means[0])  # something was told


GENERATION = {
    "cem": lambda: S.cem_strategy(CEMParams(pop_size=6), 0.1),
    "snes": lambda: S.evosax_strategy("SNES", 6, sigma_init=0.3),
    "sep_cma_es": lambda: S.evosax_strategy("Sep_CMA_ES", 6, sigma_init=0.3),
}


@pytest.mark.parametrize("name", list(GENERATION))
def test_generation_strategy_vmaps_over_three_states(name):
    strat = GENERATION[name]()
    keys = jax.random.split(jax.random.key(1), 3)
    means = jnp.stack([jnp.zeros(D), jnp.ones(D), -jnp.ones(D)])
    states = jax.vmap(strat.init)(keys, means)
    xs = jax.vmap(strat.ask)(keys, states)
    assert xs.shape == (3, strat.pop_size, D)
    batched = jax.jit(jax.vmap(strat.tell))(states, xs, _sphere(xs))
    for i in range(3):
        single = strat.tell(strat.init(keys[i], means[i]), xs[i], _sphere(xs[i]))
        _leaves_equal(jax.tree.map(lambda a, i=i: a[i], batched), single, rtol=1e-5, atol=1e-6)
    assert strat.mean(single).shape == strat.var(single).shape == (D,)
    means_after = jax.vmap(strat.mean)(batched)
    assert float(jnp.abs(means_after - means).max()) > 1e-3  # the tell moved the means


def test_evosax_adapter_matches_native_evosax_and_negates():
    """Adapter == evosax's own ask/tell loop told -returns (same keys, default params)."""
    strat = S.evosax_strategy("SNES", 8, sigma_init=0.5)
    key = jax.random.key(2)
    state = strat.init(key, jnp.zeros(D))
    # the reference is evosax's own object and parameters, built here, not the adapter's
    from evosax.algorithms import SNES

    algo = SNES(population_size=8, solution=jnp.zeros(D))
    params = algo.default_params.replace(std_init=0.5)
    native = algo.init(key, jnp.zeros(D), params)
    assert strat.pop_size == 8
    np.testing.assert_allclose(state.es_state.std, 0.5)
    np.testing.assert_allclose(strat.var(state), 0.25 * np.ones(D))
    for g in range(3):
        k = jax.random.fold_in(key, g)
        xs = strat.ask(k, state)
        native_xs, native = algo.ask(k, native, params)
        np.testing.assert_array_equal(xs, native_xs)
        state = strat.tell(state, xs, _sphere(xs))
        native, _ = algo.tell(jax.random.key(0), native_xs, -_sphere(native_xs), native, params)
    _leaves_equal(state.es_state, native, rtol=1e-6, atol=1e-7)


def test_evosax_sigma_via_schedule_and_cma_var():
    # Open_ES has no std_init param: sigma_init becomes a constant std_schedule.
    open_es = S.evosax_strategy("Open_ES", 4, sigma_init=0.2)
    state = open_es.init(jax.random.key(3), jnp.zeros(D))
    np.testing.assert_allclose(open_es.var(state), np.full(D, 0.04), rtol=1e-6)
    # CMA_ES: var = std^2 * diag(C), C = I at start
    cma = S.evosax_strategy("CMA_ES", 6, sigma_init=0.3)
    state = cma.init(jax.random.key(3), jnp.zeros(D))
    np.testing.assert_allclose(cma.var(state), np.full(D, 0.09), rtol=1e-6)


def test_evosax_unknown_name_raises():
    with pytest.raises(ValueError, match="name must be one of .*SNES"):
        S.evosax_strategy("xNES", 8)
    with pytest.raises(ValueError, match="Sep_CMA_ES"):
        S.evosax_strategy("NoSuchES", 8)


def _generation_sphere(strat, generations, key):
    def step(state, k):
        xs = strat.ask(k, state)
        return strat.tell(state, xs, _sphere(xs)), None

    state, _ = lax.scan(step, strat.init(key, jnp.zeros(20)), jax.random.split(key, generations))
    return _sphere(strat.mean(state))


def test_evosax_snes_improves_sphere():
    """The evosax adapter maximises: SNES (pop 10, sigma_init 0.3, default params) on the
    20-d sphere f(x) = -||x - 1||^2 from mu0 = 0 (f = -20). Claim: after 50 generations
    (500 evaluations) f(mu) > -1, i.e. better by a margin of 19, for 4 seeds (measured
    about -0.1). A sign error would drive f(mu) below -20."""
    strat = S.evosax_strategy("SNES", 10, sigma_init=0.3)
    keys = jax.random.split(jax.random.key(4), 4)
    final = jax.jit(jax.vmap(lambda k: _generation_sphere(strat, 50, k)))(keys)
    assert jnp.all(final > -1.0), final


def test_cem_strategy_record_matches_module():
    params = CEMParams(pop_size=4)
    strat = S.cem_strategy(params, var_init=0.2)
    assert strat.pop_size == 4
    state = strat.init(jax.random.key(5), jnp.zeros(D))
    np.testing.assert_allclose(strat.var(state), np.full(D, 0.2), rtol=1e-6)
    xs = strat.ask(jax.random.key(6), state)
    new = strat.tell(state, xs, _sphere(xs))
    np.testing.assert_allclose(new.damp, 0.9 * 1e-3 + 0.1 * 1e-5, rtol=1e-6)
