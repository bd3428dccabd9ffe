"""What each arrival was told against: the diagnostic columns of `arrivals.csv`.

Recorded inside the compiled tick (`engine.TickMetrics.info`, [W] per tick, read only where a
slot arrived) and never read back by the algorithm, so they change nothing it computes. The
families build them around their end of jobs (docs/algorithm.md §6, "What an arrival records"):

- `f_mu`: the mean fitness the arrival was told against (NaN where the ES reads none);
- `var_before`, `var_after`: the ES variance (mean over coordinates) before and after this
  tick's tells (per tick: arrivals of one tick share them; NaN without an ES);
- `mu_shift`: L2 distance between the ES mean when the slot drew the job
  (`Slots.drawn_mean`) and the ES mean before this tick's tells (NaN without an ES);
- `tells_during`: arrivals told to the ES between the draw and this tick's tells.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from aes_rl.engine import Setup, TrainState


class ArrivalInfo(NamedTuple):
    f_mu: jax.Array  # [W] f32
    var_before: jax.Array  # [W] f32
    var_after: jax.Array  # [W] f32
    mu_shift: jax.Array  # [W] f32
    tells_during: jax.Array  # [W] i32


def _told(state: TrainState) -> jax.Array:
    c = state.counters
    return c.arrivals - c.nonfinite_arrivals


def es_info(
    s: Setup,
    arrived: jax.Array,
    before: TrainState,
    after: TrainState,
    f_mu: jax.Array | None,
    tells_during: jax.Array | None = None,
) -> ArrivalInfo:
    """The columns of an ES family: `before` is the state as this tick's tells begin (jobs
    ended, snapshots of the draw still in the slots), `after` as they are done. `f_mu` [W]
    (None: NaN); `tells_during` [W] (None: told arrivals since each slot's draw). Computed
    only in ticks with an arrival (`arrived` [W]); other ticks give `no_es_info`, which no
    row of arrivals.csv reads."""
    w = arrived.shape[0]
    return jax.lax.cond(
        jnp.any(arrived),
        lambda: _es_info(s, before, after, f_mu, tells_during),
        lambda: no_es_info(w),
    )


def _es_info(s, before, after, f_mu, tells_during) -> ArrivalInfo:
    sl = before.slots
    w = sl.phase.shape[0]
    full = lambda v: jnp.full((w,), v, jnp.float32)  # noqa: E731
    shift = jnp.sqrt(jnp.sum(jnp.square(s.family.mean(s, before)[None, :] - sl.drawn_mean), 1))
    if tells_during is None:
        tells_during = _told(before) - sl.drawn_tells
    return ArrivalInfo(
        full(jnp.nan) if f_mu is None else f_mu.astype(jnp.float32),
        full(s.family.var(s, before)),
        full(s.family.var(s, after)),
        shift,
        tells_during.astype(jnp.int32),
    )


def no_es_info(w: int) -> ArrivalInfo:
    """td3: no ES, nothing told (NaN, and 0 tells)."""
    nan = jnp.full((w,), jnp.nan, jnp.float32)
    return ArrivalInfo(nan, nan, nan, nan, jnp.zeros((w,), jnp.int32))
