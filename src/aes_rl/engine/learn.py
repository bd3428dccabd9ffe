"""Actors and critic: the slots' policies, their actor steps, the critic's steps, and what
the ES families report (docs/algorithm.md §2 and §6). The defaults of `engine.Family`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from aes_rl import replay, td3
from aes_rl.engine.state import TRAIN, Learner, TrainState, count, tile, tree_where

if TYPE_CHECKING:
    from aes_rl.engine.family import Setup

FINITE_PARTS = ("ES state", "critic", "actors")


def train_actors(s: Setup, state: TrainState, key: jax.Array) -> TrainState:
    """This tick's actor steps for every training slot (against its critic snapshot), stopping
    at the job's target."""
    cfg, sl = s.cfg, state.slots
    training = sl.phase == TRAIN
    hp, w, rate = s.hp, cfg.num_slots, s.actor_rate
    n_now = rate.at(state.counters.ticks)

    def update(params, opt, critic, obs):
        return td3.actor_step(params, opt, critic, obs, hp, s.actor, s.critic)

    def step(carry, inp):
        params, opt, counter = carry
        k, i = inp
        active = training & (counter < sl.target) & (i < n_now)
        obs = jax.vmap(lambda kk: replay.sample(state.buffer, kk, cfg.batch_size).obs)(
            jax.random.split(k, w)
        )
        new_p, new_o, _ = jax.vmap(update)(params, opt, sl.critic, obs)
        params = jnp.where(active[:, None], new_p, params)
        opt = tree_where(active, new_o, opt)
        return (params, opt, counter + active), count(active)

    def run(args):
        keys = jax.random.split(key, rate.most)
        (params, opt, counter), n = jax.lax.scan(step, args, (keys, jnp.arange(rate.most)))
        return params, opt, counter, jnp.sum(n)

    params, opt, counter, n = jax.lax.cond(
        jnp.any(training),
        run,
        lambda a: a + (jnp.zeros((), jnp.int32),),
        (sl.params, sl.opt, sl.counter),
    )
    c = state.counters
    return state.replace(
        slots=sl.replace(params=params, opt=opt, counter=counter),
        counters=c.replace(actor_steps=c.actor_steps + n),
    )


def slot_layers(s: Setup, state: TrainState):
    """Every slot's actor as its layers ([W] leading axis), made once a tick: the env steps
    only read them (`ActorSpec.layers`)."""
    return jax.vmap(s.actor.layers)(state.slots.params)


def slot_actions(s: Setup, state: TrainState, layers, key: jax.Array, rand: jax.Array):
    """Every slot's own policy; uniform random actions where its rollout is a warm-up one."""
    del key
    sl = state.slots
    act = jax.vmap(s.actor.apply_layers)(layers, sl.env.obs)
    return jnp.where(sl.random[:, None], rand, act)


def train_critic(s: Setup, state: TrainState, key: jax.Array) -> TrainState:
    """This tick's critic steps, up to what the family allows (`critic_target`): td3's joint
    update; a critic worker's job against the ES mean (`CriticJob`); or the serial critic job
    of a slot, against that job's member (counted in the slot, `after_critic`)."""
    cfg, c = s.cfg, state.counters
    rate = s.critic_rate
    n_now = rate.at(c.ticks)
    policy, left = s.family.critic_target(s, state, n_now)

    def step(carry, inp):
        learner, job, done = carry
        k, i = inp
        now = i < n_now
        if job is None:
            ok = now & (done < left) & (state.buffer.size > 0)
            target = policy
        else:  # a job starts when none runs and the family allows a step now; it runs to its end
            start = now & (job.left == 0) & (done < left)
            job = job.replace(
                policy=jnp.where(start, policy, job.policy),
                left=jnp.where(start, s.h.critic_job_steps, job.left),
            )
            ok = now & (job.left > 0) & (state.buffer.size > 0)
            target = job.policy

        def update(lrn):
            k_batch, k_noise = jax.random.split(k)
            batch = replay.sample(state.buffer, k_batch, cfg.batch_size)
            return s.family.critic_update(s, lrn, batch, target, k_noise)

        learner = jax.lax.cond(ok, update, lambda lrn: lrn, learner)
        if job is not None:  # a job that ended hands its critic over
            left_after = job.left - ok
            published = jax.lax.cond(
                ok & (left_after == 0),
                lambda p: p[0],
                lambda p: p[1],
                (learner.params, job.published),
            )
            job = job.replace(left=left_after, published=published)
        return (learner, job, done + ok), None

    keys = jax.random.split(key, rate.most)
    init = (state.learner, state.critic_job, jnp.zeros((), jnp.int32))
    (learner, job, n), _ = jax.lax.scan(step, init, (keys, jnp.arange(rate.most)))
    sl = s.family.after_critic(s, state.slots, n)
    return state.replace(
        learner=learner,
        critic_job=job,
        slots=sl,
        counters=c.replace(critic_steps=c.critic_steps + n),
    )


def worker_critic_target(s: Setup, state: TrainState, n_now: jax.Array, capped: bool):
    """A critic worker against the reported policy (the ES mean): this tick's steps once past
    the warm-up, and with `capped` none while the critic's steps are not behind the counted
    env steps. With jobs (`CriticJob`) this decides only when a job may start; the job then
    takes its `critic_job_steps` (the authors' worker may so run up to a job ahead)."""
    c = state.counters
    past_warmup = (c.total_steps >= s.h.warmup_steps) & (state.buffer.size > 0)
    left = jnp.where(past_warmup, n_now, 0)
    if capped:
        left = jnp.minimum(left, c.total_steps - c.critic_steps)
    return s.family.mean(s, state), left


def shared_critic_learner(s: Setup, key: jax.Array, mu0: jax.Array):
    """The shared twin critic of the ES families, and its per-slot snapshots."""
    learner = td3.critic_init(key, s.critic)
    return Learner(learner, mu0, tile(learner.params, s.cfg.num_slots))


def shared_critic_update(s: Setup, lrn, batch, policy, key):
    """One step of the shared critic against `policy`, then its soft target update."""
    lrn, _ = td3.critic_step(lrn, batch, policy, key, s.hp, s.actor, s.critic)
    return td3.soft_update_critic(lrn, s.h.tau)


def finite(tree) -> jax.Array:
    """Every float leaf of `tree` is finite (a scalar bool)."""
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(x.dtype, jnp.floating)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.ones((), bool)


def es_finite_parts(s: Setup, state: TrainState) -> jax.Array:
    """[3] bool: the ES state (and f_mu), the shared critic, the slots' actors are finite."""
    es = (state.es, state.counters.f_mu)
    critic = (state.learner, state.critic_job)
    parts = (finite(es), finite(critic), finite((state.slots.params, state.slots.x)))
    return jnp.stack(parts)


def es_mean(s: Setup, state: TrainState) -> jax.Array:
    return s.strategy.mean(state.es)


def es_var(s: Setup, state: TrainState) -> jax.Array:
    return jnp.mean(s.strategy.var(state.es))
