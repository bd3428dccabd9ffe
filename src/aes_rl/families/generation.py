"""The generation-ES family (P-CEM-RL, CEM-RL; docs/algorithm.md §5 and §6).

A generation is asked for N members; its stages (the serial critic jobs, the RL members' actor
training, the evaluations, the mean evaluation) are handed out to free slots in slot order
and each ends in a barrier: after the evaluations the generation is told, after the mean
evaluation the next one is asked. The algorithm's options (`algorithms.Algorithm`) say which
stages exist: `actor_stage` (p-cem-rl trains RL members as a stage of their own), `chained`
(cem-rl runs an RL member's critic segment, training and rollout in one job) and
`serial_critic` (the critic trains in a slot, member by member).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from aes_rl import engine
from aes_rl.engine import (
    CRITIC,
    MEAN_EVAL,
    ROLLOUT,
    TRAIN,
    Draw,
    Ended,
    Family,
    Setup,
    TrainState,
)
from aes_rl.families import diagnostics

# Stages of a generation, each ending in a barrier.
STAGE_CRITIC, STAGE_ACTOR, STAGE_EVAL, STAGE_MEAN = 0, 1, 2, 3
STAGES = ("critic", "actor", "eval", "mean-eval")


@struct.dataclass
class Generation:
    """The population of a generation (this family's own state, `TrainState.fam`)."""

    xs: jax.Array  # [N, d] f32, members (RL members replaced by their trained actors)
    rets: jax.Array  # [N] f32
    is_rl: jax.Array  # [N] bool, rows 0..rl_members-1 after warm-up
    stage: jax.Array  # [] i32, STAGE_CRITIC/ACTOR/EVAL/MEAN
    handed: jax.Array  # [] i32, jobs of this stage handed out
    finished: jax.Array  # [] i32, jobs of this stage finished
    steps: jax.Array  # [] i32, counted steps of this generation
    s_prev: jax.Array  # [] i32, counted steps of the previous generation


def init_es(s: Setup, mu0: jax.Array, key: jax.Array):
    return s.strategy.init(key, mu0)


def new_generation(s: Setup, state: TrainState, key: jax.Array) -> Generation:
    """Ask the generation strategy for N members; rows 0..rl_members-1 (the +eps half of the
    antithetic pairs) are RL members once the warm-up is over and a generation has run."""
    cfg, gen = s.cfg, state.fam
    xs = s.strategy.ask(key, state.es)
    warm = state.counters.total_steps < s.h.warmup_steps
    rl = (jnp.arange(cfg.pop_size) < s.h.rl_members) & ~warm & (gen.steps > 0)
    n, zero = cfg.pop_size, jnp.zeros((), jnp.int32)
    return Generation(xs, jnp.zeros((n,)), rl, zero, zero, zero, zero, gen.steps)


def stage_size(s: Setup, gen: Generation) -> jax.Array:
    """Jobs in the generation's current stage: serial critic jobs (one per RL member, with an
    actor stage and a serial critic), actor-training jobs, evaluations, mean evaluation."""
    cfg = s.cfg
    n_rl = engine.count(gen.is_rl)
    staged = s.algorithm.actor_stage
    none = jnp.zeros((), jnp.int32)
    sizes = jnp.stack(
        [
            n_rl if (staged and s.serial_critic) else none,
            n_rl if staged else none,
            jnp.asarray(cfg.pop_size, jnp.int32),
            jnp.asarray(int(cfg.n_mean_evals > 0), jnp.int32),
        ]
    )
    return sizes[gen.stage]


def rank_last_if_nonfinite(rets: jax.Array) -> jax.Array:
    """Non-finite returns replaced by (lowest finite return - 1): they rank last, finitely."""
    finite = jnp.isfinite(rets)
    floor = jnp.min(jnp.where(finite, rets, jnp.inf))
    return jnp.where(finite, rets, jnp.where(jnp.isfinite(floor), floor - 1.0, 0.0))


def generation_tell(s: Setup, es, gen: Generation):
    """Tell the generation (non-finite returns rank last; none finite: the ES is unchanged)."""
    new = s.strategy.tell(es, gen.xs, rank_last_if_nonfinite(gen.rets))
    ok = jnp.any(jnp.isfinite(gen.rets))
    return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, es)


