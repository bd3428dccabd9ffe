"""TD3 (Fujimoto et al. 2018) as pure functions, in three layers (docs/algorithm.md §2).

1. Losses: `td3_target`, `critic_loss`, `actor_loss`.
2. Learner updates on explicit states: `critic_step` (caller-given target policy: AES-RL trains
   the shared critic against the ES mean), `actor_step` (actor-only, one flat actor with its own
   Adam state; the loop vmaps it over worker slots), and `td3_step` (the standard joint update
   with policy delay 2, target networks updated together with the actor).
3. The engine that calls them lives in `aes_rl.engine`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import struct

from aes_rl.fields import INT_MAX, field, options
from aes_rl.networks import ActorSpec, CriticSpec
from aes_rl.replay import Transition

# The TD3 baseline's own run settings (`aes_rl.config.Config` fields); the TD3 numbers every
# learner shares (gamma, tau, the learning rates, ...) are declared in config.
OPTIONS = options(
    "td3",
    expl_noise=field(
        0.1, "TD3 baseline's exploration noise std, times max_action.", 0, 1e6, traced=True
    ),
    policy_delay=field(
        2, "TD3 baseline: critic steps per actor and target update.", 1, INT_MAX, traced=True
    ),
)


@struct.dataclass
class TD3HParams:
    """Traced TD3 hyper-parameters (a pytree, so sweeps can be vmapped)."""

    gamma: float = 0.99
    tau: float = 0.005
    policy_noise: float = 0.2  # std of the target-policy smoothing noise (not * max_action)
    noise_clip: float = 0.5
    critic_lr: float = 1e-3
    actor_lr: float = 1e-3
    expl_noise: float = 0.1  # TD3 baseline's exploration noise, times max_action


@struct.dataclass
class CriticState:
    params: dict  # twin-Q parameters
    target_params: dict  # Polyak-averaged copy
    opt_state: optax.OptState  # one Adam over both critics


@struct.dataclass
class TD3State:
    actor: jax.Array  # [d] f32 flat actor
    actor_target: jax.Array  # [d] f32
    actor_opt: optax.OptState  # Adam over the flat actor
    critic: CriticState
    steps: jax.Array  # [] i32 critic updates done


# ---------------------------------------------------------------- layer 1: losses


def td3_target(reward, not_done, q1_next, q2_next, gamma) -> jax.Array:
    """Clipped double-Q target: y = r + gamma * not_done * min(Q1', Q2') (TD3 eq. 10)."""
    return reward + gamma * not_done * jnp.minimum(q1_next, q2_next)


def smoothed_target_action(actor: ActorSpec, flat, next_obs, noise, noise_clip) -> jax.Array:
    """pi'(s') + clip(noise, -c, c), clipped to +-max_action (TD3 eq. 14, target smoothing)."""
    act = actor.apply(flat, next_obs) + jnp.clip(noise, -noise_clip, noise_clip)
    return jnp.clip(act, -actor.max_action, actor.max_action)


def critic_loss(critic: CriticSpec, params, batch: Transition, y: jax.Array) -> jax.Array:
    """MSE(Q1(s,a), y) + MSE(Q2(s,a), y), y held constant."""
    q1, q2 = critic.apply(params, batch.obs, batch.action)
    y = jax.lax.stop_gradient(y)
    return jnp.mean((q1 - y) ** 2) + jnp.mean((q2 - y) ** 2)


def actor_loss(actor: ActorSpec, critic: CriticSpec, flat, critic_params, obs) -> jax.Array:
    """Deterministic policy gradient loss: -mean Q1(s, pi(s))."""
    q1, _ = critic.apply(critic_params, obs, actor.apply(flat, obs))
    return -jnp.mean(q1)


# ---------------------------------------------------------------- layer 2: updates


def polyak(target, online, tau):
    return jax.tree.map(lambda t, o: (1.0 - tau) * t + tau * o, target, online)


def critic_init(key: jax.Array, critic: CriticSpec) -> CriticState:
    params = critic.init(key)
    return CriticState(params, params, optax.adam(1e-3).init(params))


def critic_step(
    state: CriticState,
    batch: Transition,
    policy: jax.Array,
    key: jax.Array,
    hp: TD3HParams,
    actor: ActorSpec,
    critic: CriticSpec,
) -> tuple[CriticState, jax.Array]:
    """One Adam step of both critics against target policy `policy` (flat [d]).

    Target networks are NOT updated here (see `soft_update_critic`).
    """
    noise = hp.policy_noise * jax.random.normal(key, batch.action.shape)
    next_act = smoothed_target_action(actor, policy, batch.next_obs, noise, hp.noise_clip)
    q1n, q2n = critic.apply(state.target_params, batch.next_obs, next_act)
    y = td3_target(batch.reward, batch.not_done, q1n, q2n, hp.gamma)
    loss, grads = jax.value_and_grad(lambda p: critic_loss(critic, p, batch, y))(state.params)
    updates, opt_state = optax.adam(hp.critic_lr).update(grads, state.opt_state, state.params)
    return state.replace(
        params=optax.apply_updates(state.params, updates), opt_state=opt_state
    ), loss


def soft_update_critic(state: CriticState, tau) -> CriticState:
    return state.replace(target_params=polyak(state.target_params, state.params, tau))


def actor_opt_init(flat: jax.Array) -> optax.OptState:
    """A fresh Adam state for a flat actor (every AES-RL RL job starts from one)."""
    return optax.adam(1e-3).init(flat)


def actor_step(
    flat: jax.Array,
    opt_state: optax.OptState,
    critic_params,
    obs: jax.Array,
    hp: TD3HParams,
    actor: ActorSpec,
    critic: CriticSpec,
) -> tuple[jax.Array, optax.OptState, jax.Array]:
    """One actor-only Adam step on -mean Q1(s, pi(s)); the critic is not trained."""
    loss, grad = jax.value_and_grad(lambda f: actor_loss(actor, critic, f, critic_params, obs))(
        flat
    )
    updates, opt_state = optax.adam(hp.actor_lr).update(grad, opt_state, flat)
    return flat + updates, opt_state, loss


def td3_init(key: jax.Array, actor: ActorSpec, critic: CriticSpec) -> TD3State:
    k_actor, k_critic = jax.random.split(key)
    flat = actor.init_flat(k_actor)
    return TD3State(
        flat, flat, actor_opt_init(flat), critic_init(k_critic, critic), jnp.zeros((), jnp.int32)
    )


def td3_step(
    state: TD3State,
    batch: Transition,
    key: jax.Array,
    hp: TD3HParams,
    actor: ActorSpec,
    critic: CriticSpec,
    policy_delay: int = 2,
) -> tuple[TD3State, dict]:
    """Standard TD3: critic every step; actor and both targets every `policy_delay` steps."""
    cstate, closs = critic_step(state.critic, batch, state.actor_target, key, hp, actor, critic)
    steps = state.steps + 1

    def delayed(args):
        cs, flat, opt = args
        flat, opt, aloss = actor_step(flat, opt, cs.params, batch.obs, hp, actor, critic)
        return soft_update_critic(cs, hp.tau), flat, opt, aloss

    def skip(args):
        cs, flat, opt = args
        return cs, flat, opt, jnp.zeros((), jnp.float32)

    do_actor = steps % policy_delay == 0
    args = (cstate, state.actor, state.actor_opt)
    cstate, flat, opt, aloss = jax.lax.cond(do_actor, delayed, skip, args)
    target = jnp.where(do_actor, polyak(state.actor_target, flat, hp.tau), state.actor_target)
    new = TD3State(flat, target, opt, cstate, steps)
    return new, {"critic_loss": closs, "actor_loss": aloss}
