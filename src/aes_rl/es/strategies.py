"""Uniform strategy records, so the training loop treats every ES the same way.

Two kinds (docs/algorithm.md §2, §5 and §6):
- `AsyncStrategy`: told one arrival at a time, in slot order, inside a tick (AES-RL, ACEM-RL,
  (1+1)-ES). `tell_many(state, xs, rets, mean_rets, mask) -> (state, ps)`.
- `GenerationStrategy`: told a whole population behind a barrier (CEM-RL, P-CEM-RL, and any
  evosax distribution-based strategy through a thin adapter).
Every field is a pure function with its parameters already bound; all of them are jittable and
vmappable over independent states (many seeds). Returns are maximised everywhere.
"""

import inspect
import math
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from aes_rl.es import acem, aes, cem, one_plus_one
from aes_rl.es.acem import ACEMParams
from aes_rl.es.aes import AESParams
from aes_rl.es.cem import CEMParams
from aes_rl.es.one_plus_one import OnePlusOneParams
from aes_rl.fields import INT_MAX, field, options

# evosax 0.3.2 distribution-based strategies the adapter supports (`evosax_strategy`).
EVOSAX_STRATEGIES = (
    "ARS",
    "CMA_ES",
    "DES",
    "ESMC",
    "HillClimbing",
    "LES",
    "Open_ES",
    "PGPE",
    "Rm_ES",
    "Sep_CMA_ES",
    "SimpleES",
    "SNES",
)

# The generation algorithms' own run settings (`aes_rl.config.Config` fields): which ES tells
# a generation, its size, and how many of its members are RL-trained.
OPTIONS = options(
    "p-cem-rl, cem-rl",
    es=field(
        "cem",
        "Generation ES of p-cem-rl/cem-rl: cem or evosax:NAME with NAME one of "
        + ", ".join(EVOSAX_STRATEGIES)
        + ".",
        structural=True,
    ),
    pop_size=field(
        10,
        "Generation size of p-cem-rl/cem-rl (even: antithetic pairs).",
        2,
        INT_MAX,
        structural=True,
    ),
    rl_members=field(5, "RL members per generation (<= pop_size).", 0, INT_MAX, traced=True),
)


class AsyncStrategy(NamedTuple):
    init: Callable[[jax.Array], Any]  # (mean [d]) -> state
    sample: Callable[[jax.Array, Any], jax.Array]  # (key, state) -> x [d]
    # (state, xs [n, d], rets [n], mean_rets [n], mask [n]) -> (state, ps [n])
    tell_many: Callable[..., tuple[Any, jax.Array]]
    mean: Callable[[Any], jax.Array]  # state -> [d]
    var: Callable[[Any], jax.Array]  # state -> [d]


class GenerationStrategy(NamedTuple):
    pop_size: int
    init: Callable[[jax.Array, jax.Array], Any]  # (key, mean [d]) -> state
    ask: Callable[[jax.Array, Any], jax.Array]  # (key, state) -> xs [pop, d]
    tell: Callable[[Any, jax.Array, jax.Array], Any]  # (state, xs [pop, d], rets [pop]) -> state
    mean: Callable[[Any], jax.Array]  # state -> [d]
    var: Callable[[Any], jax.Array]  # state -> [d]


def _mean_field(state: Any) -> jax.Array:
    return state.mean


def _var_field(state: Any) -> jax.Array:
    return state.var


def aes_strategy(params: AESParams, var_init: float = 1e-3) -> AsyncStrategy:
    """AES-RL's one-sample tell (`aes`)."""
    return AsyncStrategy(
        init=partial(aes.init, var_init=var_init),
        sample=aes.sample,
        tell_many=partial(aes.tell_many, params=params),
        mean=_mean_field,
        var=_var_field,
    )


def acem_strategy(params: ACEMParams | None = None, var_init: float = 1e-3) -> AsyncStrategy:
    """ACEM-RL's ring CEM (`acem`); params None: ACEMParams() (K = 10)."""
    params = ACEMParams() if params is None else params
    return AsyncStrategy(
        init=partial(acem.init, params=params, var_init=var_init),
        sample=acem.sample,
        tell_many=partial(acem.tell_many, params=params),
        mean=_mean_field,
        var=_var_field,
    )


def one_plus_one_strategy(
    params: OnePlusOneParams | None = None, var_init: float = 1e-3
) -> AsyncStrategy:
    """The (1+1)-ES with a sliding-window 1/5 rule (`one_plus_one`); None: defaults."""
    params = OnePlusOneParams() if params is None else params
    return AsyncStrategy(
        init=partial(one_plus_one.init, params=params, var_init=var_init),
        sample=one_plus_one.sample,
        tell_many=partial(one_plus_one.tell_many, params=params),
        mean=_mean_field,
        var=_var_field,
    )


def _cem_init(key: jax.Array, mean: jax.Array, params: CEMParams, var_init: float) -> Any:
    del key  # CEM's initial state is deterministic
    return cem.init(mean, params, var_init)


def cem_strategy(params: CEMParams | None = None, var_init: float = 1e-3) -> GenerationStrategy:
    """CEM-RL's synchronous CEM (`cem`); params None: CEMParams() (pop 10, 5 parents)."""
    params = CEMParams() if params is None else params
    return GenerationStrategy(
        pop_size=params.pop_size,
        init=partial(_cem_init, params=params, var_init=var_init),
        ask=partial(cem.ask, params=params),
        tell=partial(cem.tell, params=params),
        mean=_mean_field,
        var=_var_field,
    )


