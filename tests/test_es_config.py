"""The baselines' own ES parameters are configuration fields that reach their strategies."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aes_rl import program, sweep
from aes_rl.config import HYPER, STRUCTURAL, preset


def test_acem_fields_reach_the_ring_strategy_and_shape_its_state():
    cfg = preset(
        "probe",
        "acem-rl",
        acem_ring=4,
        n_parents=1,
        acem_scale_var=True,
        damp_init=0.5,
        damp_limit=0.01,
        damp_tau=0.25,
    )
    params = program.build(cfg).strategy.tell_many.keywords["params"]
    assert (params.ring_size, params.n_parents, params.scale_var) == (4, 1, True)
    damp = [float(v) for v in (params.damp_init, params.damp_limit, params.damp_tau)]
    np.testing.assert_allclose(damp, [0.5, 0.01, 0.25], rtol=1e-6)
    state = program.init_batch(cfg, (0,))
    assert state.es.ring_x.shape[1] == 4  # [rows, K, d]
    assert float(state.es.damp[0]) == pytest.approx(0.5)


def test_one_plus_one_fields_set_its_success_rule():
    """By hand, v0 = 1e-3, window 2, threshold 0.4, factor 0.5, outcomes S, F, F, F: the first
    two fill the window (v stays 1e-3); the third sees [S, F], rate 1/2 > 0.4, and grows v to
    2e-3; the fourth sees [F, F], rate 0, and shrinks it to 1e-3. With the default window of
    10, v would not move in 4 tells."""
    cfg = preset(
        "probe", "one-plus-one", success_window=2, success_threshold=0.4, success_factor=0.5
    )
    s = program.build(cfg)
    st = s.strategy.init(jnp.zeros(3))
    assert st.window.shape == (2,)
    x = jnp.ones((1, 3))
    st, _ = s.strategy.tell_many(st, x, jnp.array([5.0]), jnp.array([1.0]), jnp.array([True]))
    np.testing.assert_allclose(st.var, 1e-3, rtol=1e-6)
    np.testing.assert_allclose(st.mean, 1.0)
    for expected in (1e-3, 2e-3, 1e-3):
        st, _ = s.strategy.tell_many(st, x, jnp.array([0.0]), jnp.array([1.0]), jnp.array([True]))
        np.testing.assert_allclose(st.var, expected, rtol=1e-6)


def test_cem_parents_and_damping_reach_the_generation_strategy():
    cfg = preset("probe", "p-cem-rl", pop_size=4, rl_members=2, n_parents=1, damp_init=0.25)
    s = program.build(cfg)
    es = s.strategy.init(jax.random.key(0), jnp.zeros(3))
    assert float(es.damp) == pytest.approx(0.25)
    xs = jnp.arange(12.0).reshape(4, 3)
    es = s.strategy.tell(es, xs, jnp.array([1.0, 4.0, 2.0, 3.0]))
    # one parent: the new mean is the best member (row 1)
    np.testing.assert_allclose(s.strategy.mean(es), xs[1])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(algo="acem-rl", acem_ring=4, n_parents=5), "n_parents: must be <= acem_ring (4)"),
        (dict(algo="p-cem-rl", n_parents=12), "n_parents: must be <= pop_size (10)"),
        (dict(algo="one-plus-one", success_factor=0.0), "success_factor: must be in (0, 1]"),
        (dict(damp_tau=1.5), "damp_tau: must be in [0, 1]"),
        (dict(success_window=0), "success_window: must be in [1, 10000]"),
    ],
)
def test_bad_baseline_parameters_are_one_line_errors(changes, message):
    algo = changes.pop("algo", "aes-rl")
    with pytest.raises(ValueError) as err:
        preset("probe", algo, **changes)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_the_noise_schedule_is_swept_and_the_counts_are_structure():
    assert {"damp_init", "damp_limit", "damp_tau", "success_threshold", "success_factor"} <= set(
        HYPER
    )
    assert {"n_parents", "acem_ring", "acem_scale_var", "success_window"} <= set(STRUCTURAL)
    cfg = preset("probe", "acem-rl")
    sweep.check_grid(cfg, (("damp_tau", (0.5, 0.9)),))
    with pytest.raises(sweep.SweepError, match="acem_ring fixes the program's shapes"):
        sweep.check_grid(cfg, (("acem_ring", (4, 8)),))
