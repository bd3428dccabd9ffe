"""A jittable fixed-capacity ring replay buffer (docs/algorithm.md §1).

Rows are written in the order given; masked-out rows are skipped without leaving holes, so
W worker slots of which only some are rolling out can write one tick's transitions at once.
`not_done` is 0 only on a true termination; a time-limit truncation is stored as not-done.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import struct


class Transition(NamedTuple):
    obs: jax.Array  # [..., obs_dim] f32
    action: jax.Array  # [..., act_dim] f32
    reward: jax.Array  # [...] f32
    next_obs: jax.Array  # [..., obs_dim] f32  (the TRUE next observation)
    not_done: jax.Array  # [...] f32, 0 only on true termination


@struct.dataclass
class ReplayBuffer:
    data: Transition  # each field [capacity, ...]
    ptr: jax.Array  # [] i32, next row to write
    size: jax.Array  # [] i32, rows filled

    @property
    def capacity(self) -> int:
        return self.data.reward.shape[0]


def init(capacity: int, obs_dim: int, act_dim: int) -> ReplayBuffer:
    if capacity <= 0:
        raise ValueError(f"buffer_size: must be positive, got {capacity}")
    f = jnp.float32
    data = Transition(
        obs=jnp.zeros((capacity, obs_dim), f),
        action=jnp.zeros((capacity, act_dim), f),
        reward=jnp.zeros((capacity,), f),
        next_obs=jnp.zeros((capacity, obs_dim), f),
        not_done=jnp.zeros((capacity,), f),
    )
    return ReplayBuffer(data, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def add(buffer: ReplayBuffer, batch: Transition, mask: jax.Array) -> ReplayBuffer:
    """Append the rows of `batch` ([n, ...]) whose `mask` ([n] bool) is set, in row order."""
    cap = buffer.capacity
    mask = mask.astype(bool)
    offset = jnp.cumsum(mask.astype(jnp.int32)) - 1
    # Masked-out rows get an out-of-range index and are dropped by the scatter.
    idx = jnp.where(mask, (buffer.ptr + offset) % cap, cap)
    data = jax.tree.map(lambda d, b: d.at[idx].set(b, mode="drop"), buffer.data, batch)
    count = jnp.sum(mask.astype(jnp.int32))
    return ReplayBuffer(data, (buffer.ptr + count) % cap, jnp.minimum(buffer.size + count, cap))


def finite_rows(batch: Transition) -> jax.Array:
    """[n] bool: rows of `batch` ([n, ...]) whose every entry is finite."""

    def row_ok(x):
        return jnp.all(jnp.isfinite(x).reshape(x.shape[0], -1), axis=1)

    oks = [row_ok(x) for x in batch]
    return jnp.stack(oks).all(axis=0)


def sample(buffer: ReplayBuffer, key: jax.Array, batch_size: int) -> Transition:
    """Uniform sample with replacement from the filled rows (the buffer must not be empty)."""
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buffer.size, 1))
    return jax.tree.map(lambda d: d[idx], buffer.data)