# ----------------------------------------------------------------------------- evosax adapter

# evosax 0.3.2 distribution-based strategies this adapter supports: EVOSAX_STRATEGIES (in
# aes_rl.config, which validates `--es`). Left out, with reason:
# xNES, MA_ES, LM_MA_ES, CR_FM_NES, GuidedES, NoiseReuseES, PersistentES store key-dependent
# noise in the state during ask (our ask returns no state); CMAAnchoredLES, EvoTF_ES,
# SimulatedAnnealing use a random key in tell; RandomSearch, SV_* need extra inputs;
# ASEBO, iAMaLGaM_* and GradientlessDescent have no per-dimension std for `var`/`sigma_init`.


@struct.dataclass
class EvosaxState:
    es_state: Any  # the evosax state (mean [d] f32, std, ...), as after its last tell
    es_params: Any  # evosax default params, std_init set to sigma_init where the field exists


class _EvosaxAdapter:
    """Host-side shell: builds (and caches) the evosax object for a dimension d.

    evosax needs d at construction; our `init(key, mean)` only learns it from `mean`, so the
    object is built on first use for each d. Parameters live in `EvosaxState.es_params`.
    """

    def __init__(self, name: str, pop_size: int, sigma_init: float, kwargs: dict) -> None:
        # Imported here: evosax computes arrays at import, which would start JAX's backend
        # before a multi-process run could join its processes (`aes_rl.hosts`).
        from evosax.algorithms import distribution_based_algorithms

        self.cls = distribution_based_algorithms[name]
        self.pop_size = pop_size
        self.sigma_init = float(sigma_init)
        self.kwargs = dict(kwargs)
        accepts_schedule = "std_schedule" in inspect.signature(self.cls.__init__).parameters
        if accepts_schedule and "std_schedule" not in self.kwargs:
            self.kwargs["std_schedule"] = optax.constant_schedule(self.sigma_init)
        self._algorithms: dict[int, Any] = {}

    def algorithm(self, num_dims: int) -> Any:
        if num_dims not in self._algorithms:
            solution = jnp.zeros((num_dims,), jnp.float32)
            self._algorithms[num_dims] = self.cls(self.pop_size, solution, **self.kwargs)
        return self._algorithms[num_dims]

    def init(self, key: jax.Array, mean: jax.Array) -> EvosaxState:
        mean = jnp.asarray(mean, jnp.float32)
        algo = self.algorithm(mean.shape[-1])
        params = algo.default_params
        if hasattr(params, "std_init"):
            std = jnp.full(jnp.shape(params.std_init), self.sigma_init, jnp.float32)
            params = params.replace(std_init=std)
        return EvosaxState(es_state=algo.init(key, mean, params), es_params=params)

    def ask(self, key: jax.Array, state: EvosaxState) -> jax.Array:
        algo = self.algorithm(state.es_state.mean.shape[-1])
        xs, _ = algo.ask(key, state.es_state, state.es_params)
        return xs

    def tell(self, state: EvosaxState, xs: jax.Array, rets: jax.Array) -> EvosaxState:
        """evosax minimises: it is told -rets. Its ask may also update the state (CMA's
        eigendecomposition); that update does not depend on the key for the supported
        strategies, so it is replayed here with a fixed key (the unused samples are dead code
        under jit). The tell key is fixed too: supported strategies do not use it."""
        algo = self.algorithm(state.es_state.mean.shape[-1])
        _, asked = algo.ask(jax.random.key(0), state.es_state, state.es_params)
        es_state, _ = algo.tell(
            jax.random.key(0), xs, -jnp.asarray(rets, jnp.float32), asked, state.es_params
        )
        return state.replace(es_state=es_state)


def _evosax_mean(state: EvosaxState) -> jax.Array:
    return state.es_state.mean


def _evosax_var(state: EvosaxState) -> jax.Array:
    """Per-dimension sampling variance [d]: std**2 times diag(C) where the strategy has a
    covariance C (CMA_ES, Sep_CMA_ES), else std**2 broadcast to [d] (a scalar sigma gives an
    isotropic variance; for Rm_ES this ignores its rank-m directions)."""
    es = state.es_state
    var = jnp.square(jnp.asarray(es.std, jnp.float32))
    cov = getattr(es, "C", None)
    if cov is not None:
        var = var * (cov if cov.ndim == 1 else jnp.diagonal(cov))
    return jnp.broadcast_to(var, es.mean.shape)


def evosax_strategy(
    name: str, pop_size: int, sigma_init: float = math.sqrt(1e-3), **kwargs: Any
) -> GenerationStrategy:
    """Thin adapter over an evosax 0.3.2 distribution-based strategy (see EVOSAX_STRATEGIES).

    sigma_init is a STANDARD DEVIATION (default sqrt(1e-3), the paper's v0 = 1e-3); it sets
    the strategy's `std_init` param, or its `std_schedule` (constant) when it has no such
    param. kwargs go to the evosax constructor (e.g. optimizer=optax.adam(1e-2)).
    """
    if name not in EVOSAX_STRATEGIES:
        raise ValueError(f"name must be one of {EVOSAX_STRATEGIES}, got {name!r}")
    adapter = _EvosaxAdapter(name, pop_size, sigma_init, kwargs)
    return GenerationStrategy(
        pop_size=pop_size,
        init=adapter.init,
        ask=adapter.ask,
        tell=adapter.tell,
        mean=_evosax_mean,
        var=_evosax_var,
    )
