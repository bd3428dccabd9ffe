"""The asynchronous-ES family (AES-RL, ACEM-RL, (1+1)-ES; docs/algorithm.md §2 and §6).

Every free slot samples a member from the current distribution; after the warm-up it is an RL
member (actor training, then its rollout) or an ES member (its rollout) by population control.
When a rollout ends the slot evaluates the mean (`n_mean_evals` episodes) and then its arrival
(x, f, f_mu) is told to the ES at once, in slot order. The critic is a separate worker that
trains in jobs against the ES mean (`engine.CriticJob`), starting one only while it is behind
the counted steps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from aes_rl import engine
from aes_rl.engine import ROLLOUT, TRAIN, Draw, Ended, Family, Setup, TrainState
from aes_rl.families import diagnostics


def init_es(s: Setup, mu0: jax.Array, key: jax.Array):
    del key
    return s.strategy.init(mu0)


def draw(s: Setup, state: TrainState, free, key):
    """Sample members for free slots; RL or ES by population control (section 2, step 2)."""
    c = state.counters
    warm = c.total_steps < s.h.warmup_steps
    keys = jax.random.split(key, free.shape[0])

    def one(carry, inp):
        n_rl, n_es = carry
        k, is_free = inp
        k_x, k_u = jax.random.split(k)
        x = s.strategy.sample(k_x, state.es)
        r = n_rl / (n_rl + n_es)
        p_rl = 0.5 - s.h.pop_control_k * (r - s.h.rho)
        rl = ~warm & (jax.random.uniform(k_u) <= p_rl)
        counted = is_free & ~warm
        carry = (n_rl + (counted & rl), n_es + (counted & ~rl))
        return carry, (x, rl)

    (n_rl, n_es), (x, rl) = jax.lax.scan(one, (c.n_rl, c.n_es), (keys, free))
    b_a = jnp.maximum(jnp.sum(c.lengths), 1)
    state = state.replace(counters=c.replace(n_rl=n_rl, n_es=n_es))
    phase = jnp.where(rl, TRAIN, ROLLOUT)
    zeros = jnp.zeros(free.shape, jnp.int32)
    return state, Draw(x, phase, rl, jnp.ones(free.shape, bool), zeros, jnp.full(free.shape, b_a))


def start(s: Setup, state: TrainState, key: jax.Array) -> TrainState:
    """Every slot draws its first job (the envs are fresh and carry the staggered counters)."""
    free = jnp.ones(state.slots.phase.shape, bool)
    return engine.assign_jobs(s, state, free, key, reset_envs=False)


def critic_target(s: Setup, state: TrainState, n_now):
    return engine.worker_critic_target(s, state, n_now, capped=True)


def tell(s: Setup, state: TrainState, arrived, mean_rets):
    """Tell arrivals to the ES in slot order. Non-finite guard: an arrival whose return or mean
    fitness is not finite is not told, only counted. Returns (state, ps, told)."""
    sl, c = state.slots, state.counters
    n_arr = engine.count(arrived)
    told = arrived & jnp.isfinite(sl.ret) & jnp.isfinite(mean_rets)
    n_told = engine.count(told)
    es, ps = jax.lax.cond(
        n_told > 0,
        lambda e: s.strategy.tell_many(e, sl.x, sl.ret, mean_rets, told),
        lambda e: (e, jnp.zeros(arrived.shape)),
        state.es,
    )
    last = jnp.max(jnp.where(told, jnp.arange(arrived.shape[0]), -1))
    f_mu = jnp.where(n_told > 0, mean_rets[jnp.maximum(last, 0)], c.f_mu)
    c = c.replace(
        f_mu=f_mu,
        arrivals=c.arrivals + n_arr,
        nonfinite_arrivals=c.nonfinite_arrivals + n_arr - n_told,
    )
    return state.replace(es=es, counters=c), ps, told


def end_jobs(s: Setup, state: TrainState, done, k_phase, k_tell, k_jobs):
    """Training -> rollout -> mean evaluation; ended jobs are told; free slots draw again."""
    del k_tell
    state, job_end, mean_rets = engine.advance_phases(
        s, state, done, k_phase, chain=True, eval_after_rollout=s.cfg.n_mean_evals > 0
    )
    before = state
    state, ps, told = tell(s, state, job_end, mean_rets)
    f_mu = mean_rets if s.cfg.n_mean_evals > 0 else None
    info = diagnostics.es_info(s, job_end, before, state, f_mu)
    state, arrived_rl = engine.next_jobs(s, state, job_end, k_jobs)
    return state, Ended(job_end, ps, told, arrived_rl, info)


FAMILY = Family(
    name="async",
    staggered=True,
    init_es=init_es,
    start=start,
    draw=draw,
    critic_target=critic_target,
    end_jobs=end_jobs,
)
