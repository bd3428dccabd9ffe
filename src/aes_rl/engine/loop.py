"""One row's state, one tick of modeled time, a chunk of ticks (docs/algorithm.md §6, "One tick").

In a tick every slot does what the cost model says that time buys:

1. training slots take `actor_steps_per_tick` actor-only TD3 steps (exactly `B_a` or `S_prev`
   in all) against the critic snapshot taken when their training started (`Family.train_actors`);
2. rolling-out and mean-evaluating slots take `env_steps_per_tick` env steps (per-slot
   policies, vmapped); rollout transitions enter the replay buffer and are counted
   (`envstep.step_envs`);
3. the critic takes `critic_steps_per_tick` steps: as a separate worker, in jobs against the
   ES mean at each job's start (`CriticJob`), or in the slot that holds the serial critic job
   (p-cem-rl, cem-rl); td3 takes one joint update per env step (`learn.train_critic`);
4. slots whose job ended are handled by the family (`Family.end_jobs`): asynchronous
   algorithms tell arrivals to the ES in slot order; synchronous ones file results into the
   generation, whose stages end in barriers; then every free slot draws its next job
   (`jobs.next_jobs`).

Rates may be fractions: a rate p/q gives floor((t+1) p/q) - floor(t p/q) units at tick t.
Asynchrony is data: masks, counters and `jnp.where`; branches (`lax.cond`) only on a row's
scalar predicates, so that one row skips work no slot needs.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from aes_rl import replay, td3
from aes_rl.engine import envstep
from aes_rl.engine.family import Setup
from aes_rl.engine.learn import train_critic
from aes_rl.engine.state import (
    SCOPES,
    WAIT,
    Counters,
    CriticJob,
    HParams,
    Slots,
    TickMetrics,
    TrainState,
    count,
)


def init(s: Setup, key: jax.Array, hp: HParams) -> TrainState:
    """The state of one row (no row axis): `s` is the structure's setup, `hp` the row's
    traced values."""
    s = s.bind(hp)
    cfg = s.cfg
    w = cfg.num_slots
    k_actor, k_critic, k_es, k_env, k_jobs, key = jax.random.split(key, 6)
    mu0 = s.actor.init_flat(k_actor)
    learner, mu0, critic = s.family.init_learner(s, k_critic, mu0)
    es = s.family.init_es(s, mu0, k_es)
    env = jax.vmap(s.env.reset)(jax.random.split(k_env, w))
    if cfg.stagger and s.family.staggered:  # staggered per-slot step counters (section 6)
        offsets = (jnp.arange(w, dtype=jnp.int32) * cfg.episode_length) // w
        env = env.replace(info=dict(env.info, steps=offsets))
    z = functools.partial(jnp.zeros, (w,))
    slots = Slots(
        phase=jnp.full((w,), WAIT, jnp.int32),
        counter=z(dtype=jnp.int32),
        target=z(dtype=jnp.int32),
        params=jnp.tile(mu0, (w, 1)),
        x=jnp.tile(mu0, (w, 1)),
        opt=jax.vmap(td3.actor_opt_init)(jnp.tile(mu0, (w, 1))),
        critic=critic,
        env=env,
        ep_ret=z(),
        ep_len=z(dtype=jnp.int32),
        ret=z(),
        length=z(dtype=jnp.int32),
        eval_sum=z(),
        eval_count=z(dtype=jnp.int32),
        is_rl=z(dtype=bool),
        random=z(dtype=bool),
        member=z(dtype=jnp.int32),
        drawn_mean=jnp.tile(mu0, (w, 1)),
        drawn_tells=z(dtype=jnp.int32),
    )
    i32 = functools.partial(jnp.asarray, dtype=jnp.int32)
    counters = Counters(
        *(i32(0) for _ in range(5)),
        n_rl=i32(1),
        n_es=i32(1),
        arrivals=i32(0),
        lengths=jnp.zeros((cfg.rl_history,), jnp.int32),
        lengths_seen=i32(0),
        f_mu=jnp.zeros(()),
        nonfinite_arrivals=i32(0),
        nonfinite_transitions=i32(0),
    )
    buffer = replay.init(cfg.buffer_size, s.env.observation_size, s.env.action_size)
    # Only the running family's parts: a family's `start` adds its own state (`fam`).
    job = None
    if s.family.critic_worker(s):
        job = CriticJob(jnp.zeros_like(mu0), jnp.zeros((), jnp.int32), learner.params)
    state = TrainState(key, slots, es, learner, buffer, None, counters, hp, job)
    return s.family.start(s, state, k_jobs)


def tick(s: Setup, state: TrainState, _=None) -> tuple[TrainState, TickMetrics]:
    """Advance every slot by one tick of modeled time (module docstring, steps 1-4). The
    family supplies every algorithm-specific step; the tick itself names no algorithm."""
    s = s.bind(state.hp)
    fam = s.family
    key, k_train, k_act, k_critic, k_phase, k_tell, k_jobs = jax.random.split(state.key, 7)
    busy = count(state.slots.phase != WAIT)
    state = state.replace(key=key)
    # The named scopes mark the tick's parts in the compiled program (profiles read them).
    with jax.named_scope(SCOPES[0]):
        state = fam.train_actors(s, state, k_train)
    with jax.named_scope(SCOPES[1]):
        state, done, env_path = envstep.step_envs(s, state, k_act)
    with jax.named_scope(SCOPES[2]):
        state = train_critic(s, state, k_critic)
    with jax.named_scope(SCOPES[3]):
        state, ended = fam.end_jobs(s, state, done, k_phase, k_tell, k_jobs)
    c = state.counters
    state = state.replace(counters=c.replace(ticks=c.ticks + 1, busy=c.busy + busy))
    sl = state.slots
    metrics = TickMetrics(
        ended.arrived,
        sl.ret,
        sl.length,
        ended.p,
        ended.arrived_rl,
        ended.told,
        c.f_mu,
        env_path,
        ended.info,
        c.total_steps,
    )
    return state, metrics


def run_chunk(s: Setup, state: TrainState, num_ticks: int) -> tuple[TrainState, TickMetrics]:
    """`num_ticks` ticks of one row (no row axis), un-jitted."""
    return jax.lax.scan(functools.partial(tick, s), state, None, length=num_ticks)
