"""Jobs and phases: free slots draw their next job, slots whose unit of work completed move to
their next phase or end their job (docs/algorithm.md §6).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from aes_rl import td3
from aes_rl.engine.state import (
    CRITIC,
    MEAN_EVAL,
    ROLLOUT,
    TRAIN,
    WAIT,
    Slots,
    TrainState,
    tile,
    tree_where,
)
from aes_rl.envs import State as EnvState

if TYPE_CHECKING:
    from aes_rl.engine.family import Setup


def reset_slot_envs(s: Setup, env: EnvState, mask: jax.Array, key: jax.Array) -> EnvState:
    """Fresh initial states (fresh keys) for the masked slots; skipped if none is masked."""

    def reset(e):
        fresh = jax.vmap(s.env.reset)(jax.random.split(key, mask.shape[0]))
        return tree_where(mask, fresh, e)

    return jax.lax.cond(jnp.any(mask), reset, lambda e: e, env)


def ring_push(values: jax.Array, seen: jax.Array, new: jax.Array, mask: jax.Array):
    """Push the masked entries of `new` ([W]) in slot order into a ring of size K."""
    k = values.shape[0]
    offset = jnp.cumsum(mask.astype(jnp.int32)) - 1
    count = jnp.sum(mask.astype(jnp.int32))
    keep = mask & (offset >= count - k)  # only the last K of this tick can survive
    idx = jnp.where(keep, (seen + offset) % k, k)
    return values.at[idx].set(new, mode="drop"), seen + count


def assign_jobs(
    s: Setup, state: TrainState, free: jax.Array, key: jax.Array, reset_envs: bool = True
) -> TrainState:
    """Free slots draw their next job (or wait); training jobs start with a fresh Adam and a
    snapshot of the critic as it is now."""
    k_draw, k_reset = jax.random.split(key)
    state, (x, phase, rl, valid, member, target) = s.family.draw(s, state, free, k_draw)
    sl = state.slots
    phase = jnp.where(valid, phase, WAIT)
    c = state.counters
    warm = c.total_steps < s.h.warmup_steps
    sl = sl.replace(
        phase=jnp.where(free, phase, sl.phase),
        counter=jnp.where(free, 0, sl.counter),
        target=jnp.where(free, target, sl.target),
        params=jnp.where(free[:, None], x, sl.params),
        is_rl=jnp.where(free, rl, sl.is_rl),
        random=jnp.where(free, warm & (phase == ROLLOUT), sl.random),
        member=jnp.where(free, member, sl.member),
        drawn_mean=jnp.where(free[:, None], s.family.mean(s, state)[None, :], sl.drawn_mean),
        drawn_tells=jnp.where(free, c.arrivals - c.nonfinite_arrivals, sl.drawn_tells),
        ep_ret=jnp.where(free, 0.0, sl.ep_ret),
        ep_len=jnp.where(free, 0, sl.ep_len),
        eval_sum=jnp.where(free & (phase == MEAN_EVAL), 0.0, sl.eval_sum),
        eval_count=jnp.where(free & (phase == MEAN_EVAL), 0, sl.eval_count),
    )
    sl = start_training(s, state, sl, free & (phase == TRAIN))
    if reset_envs:  # at init the envs are fresh (and carry the staggered counters)
        acting = (phase == ROLLOUT) | (phase == MEAN_EVAL)
        sl = sl.replace(env=reset_slot_envs(s, sl.env, free & acting, k_reset))
    return state.replace(slots=sl)


def start_training(s: Setup, state: TrainState, sl: Slots, starting: jax.Array) -> Slots:
    """Slots entering TRAIN: a fresh Adam and a snapshot of the shared critic (the authors copy
    the critic into the worker when the job starts; later critic updates do not reach it). With
    a critic worker the shared critic is the one its last finished job published."""
    fresh_opt = jax.vmap(td3.actor_opt_init)(sl.params)
    job = state.critic_job  # a critic worker hands over its critic only when a job ends
    shared = state.learner.params if job is None else job.published
    snapshot = tile(shared, sl.phase.shape[0])
    return sl.replace(
        opt=tree_where(starting, fresh_opt, sl.opt),
        critic=tree_where(starting, snapshot, sl.critic),
    )


def assign_if_free(s: Setup, state: TrainState, free: jax.Array, key: jax.Array) -> TrainState:
    """`assign_jobs` only in ticks where a slot is free; the cond carries only the parts it
    changes (slots, counters, generation), never the replay buffer."""

    def assign(parts):
        slots, counters, fam = parts
        st = state.replace(slots=slots, counters=counters, fam=fam)
        st = assign_jobs(s, st, free, key)
        return st.slots, st.counters, st.fam

    parts = (state.slots, state.counters, state.fam)
    slots, counters, fam = jax.lax.cond(jnp.any(free), assign, lambda p: p, parts)
    return state.replace(slots=slots, counters=counters, fam=fam)


def advance_phases(
    s: Setup,
    state: TrainState,
    done: jax.Array,
    key: jax.Array,
    chain: bool,
    eval_after_rollout: bool = False,
    critic_then_train: bool = False,
    train_target: jax.Array | None = None,
):
    """End of tick: units that completed move their slot to its next phase, or end its job.
    The family says which phases follow: `chain` (training is followed by the member's
    rollout), `eval_after_rollout` (a rollout by the mean evaluation), `critic_then_train` (a
    serial critic segment by the member's actor training).

    Returns (state, job_end mask, mean returns of the ended jobs)."""
    cfg, sl, c = s.cfg, state.slots, state.counters
    critic_done = (sl.phase == CRITIC) & (sl.counter >= sl.target)
    train_done = (sl.phase == TRAIN) & (sl.counter >= sl.target)
    roll_done = (sl.phase == ROLLOUT) & done
    eval_done = (sl.phase == MEAN_EVAL) & done
    lengths, seen = ring_push(c.lengths, c.lengths_seen, sl.ep_len, roll_done)
    c = c.replace(lengths=lengths, lengths_seen=seen)
    # one more episode of the mean has ended (they run one after another, as the authors')
    eval_sum = jnp.where(eval_done, sl.eval_sum + sl.ep_ret, sl.eval_sum)
    eval_count = jnp.where(eval_done, sl.eval_count + 1, sl.eval_count)
    to_eval = roll_done & eval_after_rollout
    eval_end = eval_done & (eval_count >= cfg.n_mean_evals)
    to_train = critic_done & critic_then_train
    job_end = (
        (critic_done & ~to_train) | (train_done & (not chain)) | (roll_done & ~to_eval) | eval_end
    )
    phase = jnp.where(to_train, TRAIN, sl.phase)
    phase = jnp.where(train_done & chain, ROLLOUT, phase)
    phase = jnp.where(to_eval, MEAN_EVAL, phase)
    kept = roll_done | train_done  # the member as it ends its rollout or its training

    def write(xp):  # [W, d] copies only in ticks where some slot needs one (masked per slot)
        x, params = xp
        x = jnp.where(kept[:, None], params, x)
        return x, jnp.where(to_eval[:, None], s.family.mean(s, state)[None, :], params)

    x, params = jax.lax.cond(jnp.any(kept | to_eval), write, lambda xp: xp, (sl.x, sl.params))
    target = sl.target
    if critic_then_train:  # the member's actor training is as long as the last generation
        target = jnp.where(to_train, train_target, sl.target)
    sl = sl.replace(
        phase=phase,
        counter=jnp.where(to_train, 0, sl.counter),
        target=target,
        x=x,
        params=params,
        ret=jnp.where(roll_done, sl.ep_ret, sl.ret),
        length=jnp.where(roll_done, sl.ep_len, sl.length),
        eval_sum=jnp.where(to_eval, 0.0, eval_sum),
        eval_count=jnp.where(to_eval, 0, eval_count),
        random=jnp.where(to_eval | train_done, False, sl.random),
    )
    if critic_then_train:
        sl = start_training(s, state, sl, to_train)
    restart = (train_done & chain) | to_eval | (eval_done & ~eval_end)
    sl = sl.replace(
        ep_ret=jnp.where(restart, 0.0, sl.ep_ret),
        ep_len=jnp.where(restart, 0, sl.ep_len),
        env=reset_slot_envs(s, sl.env, restart, key),
    )
    mean_rets = eval_sum / jnp.maximum(eval_count, 1)
    return state.replace(slots=sl, counters=c), job_end, mean_rets


def next_jobs(s: Setup, state: TrainState, job_end: jax.Array, key: jax.Array):
    """After a tick's ended jobs are handled: whether each arriving member was an RL member
    (read before its slot draws again), then every free slot draws its next job.
    Returns (state, arrived member was RL)."""
    arrived_rl = state.slots.is_rl
    free = job_end | (state.slots.phase == WAIT)
    return assign_if_free(s, state, free, key), arrived_rl
