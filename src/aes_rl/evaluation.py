"""Deterministic policy episodes: evaluation returns and replays (not counted, not stored).

Each episode starts from `env.reset(key)` with its own key (a fresh initial state) and runs the
deterministic actor until the episode ends or `max_steps` pass.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from aes_rl.envs import TimeLimit
from aes_rl.networks import ActorSpec


def _scan_episode(env: TimeLimit, actor: ActorSpec, flat, key, max_steps: int, keep_states: bool):
    layers = actor.layers(flat)  # once, not every step (ActorSpec.layers)

    def body(carry, _):
        state, ret, length, alive = carry
        nxt = env.step(state, actor.apply_layers(layers, state.obs))
        carry = (
            nxt,
            ret + alive * nxt.reward,
            length + alive.astype(jnp.int32),
            alive * (1.0 - nxt.done),
        )
        return carry, (nxt.pipeline_state if keep_states else None)

    first = env.reset(key)
    init = (first, jnp.zeros(()), jnp.zeros((), jnp.int32), jnp.ones(()))
    (_, ret, length, _), states = jax.lax.scan(body, init, None, length=max_steps)
    return ret, length, first.pipeline_state, states


def episode_return(env: TimeLimit, actor: ActorSpec, flat, key, max_steps: int):
    """(return, length) of one deterministic episode of the actor `flat` [d]."""
    ret, length, _, _ = _scan_episode(env, actor, flat, key, max_steps, keep_states=False)
    return ret, length


def episode_replay(env: TimeLimit, actor: ActorSpec, flat, key, max_steps: int) -> list:
    """The pipeline states of one episode (reset state first), cut at the episode's end."""
    run = jax.jit(lambda f, k: _scan_episode(env, actor, f, k, max_steps, keep_states=True))
    ret, length, first, states = run(flat, key)
    n = int(length)
    frames = [first] + [jax.tree.map(lambda x, i=i: x[i], states) for i in range(n)]
    return frames, float(ret), n
