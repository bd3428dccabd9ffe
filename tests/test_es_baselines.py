"""CEM-RL's CEM, ACEM-RL's ring CEM and the (1+1)-ES (docs/algorithm.md §5)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from aes_rl.es import acem, cem, one_plus_one
from aes_rl.es.acem import ACEMParams
from aes_rl.es.cem import CEMParams
from aes_rl.es.one_plus_one import OnePlusOneParams

# Parents mu_p = 2: w = [log 3 - log 1, log 3 - log 2] / (2 log 3 - log 2)
#                     = [log 3, log 1.5] / log 4.5
W2 = np.array([math.log(3.0), math.log(1.5)]) / math.log(4.5)  # ~ [0.730423, 0.269577]
# A 4-member population in d = 2 and its returns; sorted descending: row 1 (3), row 2 (2), ...
XS4 = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [-1.0, -1.0]], np.float32)
RETS4 = np.array([1.0, 3.0, 2.0, 0.0], np.float32)


def _sphere(x):
    return -jnp.sum((x - 1.0) ** 2, axis=-1)


# ----------------------------------------------------------------------------- CEM


def test_cem_weights_mu5_hand_values():
    # log 6 - log i for i = 1..5 = [1.791759, 1.098612, 0.693147, 0.405465, 0.182322],
    # sum = log(6^5 / 5!) = log 64.8 = 4.171306  ->  divided:
    expected = [0.429544, 0.263374, 0.166170, 0.097203, 0.043709]
    np.testing.assert_allclose(cem.weights(5), expected, atol=2e-6)
    np.testing.assert_allclose(cem.weights(2), W2, rtol=1e-6)
    assert cem.weights(5).shape == (5,) and float(cem.weights(5).sum()) == pytest.approx(1.0)


def test_cem_tell_hand_values():
    # mu_old = 0; parents x_(1) = [0, 2], x_(2) = [3, 3]
    # mean = w1 [0, 2] + w2 [3, 3] = [3 w2, 2 w1 + 3 w2]
    # damp = 0.9 * 1e-3 + 0.1 * 1e-5 = 9.01e-4 (the UPDATED damp is added)
    # var  = (1/2) (w1 [0, 4] + w2 [9, 9]) + 9.01e-4
    params = CEMParams(pop_size=4)
    assert params.n_parents == 2
    state = cem.init(jnp.zeros(2), params, var_init=1.0)
    new = cem.tell(state, jnp.asarray(XS4), jnp.asarray(RETS4), params)
    w1, w2 = W2
    np.testing.assert_allclose(new.mean, [3 * w2, 2 * w1 + 3 * w2], rtol=1e-6)
    np.testing.assert_allclose(new.damp, 9.01e-4, rtol=1e-6)
    np.testing.assert_allclose(
        new.var, [0.5 * 9 * w2 + 9.01e-4, 0.5 * (4 * w1 + 9 * w2) + 9.01e-4], rtol=1e-6
    )


def test_cem_damp_schedule_over_three_tells():
    # damp_k = 0.9 damp_{k-1} + 0.1 * 1e-5, damp_0 = 1e-3:
    #   9.01e-4, 0.9 * 9.01e-4 + 1e-6 = 8.119e-4, 0.9 * 8.119e-4 + 1e-6 = 7.3171e-4
    params = CEMParams()
    state = cem.init(jnp.zeros(3), params)
    xs = cem.ask(jax.random.key(0), state, params)
    damps = []
    for _ in range(3):
        state = cem.tell(state, xs, _sphere(xs), params)
        damps.append(float(state.damp))
    np.testing.assert_allclose(damps, [9.01e-4, 8.119e-4, 7.3171e-4], rtol=1e-5)


def test_cem_ask_antithetic_pairs():
    params = CEMParams(pop_size=10)
    state = cem.init(jnp.array([1.0, -2.0, 3.0]), params, var_init=jnp.array([0.1, 1.0, 10.0]))
    xs = cem.ask(jax.random.key(1), state, params)
    assert xs.shape == (10, 3)
    # the authors' layout: rows i and i + 5 are mirror images (eps = [e, -e]), so the RL
    # members (rows 0..4) take one half of five different pairs
    np.testing.assert_allclose(xs[:5] + xs[5:], jnp.tile(2 * state.mean, (5, 1)), atol=1e-5)
    assert float(jnp.abs(xs[:5] - state.mean).min()) > 0.0  # the pairs are not the mean
    for i in range(4):
        assert not jnp.allclose(xs[i] + xs[i + 1], 2 * state.mean, atol=1e-3)  # not pairs


def test_cem_sphere_converges():
    """CEM (pop 10, 5 parents, antithetic) solves a 20-d sphere.

    Maximise f(x) = -||x - 1||^2 from mu0 = 0 (f = -20), var_init 0.1. With the paper's damping
    (1e-3 -> 1e-5) the (1/mu_p)-shrunk variance collapses within a few generations and the
    mean then crawls, so this test uses damp_init 0.1, damp_limit 1e-3 (same formulas).
    Claim: after 150 generations (1500 evaluations) f(mu) > -0.05 for 4 seeds (measured
    about -0.01).
    """
    params = CEMParams(damp_init=0.1, damp_limit=1e-3)

    def step(state, key):
        xs = cem.ask(key, state, params)
        return cem.tell(state, xs, _sphere(xs), params), None

    def run(key):
        state, _ = lax.scan(step, cem.init(jnp.zeros(20), params, 0.1), jax.random.split(key, 150))
        return _sphere(state.mean)

    final = jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(2), 4))
    assert jnp.all(final > -0.05), final


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"pop_size": 7}, "pop_size"),
        ({"pop_size": 0}, "pop_size"),
        ({"pop_size": 4, "n_parents": 5}, "n_parents"),
        ({"damp_tau": 1.5}, "damp_tau"),
        ({"damp_limit": -1.0}, "damp_limit"),
        ({"damp_init": -1.0}, "damp_init"),
    ],
)
def test_cem_invalid_params_raise(kwargs, field):
    with pytest.raises(ValueError, match=field):
        CEMParams(**kwargs)


# ----------------------------------------------------------------------------- ACEM


def test_acem_hand_values_ring_of_four():
    # K = 4, mu_p = 2, mu0 = 0, v0 = 1; arrivals = the XS4 rows with RETS4.
    # Arrivals 1-3: the ring fills, nothing else moves, p = 0.
    # Arrival 4 (ring full): parents [0, 2], [3, 3] ->
    #   cem_mean = [3 w2, 2 w1 + 3 w2]; tau = 0.9^(1/4); damp = tau 1e-3 + (1 - tau) 1e-5
    #   cem_var = (1/2)(w1 [0, 4] + w2 [9, 9]) + damp
    #   mean = 0 + (cem_mean - 0)/4; var = 1 + (cem_var - 1)/4; p = 1/4
    params = ACEMParams(ring_size=4, scale_var=True)
    state = acem.init(jnp.zeros(2), params, var_init=1.0)
    ps = []
    for i in range(4):
        before = state
        state, p = acem.tell(state, jnp.asarray(XS4[i]), RETS4[i], 0.0, params)
        ps.append(float(p))
        if i < 3:
            np.testing.assert_array_equal(state.mean, before.mean)
            np.testing.assert_array_equal(state.var, before.var)
            np.testing.assert_array_equal(state.damp, before.damp)
    w1, w2 = W2
    tau = 0.9**0.25
    damp = tau * 1e-3 + (1 - tau) * 1e-5
    cem_var = np.array([0.5 * 9 * w2, 0.5 * (4 * w1 + 9 * w2)]) + damp
    assert ps == [0.0, 0.0, 0.0, 0.25]
    np.testing.assert_allclose(state.mean, np.array([3 * w2, 2 * w1 + 3 * w2]) / 4, rtol=1e-6)
    np.testing.assert_allclose(state.var, 1 + (cem_var - 1) / 4, rtol=1e-6)
    np.testing.assert_allclose(state.damp, damp, rtol=1e-6)
    # scale_var=False (the default, the authors' code): v is replaced by cem_var
    replaced = ACEMParams(ring_size=4)
    assert replaced.scale_var is False
    state2 = acem.init(jnp.zeros(2), replaced, var_init=1.0)
    state2, _ = acem.tell_many(
        state2, jnp.asarray(XS4), jnp.asarray(RETS4), jnp.zeros(4), jnp.ones(4, bool), replaced
    )
    np.testing.assert_allclose(state2.var, cem_var, rtol=1e-6)
    np.testing.assert_array_equal(state2.mean, state.mean)


def test_acem_applies_every_arrival_once_full_and_ring_keeps_last_ten():
    params = ACEMParams()
    state = acem.init(jnp.zeros(3), params, var_init=0.5)
    xs = jax.random.normal(jax.random.key(3), (13, 3))
    rets = jnp.arange(13, dtype=jnp.float32) * 1.5
    means = [state.mean]
    ps = []
    for i in range(13):
        state, p = acem.tell(state, xs[i], rets[i], 0.0, params)
        means.append(state.mean)
        ps.append(float(p))
    np.testing.assert_allclose(ps, [0.0] * 9 + [0.1] * 4)
    for i in range(9):  # no update until the ring is full
        np.testing.assert_array_equal(means[i + 1], means[0])
    for i in range(9, 13):  # then the mean moves at every arrival
        assert not np.array_equal(means[i + 1], means[i])
    # the ring holds arrivals 3..12; arrival j sits in slot j % 10
    assert sorted(np.asarray(state.ring_ret).tolist()) == pytest.approx(
        np.asarray(rets[3:]).tolist()
    )
    np.testing.assert_array_equal(state.ring_x[:3], xs[10:13])
    np.testing.assert_array_equal(state.ring_x[3:], xs[3:10])
    assert int(state.count) == 13


def test_acem_tell_many_equals_successive_tells_and_masked_is_identity():
    params = ACEMParams(ring_size=4)
    state = acem.init(jnp.zeros(3), params, var_init=0.5)
    xs = jax.random.normal(jax.random.key(4), (10, 3))
    rets = jax.random.normal(jax.random.key(5), (10,))
    mask = jnp.array([1, 1, 0, 1, 1, 1, 0, 1, 1, 1], bool)
    many, ps = jax.jit(acem.tell_many)(state, xs, rets, jnp.zeros(10), mask, params)
    one = jax.jit(acem.tell)
    for i in range(10):
        if mask[i]:
            state, _ = one(state, xs[i], rets[i], 0.0, params)
    for a, b in zip(jax.tree.leaves(many), jax.tree.leaves(state)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(ps, [0, 0, 0, 0, 0.25, 0.25, 0, 0.25, 0.25, 0.25])
    same, ps0 = acem.tell_many(many, xs, rets, jnp.zeros(10), jnp.zeros(10, bool), params)
    for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(many)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ps0, jnp.zeros(10))


def test_acem_invalid_params_raise():
    with pytest.raises(ValueError, match="n_parents"):
        ACEMParams(ring_size=4, n_parents=6)
    with pytest.raises(ValueError, match="ring_size"):
        ACEMParams(ring_size=0)
    with pytest.raises(ValueError, match="damp_tau"):
        ACEMParams(damp_tau=-0.1)


# ----------------------------------------------------------------------------- (1+1)-ES


def test_one_plus_one_window_waits_until_full_then_truly_slides():
    # 5 successes then 10 failures (f_mu = 0, f = +1 / -1), v0 = 1, factor 0.99, W = 10:
    #   tells 1-10: the window fills; v stays 1 (the authors' rule waits for W outcomes)
    #   tell 11: the 10 before it (1-10) hold 5/10 > 0.2 -> grow
    #   tell 12: outcomes 2-11 -> 4/10 -> grow; tell 13: 3-12 -> 3/10 -> grow
    #   tell 14: 4-13 -> 2/10 (not > 0.2) -> shrink; tell 15: 5-14 -> 1/10 -> shrink
    #   v = 0.99^-3 * 0.99^2 = 0.99^-1. The authors' window, frozen at tells 1-10 (5/10),
    #   would grow 5 times (0.99^-5); a rule that started at the first tell, 9 more times.
    params = OnePlusOneParams()
    state = one_plus_one.init(jnp.zeros(2), params, var_init=1.0)
    xs = jnp.arange(30, dtype=jnp.float32).reshape(15, 2)
    rets = jnp.array([1.0] * 5 + [-1.0] * 10)
    ones = jnp.ones(15, bool)
    first, _ = one_plus_one.tell_many(
        state, xs, rets, jnp.zeros(15), ones.at[10:].set(False), params
    )
    np.testing.assert_array_equal(first.var, [1.0, 1.0])
    state, ps = one_plus_one.tell_many(state, xs, rets, jnp.zeros(15), ones, params)
    np.testing.assert_array_equal(ps, [1.0] * 5 + [0.0] * 10)
    np.testing.assert_array_equal(state.mean, xs[4])  # the last success
    assert not bool(state.window.any())
    assert float(one_plus_one.success_rate(state)) == 0.0
    np.testing.assert_allclose(state.var, [0.99**-1] * 2, rtol=1e-5)


def test_one_plus_one_tie_is_failure_and_floor_holds():
    params = OnePlusOneParams(factor=0.5, var_min=1e-3)
    state = one_plus_one.init(jnp.zeros(2), params, var_init=1.0)
    n = 20
    # f = f_mu is not a success: the mean stays; from tell 11 on v halves every tell, down to
    # the floor 1e-3 (0.5^10 < 1e-3)
    state, ps = one_plus_one.tell_many(
        state, jnp.ones((n, 2)), jnp.zeros(n), jnp.zeros(n), jnp.ones(n, bool), params
    )
    np.testing.assert_array_equal(ps, jnp.zeros(n))
    np.testing.assert_array_equal(state.mean, [0.0, 0.0])
    np.testing.assert_allclose(state.var, [1e-3, 1e-3], rtol=1e-6)


def test_one_plus_one_tell_many_equals_successive_tells_and_masked_is_identity():
    params = OnePlusOneParams()
    state = one_plus_one.init(jnp.zeros(3), params, var_init=0.5)
    xs = jax.random.normal(jax.random.key(6), (14, 3))
    rets = jax.random.normal(jax.random.key(7), (14,))
    mean_rets = jax.random.normal(jax.random.key(8), (14,))
    mask = jnp.arange(14) % 3 != 1
    many, ps = jax.jit(one_plus_one.tell_many)(state, xs, rets, mean_rets, mask, params)
    one = jax.jit(one_plus_one.tell)
    for i in range(14):
        if mask[i]:
            state, _ = one(state, xs[i], rets[i], mean_rets[i], params)
    for a, b in zip(jax.tree.leaves(many), jax.tree.leaves(state)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ps, jnp.where(mask & (rets > mean_rets), 1.0, 0.0))
    same, _ = one_plus_one.tell_many(many, xs, rets, mean_rets, jnp.zeros(14, bool), params)
    for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(many)):
        np.testing.assert_array_equal(a, b)


def test_one_plus_one_sphere_converges():
    """(1+1)-ES with the sliding 1/5 rule solves a 20-d sphere.

    Maximise f(x) = -||x - 1||^2 from mu0 = 0 (f = -20), var_init 0.1, factor 0.99, floor
    1e-5, f_mu = the exact f(mu). Claim: after 1000 evaluations f(mu) > -0.01 for 4 seeds
    (measured: about -0.001).
    """
    params = OnePlusOneParams()

    def step(state, key):
        x = one_plus_one.sample(key, state)
        state, _ = one_plus_one.tell(state, x, _sphere(x), _sphere(state.mean), params)
        return state, None

    def run(key):
        state0 = one_plus_one.init(jnp.zeros(20), params, 0.1)
        state, _ = lax.scan(step, state0, jax.random.split(key, 1000))
        return _sphere(state.mean)

    final = jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(9), 4))
    assert jnp.all(final > -0.01), final


def test_one_plus_one_invalid_params_raise():
    with pytest.raises(ValueError, match="factor"):
        OnePlusOneParams(factor=1.5)
    with pytest.raises(ValueError, match="window_size"):
        OnePlusOneParams(window_size=0)
    with pytest.raises(ValueError, match="success_threshold"):
        OnePlusOneParams(success_threshold=2.0)
