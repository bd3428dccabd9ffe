"""The TD3 family: TD3 alone (docs/algorithm.md §2), one worker on the slot engine.

Its slot always rolls out with the learner's actor plus exploration noise (uniform random
actions in the warm-up); every tick takes one env step and then one joint TD3 update (critic
every step, actor and targets every `policy_delay`-th); an episode end is recorded as an
arrival and the slot starts another. There is no ES: the reported policy is the actor.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from aes_rl import engine
from aes_rl import td3 as td3_lib
from aes_rl.engine import ROLLOUT, Ended, Family, Learner, Setup, TrainState
from aes_rl.families import diagnostics


def init_learner(s: Setup, key: jax.Array, mu0: jax.Array):
    """TD3's own actor (the slot's policy), critic and targets; no per-slot critic copies."""
    del mu0
    learner = td3_lib.td3_init(key, s.actor, s.critic)
    return Learner(learner, learner.actor, None)


def init_es(s: Setup, mu0: jax.Array, key: jax.Array):
    return None


def start(s: Setup, state: TrainState, key: jax.Array) -> TrainState:
    del key
    slots = state.slots.replace(phase=jnp.full(state.slots.phase.shape, ROLLOUT, jnp.int32))
    return state.replace(slots=slots)


def no_draw(s, state, free, key):
    raise NotImplementedError("td3's one slot never draws a job")


def acting(s: Setup, state: TrainState):
    """The learner's actor as its layers, made once a tick (`ActorSpec.layers`)."""
    return s.actor.layers(state.learner.actor)


def act(s: Setup, state: TrainState, layers, key: jax.Array, rand: jax.Array) -> jax.Array:
    """The actor plus exploration noise; uniform random actions in the warm-up."""
    sl, a_max = state.slots, s.actor.max_action
    act = jax.vmap(s.actor.apply_layers, in_axes=(None, 0))(layers, sl.env.obs)
    noise = s.h.expl_noise * a_max * jax.random.normal(key, act.shape)
    act = jnp.clip(act + noise, -a_max, a_max)
    warm = state.counters.total_steps < s.h.warmup_steps
    return jnp.where(warm, rand, act)


def critic_target(s: Setup, state: TrainState, n_now):
    return engine.worker_critic_target(s, state, n_now, capped=True)


def critic_update(s: Setup, learner, batch, policy, key):
    """One joint TD3 update (the policy is the learner's own actor)."""
    del policy
    return td3_lib.td3_step(learner, batch, key, s.hp, s.actor, s.critic, s.h.policy_delay)[0]


def end_jobs(s: Setup, state: TrainState, done, k_phase, k_tell, k_jobs):
    """An episode end is an arrival (recorded for metrics); the slot starts a new one."""
    del k_tell, k_jobs
    sl, c = state.slots, state.counters
    sl = sl.replace(
        ret=jnp.where(done, sl.ep_ret, sl.ret),
        length=jnp.where(done, sl.ep_len, sl.length),
        ep_ret=jnp.where(done, 0.0, sl.ep_ret),
        ep_len=jnp.where(done, 0, sl.ep_len),
        env=engine.reset_slot_envs(s, sl.env, done, k_phase),
    )
    c = c.replace(arrivals=c.arrivals + engine.count(done))
    state = state.replace(slots=sl, counters=c)
    arrived_rl = jnp.ones_like(done)  # every TD3 episode is its actor's
    info = diagnostics.no_es_info(done.shape[0])
    return state, Ended(done, jnp.zeros(done.shape), jnp.zeros_like(done), arrived_rl, info)


def mean(s: Setup, state: TrainState) -> jax.Array:
    return state.learner.actor


def finite_parts(s: Setup, state: TrainState) -> jax.Array:
    lrn = state.learner
    parts = (
        jnp.ones((), bool),
        engine.finite(lrn.critic),
        engine.finite((lrn.actor, lrn.actor_target)),
    )
    return jnp.stack(parts)


def var(s: Setup, state: TrainState) -> jax.Array:
    return jnp.zeros(())


FAMILY = Family(
    name="td3",
    staggered=False,
    joint_update=True,
    init_learner=init_learner,
    init_es=init_es,
    start=start,
    draw=no_draw,
    train_actors=lambda s, state, key: state,
    acting=acting,
    act=act,
    critic_target=critic_target,
    critic_update=critic_update,
    critic_worker=lambda s: False,  # one joint update per env step, no jobs
    end_jobs=end_jobs,
    mean=mean,
    finite_parts=finite_parts,
    var=var,
)
