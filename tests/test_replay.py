"""Ring replay buffer: masked appends, wrap-around, termination vs truncation."""

import jax
import jax.numpy as jnp
import numpy as np

from aes_rl import replay


def _batch(values, not_done):
    v = jnp.asarray(values, jnp.float32)
    return replay.Transition(
        v[:, None], v[:, None], v, v[:, None] + 0.5, jnp.asarray(not_done, jnp.float32)
    )


def test_masked_rows_are_skipped_and_the_ring_wraps_in_order():
    buf = replay.init(4, 1, 1)
    buf = replay.add(buf, _batch([1, 2, 3], [1, 1, 1]), jnp.array([True, False, True]))
    assert int(buf.ptr) == 2 and int(buf.size) == 2
    np.testing.assert_array_equal(buf.data.reward, [1, 3, 0, 0])
    buf = replay.add(buf, _batch([4, 5, 6, 7], [1, 0, 1, 1]), jnp.ones(4, bool))
    # rows 4, 5 fill slots 2, 3; 6, 7 overwrite the oldest (slots 0, 1)
    np.testing.assert_array_equal(buf.data.reward, [6, 7, 4, 5])
    np.testing.assert_array_equal(buf.data.not_done, [1, 1, 1, 0])
    np.testing.assert_array_equal(buf.data.next_obs[:, 0], [6.5, 7.5, 4.5, 5.5])
    assert int(buf.ptr) == 2 and int(buf.size) == 4


def test_all_masked_add_changes_nothing():
    buf = replay.add(replay.init(3, 1, 1), _batch([1], [1]), jnp.array([True]))
    same = replay.add(buf, _batch([9, 9], [0, 0]), jnp.zeros(2, bool))
    for a, b in zip(jax.tree.leaves(buf), jax.tree.leaves(same)):
        np.testing.assert_array_equal(a, b)


def test_sample_draws_only_filled_rows():
    buf = replay.add(replay.init(100, 1, 1), _batch([3, 4], [1, 1]), jnp.ones(2, bool))
    batch = replay.sample(buf, jax.random.key(0), 64)
    assert set(np.asarray(batch.reward).tolist()) == {3.0, 4.0}


def test_truncation_is_stored_as_not_done_and_termination_as_done():
    from aes_rl.envs import make_env

    env = make_env("countdown", episode_length=2, min_length=2, max_length=2)
    # countdown of length 2 with a time limit of 2: the last step terminates (not truncated)
    s0 = env.reset(jax.random.key(0))
    s1 = env.step(s0, jnp.zeros(2))
    s2 = env.step(s1, jnp.zeros(2))
    probe = make_env("probe", episode_length=2)
    p0 = probe.reset(jax.random.key(0))
    p2 = probe.step(probe.step(p0, jnp.zeros(2)), jnp.zeros(2))  # truncated at the limit
    rows = [(s1, s2), (p0, p2)]
    trans = replay.Transition(
        jnp.stack([a.obs for a, _ in rows]),
        jnp.zeros((2, 2)),
        jnp.stack([b.reward for _, b in rows]),
        jnp.stack([b.obs for _, b in rows]),
        jnp.stack([1.0 - b.info["terminated"] for _, b in rows]),
    )
    buf = replay.add(replay.init(4, 3, 2), trans, jnp.ones(2, bool))
    assert float(s2.done) == 1.0 and float(p2.done) == 1.0
    np.testing.assert_array_equal(buf.data.not_done[:2], [0.0, 1.0])