def next_stage(s: Setup, es, gen: Generation, counters, key: jax.Array):
    """The barrier at the end of a complete stage: evaluation -> tell; mean evaluation -> ask."""

    def after_eval(es, gen):
        es = generation_tell(s, es, gen)
        return es, gen.replace(stage=jnp.asarray(STAGE_MEAN, jnp.int32))

    def after_mean(es, gen):
        st = TrainState(None, None, es, None, None, gen, counters, s.h)
        return es, new_generation(s, st, key)

    def advance(es, gen):
        return es, gen.replace(stage=gen.stage + 1)

    es, gen = jax.lax.switch(gen.stage, [advance, advance, after_eval, after_mean], es, gen)
    return es, gen.replace(handed=jnp.zeros_like(gen.handed), finished=jnp.zeros_like(gen.handed))


def barriers(s: Setup, state: TrainState, key: jax.Array) -> TrainState:
    """Pass every barrier whose stage is complete (empty stages are passed at once)."""
    for i in range(len(STAGES)):
        gen = state.fam
        complete = gen.finished >= stage_size(s, gen)

        def go(parts, k=jax.random.fold_in(key, i), counters=state.counters):
            return next_stage(s, parts[0], parts[1], counters, k)

        # The cond carries only the ES and the generation (never the replay buffer).
        es, gen = jax.lax.cond(complete, go, lambda p: p, (state.es, gen))
        state = state.replace(es=es, fam=gen)
    return state


def empty_generation(s: Setup, d: int) -> Generation:
    n, zero = s.cfg.pop_size, jnp.zeros((), jnp.int32)
    return Generation(jnp.zeros((n, d)), jnp.zeros((n,)), jnp.zeros((n,), bool), *(zero,) * 5)


def start(s: Setup, state: TrainState, key: jax.Array) -> TrainState:
    """Ask the first generation, pass the empty stages of a warm-up generation, hand out jobs."""
    state = state.replace(fam=empty_generation(s, state.slots.params.shape[1]))
    state = state.replace(fam=new_generation(s, state, key))
    state = barriers(s, state, key)
    free = jnp.ones(state.slots.phase.shape, bool)
    return engine.assign_jobs(s, state, free, key, reset_envs=False)


