"""ACEM-RL: an asynchronous CEM, the paper's asynchronous-CEM baseline (docs/algorithm.md §5).

Every arrival (x, f) is written into a ring of the last K = 10 arrivals. Once the ring is
full, EVERY arrival applies a CEM tell over the ring (sort descending, mu_p = K/2 parents,
CEM-RL weights) as a 1/K step from the CURRENT distribution:

    cem_mean, cem_var = CEM tell over the ring (centred on mu_old, + the updated damp)
    mu   <- mu + (cem_mean - mu) / K
    v    <- cem_var                        (scale_var=False, the default; see below)
    damp <- tau * damp + (1 - tau) * damp_limit,   tau = damp_tau ** (1/K)

`scale_var`: the paper scales only the mean step by 1/K, and the authors'
`ACemrlPopulation.tell` REPLACES v by cem_var at every arrival: that is the default.
scale_var=True takes a 1/K step on the variance too (v <- v + (cem_var - v) / K), a smoother
variant. Before the ring is full nothing but the ring changes.
"""

import chex
import jax
import jax.numpy as jnp
from flax import struct

from aes_rl.es._common import (
    broadcast_var,
    cem_statistics,
    check_choice,
    check_int,
    check_number,
    gaussian_sample,
    tell_in_order,
)
from aes_rl.fields import field, options

# ACEM-RL's own run settings (`aes_rl.config.Config` fields; its CEM's are `cem.OPTIONS`).
OPTIONS = options(
    "acem-rl",
    acem_ring=field(
        10,
        "acem-rl: K, its ring of the latest arrivals (the authors' 10).",
        1,
        10_000,
        structural=True,
    ),
    acem_scale_var=field(
        False,
        "acem-rl: take a 1/K step on the variance too, instead of replacing it by the ring's "
        "CEM variance at every arrival (the authors').",
        structural=True,
    ),
)


@struct.dataclass
class ACEMParams:
    """Ring structure (static) and damping schedule (traced; damp_tau is the per-GENERATION tau)."""

    ring_size: int = struct.field(pytree_node=False, default=10)  # K
    n_parents: int | None = struct.field(pytree_node=False, default=None)  # None: K // 2
    scale_var: bool = struct.field(pytree_node=False, default=False)
    damp_init: float | jax.Array = 1e-3
    damp_limit: float | jax.Array = 1e-5
    damp_tau: float | jax.Array = 0.9

    def __post_init__(self) -> None:
        check_int("ring_size", self.ring_size, 1)
        if self.n_parents is None:
            object.__setattr__(self, "n_parents", max(self.ring_size // 2, 1))
        check_int("n_parents", self.n_parents, 1)
        if self.n_parents > self.ring_size:
            raise ValueError(f"n_parents must be <= ring_size, got {self.n_parents}")
        check_choice("scale_var", self.scale_var, (True, False))
        check_number("damp_init", self.damp_init, lambda v: v >= 0, ">= 0")
        check_number("damp_limit", self.damp_limit, lambda v: v >= 0, ">= 0")
        check_number("damp_tau", self.damp_tau, lambda v: (v >= 0) & (v <= 1), "in [0, 1]")


def params_of(cfg, h) -> ACEMParams:
    """ACEM-RL's params from a run: the structure `cfg` (`aes_rl.config.Config`: the ring)
    and the traced hyper-parameters `h` (`aes_rl.engine.HParams`: the damping)."""
    return ACEMParams(
        ring_size=cfg.acem_ring,
        n_parents=cfg.n_parents or None,
        scale_var=cfg.acem_scale_var,
        damp_init=h.damp_init,
        damp_limit=h.damp_limit,
        damp_tau=h.damp_tau,
    )


@struct.dataclass
class ACEMState:
    mean: jax.Array  # [d] f32
    var: jax.Array  # [d] f32
    damp: jax.Array  # [] f32
    ring_x: jax.Array  # [K, d] f32, arrival i lives in row i % K
    ring_ret: jax.Array  # [K] f32
    count: jax.Array  # [] int32, arrivals told so far


def init(mean: jax.Array, params: ACEMParams, var_init: float | jax.Array = 1e-3) -> ACEMState:
    """Empty ring, mu0 = mean, v0 = var_init (scalar or [d]), damp = damp_init."""
    mean = jnp.asarray(mean, dtype=jnp.float32)
    chex.assert_rank(mean, 1)
    k = params.ring_size
    return ACEMState(
        mean=mean,
        var=broadcast_var(mean, var_init),
        damp=jnp.asarray(params.damp_init, dtype=jnp.float32),
        ring_x=jnp.zeros((k, mean.shape[0]), jnp.float32),
        ring_ret=jnp.zeros((k,), jnp.float32),
        count=jnp.zeros((), jnp.int32),
    )


def sample(key: jax.Array, state: ACEMState) -> jax.Array:
    """x = mu + sqrt(v) * eps. [d] f32."""
    return gaussian_sample(key, state.mean, state.var)


def tell(
    state: ACEMState, x: jax.Array, ret: jax.Array, mean_ret: jax.Array, params: ACEMParams
) -> tuple[ACEMState, jax.Array]:
    """One arrival (mean_ret is unused). Returns (state, p) with p = 1/K if the distribution
    was updated (ring full), else 0."""
    del mean_ret
    chex.assert_shape(x, state.mean.shape)
    k = params.ring_size
    slot = state.count % k
    ring_x = state.ring_x.at[slot].set(jnp.asarray(x, jnp.float32))
    ring_ret = state.ring_ret.at[slot].set(jnp.asarray(ret, jnp.float32))
    count = state.count + 1
    full = count >= k

    cem_mean, cem_spread = cem_statistics(ring_x, ring_ret, state.mean, params.n_parents)
    tau = jnp.asarray(params.damp_tau, dtype=jnp.float32) ** (1.0 / k)
    damp = tau * state.damp + (1.0 - tau) * params.damp_limit
    mean = state.mean + (cem_mean - state.mean) / k
    cem_var = cem_spread + damp
    var = state.var + (cem_var - state.var) / k if params.scale_var else cem_var

    new = ACEMState(
        mean=jnp.where(full, mean, state.mean),
        var=jnp.where(full, var, state.var),
        damp=jnp.where(full, damp, state.damp),
        ring_x=ring_x,
        ring_ret=ring_ret,
        count=count,
    )
    return new, jnp.where(full, 1.0 / k, 0.0).astype(jnp.float32)


def tell_many(
    state: ACEMState,
    xs: jax.Array,
    rets: jax.Array,
    mean_rets: jax.Array,
    mask: jax.Array,
    params: ACEMParams,
) -> tuple[ACEMState, jax.Array]:
    """Masked row-order tell of xs [n, d] (same contract as `aes.tell_many`)."""
    return tell_in_order(
        lambda s, x, r, m: tell(s, x, r, m, params), state, xs, rets, mean_rets, mask
    )
