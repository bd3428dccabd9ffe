"""The env layer: errors, termination vs truncation, true final observations, fresh resets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aes_rl.envs import make_env


def test_unknown_env_and_backend_are_refused_with_allowed_values():
    with pytest.raises(ValueError, match=r"env: unknown environment 'cartpole'.*hopper"):
        make_env("cartpole")
    with pytest.raises(
        ValueError, match=r"backend: 'spring' is not available for swimmer.*generalized"
    ):
        make_env("swimmer", backend="spring")
    with pytest.raises(ValueError, match="backend"):
        make_env("hopper", backend="bullet")
    with pytest.raises(ValueError, match="episode_length"):
        make_env("probe", episode_length=0)


def test_probe_reward_is_zero_at_the_known_optimum_and_negative_elsewhere():
    env = make_env("probe", episode_length=3)
    state = env.reset(jax.random.key(0))
    best = env.step(state, 0.5 * state.obs[:2])
    worse = env.step(state, 0.5 * state.obs[:2] + 0.1)
    assert float(best.reward) == 0.0
    # reward = -mean((0.1)^2) over 2 action dims = -0.01
    np.testing.assert_allclose(float(worse.reward), -0.01, rtol=1e-5)


def test_truncation_is_not_termination():
    env = make_env("probe", episode_length=3)
    state = env.reset(jax.random.key(1))
    flags = []
    for _ in range(3):
        state = env.step(state, jnp.zeros(2))
        flags.append(
            (float(state.info["terminated"]), float(state.info["truncated"]), float(state.done))
        )
    assert flags == [(0, 0, 0), (0, 0, 0), (0, 1, 1)]


def test_countdown_terminates_at_drawn_length_and_keeps_the_true_final_obs():
    env = make_env("countdown", episode_length=100, min_length=3, max_length=9)
    step = jax.jit(env.step)
    lengths = set()
    for seed in range(12):
        state = env.reset(jax.random.key(seed))
        assert float(state.obs[-1]) == 1.0  # reset observation marks "all of the episode left"
        drawn = int(state.info["length"])
        t = 0
        while not float(state.done):
            state = step(state, jnp.zeros(2))
            t += 1
        assert t == drawn
        assert float(state.info["terminated"]) == 1.0 and float(state.info["truncated"]) == 0.0
        # No auto-reset: the observation after the last step is the final one (0 left), not 1.
        assert float(state.obs[-1]) == 0.0
        lengths.add(t)
    assert len(lengths) > 2 and min(lengths) >= 3 and max(lengths) <= 9


def test_every_reset_key_gives_a_fresh_initial_state():
    env = make_env("probe")
    a = env.reset(jax.random.key(0)).obs
    b = env.reset(jax.random.key(1)).obs
    assert not np.allclose(a, b)


@pytest.mark.slow
def test_brax_hopper_termination_truncation_and_single_compile():
    env = make_env("hopper", backend="spring", episode_length=1000)
    assert (env.observation_size, env.action_size) == (11, 3)
    step = jax.jit(env.step)
    state = env.reset(jax.random.key(0))
    first = state.obs
    key = jax.random.key(1)
    terminated_at = None
    for t in range(300):
        key, k = jax.random.split(key)
        state = step(state, jax.random.uniform(k, (3,), minval=-1, maxval=1))
        if float(state.done):
            terminated_at = t
            break
    assert terminated_at is not None, "a random hopper falls well within 300 steps"
    assert float(state.info["terminated"]) == 1.0 and float(state.info["truncated"]) == 0.0
    assert not np.allclose(state.obs, first)  # the true final observation, not a reset one
    assert step._cache_size() == 1  # reset state's leaves are strongly typed: one compile
    # A short time limit truncates a healthy hopper without terminating it.
    short = make_env("hopper", backend="spring", episode_length=2)
    s = short.reset(jax.random.key(2))
    s = short.step(short.step(s, jnp.zeros(3)), jnp.zeros(3))
    assert (float(s.info["terminated"]), float(s.info["truncated"])) == (0.0, 1.0)


@pytest.mark.slow
def test_swimmer_steps_on_the_generalized_backend():
    """The reason for pinning jax 0.9: Brax's fluid model calls jnp.clip(a_min=...)."""
    env = make_env("swimmer", backend="generalized", episode_length=10)
    assert (env.observation_size, env.action_size) == (8, 2)
    state = jax.jit(env.step)(env.reset(jax.random.key(0)), jnp.ones(2))
    assert np.all(np.isfinite(np.asarray(state.obs))) and np.isfinite(float(state.reward))
    assert float(state.info["terminated"]) == 0.0


class _Recorder:
    """A stand-in Brax env that remembers the action its step was given."""

    def __init__(self, inner):
        self.inner, self.seen = inner, []

    def reset(self, rng):
        return self.inner.reset(rng)

    def step(self, state, action):
        self.seen.append(np.asarray(action))
        return self.inner.step(state, action)


def test_actions_are_in_control_units_and_reach_brax_in_its_own_range():
    from aes_rl.envs import ProbeEnv, TimeLimit

    rec = _Recorder(ProbeEnv(3, 2))
    env = TimeLimit(rec, 10, max_action=0.4)
    env.step(env.reset(jax.random.key(0)), jnp.array([0.4, -0.2]))
    np.testing.assert_allclose(rec.seen[-1], [1.0, -0.5])  # divided by the control bound
    plain = TimeLimit(rec, 10)
    plain.step(plain.reset(jax.random.key(0)), jnp.array([0.4, -0.2]))
    np.testing.assert_array_equal(rec.seen[-1], np.float32([0.4, -0.2]))  # bound 1: as given


def test_humanoid_acts_in_gym_units_and_the_actor_knows_it():
    """Brax's humanoid rescales [-1, 1] to its +-0.4 control range; Gym's Humanoid-v2 takes
    +-0.4 directly, and so does the authors' actor (max_action 0.4)."""
    from aes_rl import program
    from aes_rl.config import preset

    assert make_env("humanoid").max_action == 0.4
    assert make_env("hopper").max_action == 1.0
    s = program.build(preset("humanoid", actor_hidden=(8,), critic_hidden=(8,)))
    assert s.actor.max_action == 0.4
