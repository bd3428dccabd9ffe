"""CEM-RL's synchronous cross-entropy method (Pourchot & Sigaud 2019; docs/algorithm.md §5).

A separable Gaussian, antithetic populations, and a tell over one whole generation:
sort descending by return, keep mu_p parents with weights w_i = log(1 + mu_p) - log(i)
(normalised), then

    mu   = sum_i w_i x_(i)
    damp <- tau * damp + (1 - tau) * damp_limit
    v    = (1/mu_p) * sum_i w_i (x_(i) - mu_old)^2 + damp

The damp added to v is the UPDATED one (the authors' `CemrlPopulation.tell` updates damp
first, then uses it). There is no variance floor: v >= damp >= damp_limit.
"""

import chex
import jax
import jax.numpy as jnp
from flax import struct

from aes_rl.es._common import (
    broadcast_var,
    cem_statistics,
    cem_weights,
    check_int,
    check_number,
)
from aes_rl.fields import INT_MAX, field, options

# The CEM's own run settings (`aes_rl.config.Config` fields), read by the generation
# algorithms' CEM and by ACEM-RL's ring CEM (`aes_rl.algorithms` builds the params).
OPTIONS = options(
    "p-cem-rl, cem-rl, acem-rl",
    n_parents=field(
        0,
        "Elites (parents) of the CEM tell of p-cem-rl/cem-rl (<= pop_size) and of acem-rl's "
        "ring tell (<= acem_ring); 0: half the population or ring.",
        0,
        INT_MAX,
        structural=True,
    ),
    damp_init=field(
        1e-3, "CEM and acem-rl: initial noise added to the variance.", 0, 1e6, traced=True
    ),
    damp_limit=field(
        1e-5, "CEM and acem-rl: the limit the variance noise decays to.", 0, 1e6, traced=True
    ),
    damp_tau=field(
        0.9,
        "CEM and acem-rl: decay of the variance noise per generation (acem-rl: per K arrivals).",
        0,
        1,
        traced=True,
    ),
)


@struct.dataclass
class CEMParams:
    """Population structure (static) and damping schedule (traced)."""

    pop_size: int = struct.field(pytree_node=False, default=10)  # even (antithetic pairs)
    n_parents: int | None = struct.field(pytree_node=False, default=None)  # None: pop_size//2
    damp_init: float | jax.Array = 1e-3
    damp_limit: float | jax.Array = 1e-5
    damp_tau: float | jax.Array = 0.9

    def __post_init__(self) -> None:
        check_int("pop_size", self.pop_size, 2)
        if self.pop_size % 2:
            raise ValueError(f"pop_size must be even (antithetic pairs), got {self.pop_size}")
        if self.n_parents is None:
            object.__setattr__(self, "n_parents", self.pop_size // 2)
        check_int("n_parents", self.n_parents, 1)
        if self.n_parents > self.pop_size:
            raise ValueError(f"n_parents must be <= pop_size, got {self.n_parents}")
        check_number("damp_init", self.damp_init, lambda v: v >= 0, ">= 0")
        check_number("damp_limit", self.damp_limit, lambda v: v >= 0, ">= 0")
        check_number("damp_tau", self.damp_tau, lambda v: (v >= 0) & (v <= 1), "in [0, 1]")


def params_of(cfg, h) -> CEMParams:
    """The generation CEM's params from a run: the structure `cfg` (`aes_rl.config.Config`:
    sizes) and the traced hyper-parameters `h` (`aes_rl.engine.HParams`: the damping)."""
    return CEMParams(
        pop_size=cfg.pop_size,
        n_parents=cfg.n_parents or None,
        damp_init=h.damp_init,
        damp_limit=h.damp_limit,
        damp_tau=h.damp_tau,
    )


@struct.dataclass
class CEMState:
    mean: jax.Array  # [d] f32
    var: jax.Array  # [d] f32
    damp: jax.Array  # [] f32


def init(mean: jax.Array, params: CEMParams, var_init: float | jax.Array = 1e-3) -> CEMState:
    """mu0 = mean, v0 = var_init (scalar or [d]), damp = damp_init."""
    mean = jnp.asarray(mean, dtype=jnp.float32)
    chex.assert_rank(mean, 1)
    damp = jnp.asarray(params.damp_init, dtype=jnp.float32)
    return CEMState(mean=mean, var=broadcast_var(mean, var_init), damp=damp)


def weights(n_parents: int) -> jax.Array:
    """w_i = log(1 + mu_p) - log(i), i = 1..mu_p, normalised to sum 1. [mu_p] f32."""
    return cem_weights(n_parents)


def ask(key: jax.Array, state: CEMState, params: CEMParams) -> jax.Array:
    """Antithetic population [pop, d] in the authors' layout (`core/population.py`):
    eps = concat([e, -e]), so row i = mu + s e_i and row i + pop/2 = mu - s e_i, s = sqrt(v).
    The first half are the +e rows: the loop's RL members (rows 0..rl_members-1) come from
    there, each with its ES-only mirror image in the second half."""
    half = params.pop_size // 2
    e = jax.random.normal(key, (half, state.mean.shape[0]), state.mean.dtype)
    eps = jnp.concatenate([e, -e], axis=0)  # [pop, d]
    return state.mean + jnp.sqrt(state.var) * eps


def tell(state: CEMState, xs: jax.Array, rets: jax.Array, params: CEMParams) -> CEMState:
    """One generation: xs [pop, d], rets [pop] (maximised). See the module docstring."""
    chex.assert_shape(xs, (params.pop_size, state.mean.shape[0]))
    chex.assert_shape(rets, (params.pop_size,))
    cem_mean, cem_spread = cem_statistics(xs, rets, state.mean, params.n_parents)
    tau = jnp.asarray(params.damp_tau, dtype=jnp.float32)
    damp = tau * state.damp + (1.0 - tau) * params.damp_limit
    return CEMState(mean=cem_mean, var=cem_spread + damp, damp=damp)
