"""Env stepping: the tick's env steps for the slots that roll out or evaluate the mean, at the
cost of what acts (docs/algorithm.md §6); the rollouts' transitions enter the replay buffer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from aes_rl import replay
from aes_rl.engine.state import (
    ENV_SCOPES,
    MEAN_EVAL,
    ROLLOUT,
    Slots,
    TrainState,
    count,
    tree_where,
)

if TYPE_CHECKING:
    from aes_rl.engine.family import Setup


def act(s: Setup, state: TrainState, view, key: jax.Array, pick=None) -> jax.Array:
    """Actions of every slot (the family's policy); uniform random ones are drawn for the
    warm-up, exploration noise from the second key. `pick`: the slots `state` and `view` hold
    (`step_envs`); the random actions are drawn for all W slots and picked, so a slot acts the
    same whichever path steps it."""
    w, a_dim, a_max = s.cfg.num_slots, s.actor.act_dim, s.actor.max_action
    k_rand, k_noise = jax.random.split(key)
    rand = jax.random.uniform(k_rand, (w, a_dim), minval=-a_max, maxval=a_max)
    if pick is not None:
        rand = rand[pick]
    return s.family.act(s, state, view, k_noise, rand)


def env_step(s: Setup, state: TrainState, sl: Slots, done, key, allowed, view, pick=None):
    """One env step for acting slots whose episode has not ended this tick. `sl`: the slots
    being stepped (all W, or with `pick` only those, as `view`, the family's view of their
    actors made before the tick's env steps: they do not change the actors); `state` is
    read, as the tick began. Returns (slots, ended, transitions, rolling): the transitions
    of rolling-out slots go to the buffer after the tick's env steps (`step_envs`)."""
    acting = ((sl.phase == ROLLOUT) | (sl.phase == MEAN_EVAL)) & ~done & allowed
    rolling = acting & (sl.phase == ROLLOUT)
    with jax.named_scope(ENV_SCOPES[1]):
        action = act(s, state.replace(slots=sl), view, key, pick)
    with jax.named_scope(ENV_SCOPES[0]):
        nxt = jax.vmap(s.env.step)(sl.env, action)
    trans = replay.Transition(sl.env.obs, action, nxt.reward, nxt.obs, 1.0 - nxt.info["terminated"])
    trans = tree_where(rolling, trans, jax.tree.map(jnp.zeros_like, trans))  # rows kept only
    sl = sl.replace(
        env=tree_where(acting, nxt, sl.env),
        ep_ret=jnp.where(acting, sl.ep_ret + nxt.reward, sl.ep_ret),
        ep_len=jnp.where(acting, sl.ep_len + 1, sl.ep_len),
    )
    done = done | (acting & (nxt.done > 0))
    return sl, done, trans, rolling


def acting_capacity(num_slots: int) -> int:
    """How many acting slots a row's env steps step by themselves in a tick where no more
    act (`step_envs`): half the slots, rounded down (at least 1). Past AES-RL's warm-up
    about one slot in ten acts."""
    return max(1, num_slots // 2)


def step_envs(s: Setup, state: TrainState, key: jax.Array):
    """This tick's env steps (`env_steps_per_tick`) for acting slots; an episode that ends
    mid-tick leaves its slot idle for the rest of the tick. Returns (state, episode ended,
    the path this row needed: `TickMetrics.env_path`).

    The env steps cost what the acting slots need (docs/algorithm.md §6): a tick in which no
    slot rolls out or evaluates the mean takes none (the branch is skipped), and one in which
    at most `acting_capacity(W)` slots act steps only those (one row alone: 1.00 against 1.15
    ms a tick on a CPU, benchmarks/RESULTS.md). Rows side by side (`Setup.batched`) step all
    W wherever some slot acts: under vmap both sides of a branch run. The rollouts'
    transitions enter the buffer after the env steps, in the order of the steps and, within
    a step, of the slots (the branches never write the buffer, which a branch that writes it
    in place would have to copy)."""
    rate = s.env_rate
    n_now = rate.at(state.counters.ticks)
    w, most = s.cfg.num_slots, rate.most

    def steps(sl, pick=None):
        sub, k = sl, w
        if pick is not None:  # only the picked slots: what their env steps read and change
            take = lambda x: x[pick]  # noqa: E731
            sub = sl.replace(
                env=jax.tree.map(take, sl.env),
                ep_ret=take(sl.ep_ret),
                ep_len=take(sl.ep_len),
                phase=take(sl.phase),
                random=take(sl.random),
                params=take(sl.params),
            )
            k = pick.shape[0]
        with jax.named_scope(ENV_SCOPES[1]):
            view = s.family.acting(s, state.replace(slots=sub))

        def body(carry, inp):
            kk, i = inp
            got, dn, trans, rolling = env_step(s, state, *carry, kk, i < n_now, view, pick)
            return (got, dn), (trans, rolling)

        init = (sub, jnp.zeros((k,), bool))
        if most == 1:  # one env step, on the tick's own key
            (sub, done), ys = body(init, (key, 0))
            trans, rolling = jax.tree.map(lambda x: x[None], ys)
        else:
            keys = jax.random.split(key, most)
            (sub, done), (trans, rolling) = jax.lax.scan(body, init, (keys, jnp.arange(most)))
        if pick is None:
            return sub, done, trans, rolling
        put = lambda a, b: a.at[pick].set(b)  # noqa: E731
        sl = sl.replace(
            env=jax.tree.map(put, sl.env, sub.env),
            ep_ret=put(sl.ep_ret, sub.ep_ret),
            ep_len=put(sl.ep_len, sub.ep_len),
        )
        _, no_done, no_trans, no_rolling = none(sl)
        spread = lambda z, x: z.at[:, pick].set(x)  # noqa: E731  [most, k] -> [most, W]
        trans = jax.tree.map(spread, no_trans, trans)
        return sl, put(no_done, done), trans, spread(no_rolling, rolling)

    def none(sl):
        o, a = s.actor.obs_dim, s.actor.act_dim
        z = lambda *shape: jnp.zeros((most, w) + shape, jnp.float32)  # noqa: E731
        trans = replay.Transition(z(o), z(a), z(), z(o), z())
        return sl, jnp.zeros((w,), bool), trans, jnp.zeros((most, w), bool)

    sl = state.slots
    if s.family.joint_update:  # its one slot acts in every tick
        sl, done, trans, rolling = steps(sl)
        path = jnp.int32(2)
    else:
        acting = (sl.phase == ROLLOUT) | (sl.phase == MEAN_EVAL)
        n_acting = count(acting)
        cap = acting_capacity(w)
        on = (n_acting > 0) & (n_now > 0)
        few_fit = (n_acting <= cap) if cap < w else jnp.asarray(False)
        if cap >= w or s.batched:  # side by side a cond runs both sides: all W, no `few`
            act_fn = steps
        else:

            def few(sl):  # the acting slots (and non-acting ones, which stay as they are)
                return steps(sl, jnp.argsort(jnp.where(acting, 0, 1), stable=True)[:cap])

            def act_fn(sl):
                return jax.lax.cond(~few_fit, steps, few, sl)

        sl, done, trans, rolling = jax.lax.cond(on, act_fn, none, sl)
        path = jnp.where(on, jnp.where(few_fit, 1, 2), 0).astype(jnp.int32)
    flat = jax.tree.map(lambda x: x.reshape((most * w,) + x.shape[2:]), trans)
    rolling = rolling.reshape(most * w)
    finite = replay.finite_rows(flat)  # a non-finite transition never reaches the critic
    c = state.counters
    c = c.replace(
        total_steps=c.total_steps + count(rolling),
        nonfinite_transitions=c.nonfinite_transitions + count(rolling & ~finite),
    )
    buffer = replay.add(state.buffer, flat, rolling & finite)
    return state.replace(slots=sl, buffer=buffer, counters=c), done, path
