"""TD3 losses and updates against values computed by hand (docs/algorithm.md §2)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from aes_rl import td3
from aes_rl.networks import ActorSpec, CriticSpec
from aes_rl.replay import Transition

ACTOR = ActorSpec(obs_dim=1, act_dim=1, hidden=(1,), max_action=1.0)
CRITIC = CriticSpec(obs_dim=1, act_dim=1, hidden=(1,))


def _dense(kernel, bias):
    return {"kernel": jnp.asarray(kernel, jnp.float32), "bias": jnp.asarray(bias, jnp.float32)}


def _actor_flat():
    # pi(s) = tanh(2 * tanh(s))
    tree = {"params": {"Dense_0": _dense([[1.0]], [0.0]), "Dense_1": _dense([[2.0]], [0.0])}}
    return ravel_pytree(tree)[0]


def _critic_params():
    # Q1(s, a) = leaky(s + a) + 0.5 ;  Q2(s, a) = 2 * leaky(s - a)
    q1 = {"Dense_0": _dense([[1.0], [1.0]], [0.0]), "Dense_1": _dense([[1.0]], [0.5])}
    q2 = {"Dense_0": _dense([[1.0], [-1.0]], [0.0]), "Dense_1": _dense([[2.0]], [0.0])}
    return {"params": {"q1": q1, "q2": q2}}


def leaky(x):
    return x if x > 0 else 0.01 * x


def pi(s):
    return math.tanh(2 * math.tanh(s))


def test_networks_match_the_hand_formulas():
    np.testing.assert_allclose(ACTOR.apply(_actor_flat(), jnp.array([0.3]))[0], pi(0.3), rtol=1e-6)
    q1, q2 = CRITIC.apply(_critic_params(), jnp.array([0.2]), jnp.array([-0.4]))
    np.testing.assert_allclose([q1, q2], [leaky(-0.2) + 0.5, 2 * leaky(0.6)], rtol=1e-6)


def test_target_with_fixed_noise_and_both_losses_by_hand():
    s_next, noise, r, gamma = 0.3, 0.7, 1.0, 0.99
    # target action: pi(0.3) + clip(0.7, -0.5, 0.5), clipped to +-1
    a_next = min(pi(s_next) + 0.5, 1.0)
    got = td3.smoothed_target_action(
        ACTOR, _actor_flat(), jnp.array([[s_next]]), jnp.array([[noise]]), 0.5
    )
    np.testing.assert_allclose(got[0, 0], a_next, rtol=1e-6)
    q1n = leaky(s_next + a_next) + 0.5
    q2n = 2 * leaky(s_next - a_next)  # negative: the 0.01 slope applies
    y = r + gamma * 1.0 * min(q1n, q2n)
    np.testing.assert_allclose(td3.td3_target(r, 1.0, q1n, q2n, gamma), y, rtol=1e-6)
    np.testing.assert_allclose(td3.td3_target(r, 0.0, q1n, q2n, gamma), r)  # terminal: y = r
    batch = Transition(
        jnp.array([[0.2]]),
        jnp.array([[-0.4]]),
        jnp.array([r]),
        jnp.array([[s_next]]),
        jnp.array([1.0]),
    )
    q1, q2 = leaky(0.2 - 0.4) + 0.5, 2 * leaky(0.2 + 0.4)
    expected = (q1 - y) ** 2 + (q2 - y) ** 2
    loss = td3.critic_loss(CRITIC, _critic_params(), batch, jnp.array([y]))
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    # actor loss: -Q1(s, pi(s)) at s = 0.2
    a = pi(0.2)
    got = td3.actor_loss(ACTOR, CRITIC, _actor_flat(), _critic_params(), jnp.array([[0.2]]))
    np.testing.assert_allclose(got, -(leaky(0.2 + a) + 0.5), rtol=1e-6)


def test_critic_step_uses_the_given_policy_and_its_own_noise():
    params = _critic_params()
    state = td3.CriticState(params, params, td3.optax.adam(1e-3).init(params))
    batch = Transition(
        jnp.array([[0.2]]),
        jnp.array([[-0.4]]),
        jnp.array([1.0]),
        jnp.array([[0.3]]),
        jnp.array([1.0]),
    )
    hp = td3.TD3HParams()
    key = jax.random.key(3)
    noise = float(hp.policy_noise * jax.random.normal(key, (1, 1))[0, 0])
    a_next = max(min(pi(0.3) + max(min(noise, 0.5), -0.5), 1.0), -1.0)
    y = 1.0 + 0.99 * min(leaky(0.3 + a_next) + 0.5, 2 * leaky(0.3 - a_next))
    expected = (leaky(-0.2) + 0.5 - y) ** 2 + (2 * leaky(0.6) - y) ** 2
    new, loss = td3.critic_step(state, batch, _actor_flat(), key, hp, ACTOR, CRITIC)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    # targets untouched by critic_step, moved by tau by soft_update_critic
    same = jax.tree.map(np.array_equal, new.target_params, state.target_params)
    assert all(jax.tree.leaves(same))
    soft = td3.soft_update_critic(new, 0.1)
    want = jax.tree.map(lambda t, o: 0.9 * t + 0.1 * o, state.target_params, new.params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), soft.target_params, want)


def test_td3_step_delays_the_actor_and_its_target():
    actor = ActorSpec(3, 2, (8,))
    critic = CriticSpec(3, 2, (8,))
    state = td3.td3_init(jax.random.key(0), actor, critic)
    k = jax.random.split(jax.random.key(1), 4)
    batch = Transition(
        jax.random.normal(k[0], (16, 3)),
        jax.random.uniform(k[1], (16, 2)),
        jax.random.normal(k[2], (16,)),
        jax.random.normal(k[3], (16, 3)),
        jnp.ones(16),
    )
    hp = td3.TD3HParams(tau=0.25)
    one, _ = td3.td3_step(state, batch, jax.random.key(2), hp, actor, critic)
    np.testing.assert_array_equal(one.actor, state.actor)  # step 1: critic only
    np.testing.assert_array_equal(one.actor_target, state.actor_target)
    two, m = td3.td3_step(one, batch, jax.random.key(3), hp, actor, critic)
    assert not np.allclose(two.actor, one.actor)  # step 2: actor and targets move
    np.testing.assert_allclose(
        two.actor_target, 0.75 * one.actor_target + 0.25 * two.actor, rtol=1e-6
    )
    assert float(m["actor_loss"]) != 0.0


def test_actor_step_lowers_the_actor_loss():
    critic_params = _critic_params()
    flat = _actor_flat()
    opt = td3.actor_opt_init(flat)
    obs = jnp.linspace(-1, 1, 8)[:, None]
    hp = td3.TD3HParams(actor_lr=1e-2)
    before = td3.actor_loss(ACTOR, CRITIC, flat, critic_params, obs)
    for _ in range(20):
        flat, opt, _ = td3.actor_step(flat, opt, critic_params, obs, hp, ACTOR, CRITIC)
    after = td3.actor_loss(ACTOR, CRITIC, flat, critic_params, obs)
    assert float(after) < float(before) - 1e-3