def draw(s: Setup, state: TrainState, free, key):
    """Hand out the current stage's jobs in slot order. Serial jobs (critic, mean evaluation)
    go to slot 0 only; a slot with no job left waits."""
    del key
    cfg, gen = s.cfg, state.fam
    w = free.shape[0]
    serial_stage = (gen.stage == STAGE_CRITIC) | (gen.stage == STAGE_MEAN)
    eligible = free & (~serial_stage | (jnp.arange(w) == 0))
    order = jnp.cumsum(eligible.astype(jnp.int32)) - 1
    idx = gen.handed + order
    valid = eligible & (idx < stage_size(s, gen))
    member = jnp.minimum(idx, cfg.pop_size - 1)
    gen = gen.replace(handed=gen.handed + engine.count(valid))
    rl = gen.is_rl[member]
    chain = s.algorithm.chained  # an RL member's job starts with its critic segment
    eval_phase = jnp.where(rl & chain, CRITIC, ROLLOUT)
    phase = jnp.stack(
        [jnp.full((w,), CRITIC), jnp.full((w,), TRAIN), eval_phase, jnp.full((w,), MEAN_EVAL)]
    )[gen.stage]
    seg = jnp.maximum(gen.s_prev // jnp.maximum(s.h.rl_members, 1), 1)
    target = jnp.where(phase == CRITIC, seg, jnp.maximum(gen.s_prev, 1))
    x = jnp.where((phase == MEAN_EVAL)[:, None], s.strategy.mean(state.es)[None], gen.xs[member])
    rl = rl & (phase != MEAN_EVAL)
    return state.replace(fam=gen), Draw(x, phase, rl, valid, member, target)


def critic_target(s: Setup, state: TrainState, n_now):
    """The serial critic job's member and the steps left of its job; or (p-cem-rl's parallel
    critic) a worker against the mean, with no cap on critic steps."""
    if not s.serial_critic:
        return engine.worker_critic_target(s, state, n_now, capped=False)
    sl = state.slots
    in_critic = sl.phase == CRITIC
    w_star = jnp.argmax(in_critic)
    left = jnp.where(jnp.any(in_critic), sl.target[w_star] - sl.counter[w_star], 0)
    return sl.params[w_star], left


def after_critic(s: Setup, slots, n):
    """The serial critic's steps count in the slot that holds its job."""
    if not s.serial_critic:
        return slots
    return slots.replace(counter=slots.counter + jnp.where(slots.phase == CRITIC, n, 0))


def file(s: Setup, state: TrainState, job_end, mean_rets, key):
    """File ended jobs into the generation (trained actors, returns, the mean's fitness), then
    pass the barriers of complete stages. Returns (state, arrived, told)."""
    cfg, sl, c, gen = s.cfg, state.slots, state.counters, state.fam
    ended_roll = job_end & (sl.phase == ROLLOUT)
    ended_train = job_end & (sl.phase == TRAIN)
    ended_mean = job_end & (sl.phase == MEAN_EVAL)
    idx = jnp.where(ended_roll | ended_train, sl.member, cfg.pop_size)
    gen = gen.replace(
        rets=gen.rets.at[jnp.where(ended_roll, sl.member, cfg.pop_size)].set(sl.ret, mode="drop"),
        xs=gen.xs.at[idx].set(sl.x, mode="drop"),
        steps=gen.steps + jnp.sum(jnp.where(ended_roll, sl.length, 0)),
        finished=gen.finished + engine.count(job_end),
    )
    told = ended_roll & jnp.isfinite(sl.ret)
    f_mu = jnp.where(jnp.any(ended_mean), jnp.sum(jnp.where(ended_mean, mean_rets, 0.0)), c.f_mu)
    f_mu = jnp.where(jnp.isfinite(f_mu), f_mu, c.f_mu)
    c = c.replace(
        arrivals=c.arrivals + engine.count(ended_roll),
        nonfinite_arrivals=c.nonfinite_arrivals + engine.count(ended_roll & ~told),
        f_mu=f_mu,
    )
    state = barriers(s, state.replace(fam=gen, counters=c), key)
    return state, ended_roll, told


def end_jobs(s: Setup, state: TrainState, done, k_phase, k_tell, k_jobs):
    """Ended jobs are filed into the generation (barriers passed); free slots take jobs."""
    chained = s.algorithm.chained
    train_target = jnp.maximum(state.fam.s_prev, 1)  # as long as the last generation
    state, job_end, mean_rets = engine.advance_phases(
        s,
        state,
        done,
        k_phase,
        chain=chained,
        critic_then_train=chained,
        train_target=train_target,
    )
    ps = jnp.zeros(done.shape)
    before = state
    state, arrived, told = file(s, state, job_end, mean_rets, k_tell)
    # no f_mu is told; a generation is told only once all its members are filed
    info = diagnostics.es_info(s, arrived, before, state, None, jnp.zeros(done.shape, jnp.int32))
    state, arrived_rl = engine.next_jobs(s, state, job_end, k_jobs)
    return state, Ended(arrived, ps, told, arrived_rl, info)


FAMILY = Family(
    name="generation",
    staggered=False,
    init_es=init_es,
    start=start,
    draw=draw,
    critic_target=critic_target,
    critic_worker=lambda s: not s.serial_critic,  # p-cem-rl's parallel critic
    after_critic=after_critic,
    end_jobs=end_jobs,
)
