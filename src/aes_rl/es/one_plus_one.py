"""The (1+1)-ES with the 1/5-success rule, the paper's (1+1) baseline (docs/algorithm.md §5).

Per arrival (x, f) with current mean return f_mu:

    success = f > f_mu;  mu <- x if success
    once W = 10 outcomes are recorded (the authors' `OnePlusOnePoluation.tell`):
        rate = successes among the last W outcomes before this one
        v <- v / factor if rate > 0.2 else v * factor   (factor 0.99);   v <- max(v, v_min)
    then this outcome joins the window, which SLIDES: it holds the last W outcomes. The
    authors' deque stops taking outcomes once full, so their rate stays that of the first W
    arrivals for the rest of the run; we do not copy that (docs/algorithm.md §9).
"""

import chex
import jax
import jax.numpy as jnp
from flax import struct

from aes_rl.es._common import (
    broadcast_var,
    check_int,
    check_number,
    gaussian_sample,
    tell_in_order,
)
from aes_rl.fields import field, options

# The (1+1)-ES's own run settings (`aes_rl.config.Config` fields).
OPTIONS = options(
    "one-plus-one",
    success_window=field(
        10,
        "one-plus-one: outcomes in the success-rate window.",
        1,
        10_000,
        structural=True,
    ),
    success_threshold=field(
        0.2,
        "one-plus-one: the variance grows above this success rate, else shrinks.",
        0,
        1,
        traced=True,
    ),
    success_factor=field(
        0.99,
        "one-plus-one: v /= factor when growing, v *= factor when shrinking.",
        0,
        1,
        low_open=True,
        traced=True,
    ),
)


@struct.dataclass
class OnePlusOneParams:
    window_size: int = struct.field(pytree_node=False, default=10)  # W
    success_threshold: float | jax.Array = 0.2  # grow v if the success rate is above this
    factor: float | jax.Array = 0.99  # v /= factor (grow) or v *= factor (shrink), in (0, 1]
    var_min: float | jax.Array = 1e-5

    def __post_init__(self) -> None:
        check_int("window_size", self.window_size, 1)
        check_number(
            "success_threshold", self.success_threshold, lambda v: (v >= 0) & (v <= 1), "in [0, 1]"
        )
        check_number("factor", self.factor, lambda v: (v > 0) & (v <= 1), "in (0, 1]")
        check_number("var_min", self.var_min, lambda v: v >= 0, ">= 0")


def params_of(cfg, h) -> OnePlusOneParams:
    """The (1+1)-ES's params from a run: the structure `cfg` (`aes_rl.config.Config`: the
    window) and the traced hyper-parameters `h` (`aes_rl.engine.HParams`)."""
    return OnePlusOneParams(
        window_size=cfg.success_window,
        success_threshold=h.success_threshold,
        factor=h.success_factor,
        var_min=h.var_min,
    )


@struct.dataclass
class OnePlusOneState:
    mean: jax.Array  # [d] f32
    var: jax.Array  # [d] f32
    window: jax.Array  # [W] bool, outcome of arrival i in slot i % W (False where unused)
    count: jax.Array  # [] int32, arrivals told so far


def init(
    mean: jax.Array,
    params: OnePlusOneParams | None = None,
    var_init: float | jax.Array = 1e-3,
) -> OnePlusOneState:
    """mu0 = mean, v0 = var_init (scalar or [d]), empty window."""
    params = OnePlusOneParams() if params is None else params
    mean = jnp.asarray(mean, dtype=jnp.float32)
    chex.assert_rank(mean, 1)
    return OnePlusOneState(
        mean=mean,
        var=broadcast_var(mean, var_init),
        window=jnp.zeros((params.window_size,), bool),
        count=jnp.zeros((), jnp.int32),
    )


def sample(key: jax.Array, state: OnePlusOneState) -> jax.Array:
    """x = mu + sqrt(v) * eps. [d] f32."""
    return gaussian_sample(key, state.mean, state.var)


def success_rate(state: OnePlusOneState) -> jax.Array:
    """Successes over the outcomes currently in the window (0 before any arrival). [] f32."""
    seen = jnp.minimum(state.count, state.window.shape[0])
    return jnp.sum(state.window) / jnp.maximum(seen, 1).astype(jnp.float32)


def tell(
    state: OnePlusOneState,
    x: jax.Array,
    ret: jax.Array,
    mean_ret: jax.Array,
    params: OnePlusOneParams,
) -> tuple[OnePlusOneState, jax.Array]:
    """One arrival. Returns (state, p) with p = 1.0 on success (mu <- x) else 0.0."""
    chex.assert_shape(x, state.mean.shape)
    success = jnp.asarray(ret, jnp.float32) > jnp.asarray(mean_ret, jnp.float32)
    mean = jnp.where(success, jnp.asarray(x, jnp.float32), state.mean)
    w = params.window_size
    factor = jnp.asarray(params.factor, jnp.float32)
    grow = jnp.sum(state.window) / w > params.success_threshold  # the W outcomes before this
    var = jnp.where(grow, state.var / factor, state.var * factor)
    var = jnp.maximum(var, jnp.asarray(params.var_min, jnp.float32))
    var = jnp.where(state.count >= w, var, state.var)  # v waits for a full window
    slot = state.count % w
    return state.replace(
        mean=mean, var=var, window=state.window.at[slot].set(success), count=state.count + 1
    ), success.astype(jnp.float32)


def tell_many(
    state: OnePlusOneState,
    xs: jax.Array,
    rets: jax.Array,
    mean_rets: jax.Array,
    mask: jax.Array,
    params: OnePlusOneParams,
) -> tuple[OnePlusOneState, jax.Array]:
    """Masked row-order tell of xs [n, d] (same contract as `aes.tell_many`)."""
    return tell_in_order(
        lambda s, x, r, m: tell(s, x, r, m, params), state, xs, rets, mean_rets, mask
    )
