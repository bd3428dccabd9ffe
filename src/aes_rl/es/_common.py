"""Pieces shared by the ES modules: parameter checks, the masked arrival loop, CEM statistics.

The masked arrival loop is how every asynchronous strategy receives the arrivals of one tick
(docs/algorithm.md §6); the CEM statistics are CEM-RL's tell (section 5), shared by the
synchronous CEM and the asynchronous ACEM.
"""

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

TellFn = Callable[[Any, jax.Array, jax.Array, jax.Array], tuple[Any, jax.Array]]


def _concrete(value: Any) -> np.ndarray | None:
    """`value` as a float array if it is a concrete Python/numpy number, else None.

    jax arrays and tracers are skipped on purpose: dataclasses are re-built from tracers
    whenever a pytree is unflattened under jit/vmap, and those must never fail.
    """
    if isinstance(value, bool | int | float | np.number | np.ndarray):
        return np.asarray(value, dtype=np.float64)
    return None


def check_choice(field: str, value: Any, allowed: Sequence[Any]) -> None:
    """Raise ValueError unless `value` is one of `allowed`."""
    if value not in allowed:
        raise ValueError(f"{field} must be one of {tuple(allowed)}, got {value!r}")


def check_number(field: str, value: Any, ok: Callable[[np.ndarray], Any], allowed: str) -> None:
    """Raise ValueError if `value` is a concrete number (or array) with `ok(value)` false."""
    arr = _concrete(value)
    if arr is not None and not np.all(ok(arr)):
        raise ValueError(f"{field} must be {allowed}, got {value!r}")


def check_int(field: str, value: Any, minimum: int) -> None:
    """Raise ValueError unless `value` is a Python int >= minimum (static structure fields)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{field} must be an int >= {minimum}, got {value!r}")


def tell_in_order(
    tell_fn: TellFn,
    state: Any,
    xs: jax.Array,
    rets: jax.Array,
    mean_rets: jax.Array,
    mask: jax.Array,
) -> tuple[Any, jax.Array]:
    """Tell arrivals in row order; a masked-out row leaves the state bit-identical, p = 0.

    tell_fn(state, x, ret, mean_ret) -> (state, p). xs [n, d], rets/mean_rets/mask [n].

    The kept rows are moved to the front (in their order) and told by a loop that stops after
    the last of them, so a tick with one arrival makes one tell, not n masked ones. Rows
    batched by vmap loop as long as their longest and keep their state once done (a select
    per step, which is the whole cost of a masked step); each row's tells are the same either
    way.
    """
    mask = jnp.asarray(mask, dtype=bool)
    n = mask.shape[0]
    order = jnp.argsort(~mask, stable=True)  # kept rows first, each group in row order
    count = jnp.sum(mask.astype(jnp.int32))
    p_shape = jax.eval_shape(tell_fn, state, xs[0], rets[0], mean_rets[0])[1]

    def body(carry):
        i, st, ps = carry
        j = order[i]
        st, p = tell_fn(st, xs[j], rets[j], mean_rets[j])
        return i + 1, st, ps.at[j].set(p)

    init = (jnp.zeros((), jnp.int32), state, jnp.zeros((n,) + p_shape.shape, p_shape.dtype))
    _, state, ps = lax.while_loop(lambda c: c[0] < count, body, init)
    return state, ps


def cem_weights(n_parents: int) -> jax.Array:
    """CEM-RL's parent weights w_i = log(1 + mu_p) - log(i), i = 1..mu_p, normalised. [mu_p]."""
    i = jnp.arange(1, n_parents + 1, dtype=jnp.float32)
    w = jnp.log(1.0 + n_parents) - jnp.log(i)
    return w / jnp.sum(w)


def cem_statistics(
    xs: jax.Array, rets: jax.Array, mean_old: jax.Array, n_parents: int
) -> tuple[jax.Array, jax.Array]:
    """CEM's new mean and spread from a population (docs/algorithm.md §5).

    Sort descending by return (ties keep row order), keep the best mu_p rows x_(i), and return
      cem_mean   = sum_i w_i x_(i)                               [d]
      cem_spread = (1/mu_p) * sum_i w_i (x_(i) - mean_old)^2     [d]   (damp not included)
    Weighted sums are elementwise products (no matmul: exact f32 on every backend).
    """
    order = jnp.argsort(-rets, stable=True)
    elite = xs[order[:n_parents]]  # [mu_p, d]
    w = cem_weights(n_parents)[:, None]  # [mu_p, 1]
    cem_mean = jnp.sum(w * elite, axis=0)
    z = elite - mean_old
    cem_spread = jnp.sum(w * z * z, axis=0) / n_parents
    return cem_mean, cem_spread


def broadcast_var(mean: jax.Array, var_init: float | jax.Array) -> jax.Array:
    """`var_init` (scalar or [d]) as a fresh [d] f32 array shaped like `mean`."""
    return jnp.broadcast_to(jnp.asarray(var_init, dtype=jnp.float32), mean.shape)


def gaussian_sample(key: jax.Array, mean: jax.Array, var: jax.Array) -> jax.Array:
    """x = mean + sqrt(var) * eps, eps ~ N(0, I). [d]."""
    eps = jax.random.normal(key, mean.shape, mean.dtype)
    return mean + jnp.sqrt(var) * eps
