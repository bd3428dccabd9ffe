"""The algorithm registry: what each algorithm is to the slot engine (docs/algorithm.md §6).

An `Algorithm` is a record: the family it runs on (`engine.Family`, a record of pure functions:
how free slots draw jobs, what happens when jobs end, the critic's target policy, what the
run reports; `aes_rl.families`), how it builds its ES from the structure and the traced
hyper-parameters, the authors' per-environment settings, and the few options its family reads.
The CLI, the presets, validation and the tests read the registry; the compiled tick calls the
family's functions and never tests an algorithm's name. A new algorithm is one `register`
call (see tests/test_registry.py for a toy one in a single file).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from aes_rl.es import acem, aes, cem, one_plus_one, strategies
from aes_rl.families import FAMILIES
from aes_rl.registry import FAMILY_NAMES, REGISTRY, get, names, register, unregister  # noqa: F401


def _no_options(env: str) -> dict[str, Any]:
    del env
    return {}


def _one(cfg) -> float:
    del cfg
    return 1.0


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """One algorithm: its family, its ES, its presets, and its family's options."""

    name: str
    family: str  # "async", "generation" or "td3": the key of its `engine.Family` (FAMILIES)
    summary: str
    # (structure-only Config, traced HParams) -> the family's strategy (None: no ES)
    strategy: Callable[[Any, Any], Any]
    # env -> the authors' settings of this algorithm on that env (overrides of Config defaults)
    preset: Callable[[str], dict[str, Any]] = _no_options
    # modeled time of one tick in units of the cost model (td3: an env step and then an update)
    tick_cost: Callable[[Any], float] = _one
    needs_f_mu: bool = False  # its rule compares f with f_mu: n_mean_evals >= 1
    one_slot: bool = False  # defined for W = 1 only
    # generation family: RL members' actor training is a stage of its own (p-cem-rl)
    actor_stage: bool = False
    # generation family: an RL member's job is critic segment -> actor training -> rollout,
    # in one slot (cem-rl); otherwise training and evaluation are separate jobs
    chained: bool = False
    # generation family: the critic trains in a slot, member by member (not a critic worker)
    serial_critic: Callable[[Any], bool] = lambda cfg: False
    parallel_critic_mode: bool = False  # accepts `parallel_critic` (p-cem-rl)


def family(name: str):
    """The `engine.Family` record of a family name."""
    return FAMILIES[name]


# ------------------------------------------------------------------ the built-in algorithms


def _aes_strategy(cfg, h):
    return strategies.aes_strategy(aes.params_of(cfg, h), h.var_init)


def _aes_preset(env: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if env == "humanoid":
        out.update(actor_hidden=(256, 256), critic_hidden=(256, 256), critic_lr=3e-4, actor_lr=3e-4)
    if env == "swimmer":
        out.update(rho=0.1)
    return out


def _acem_strategy(cfg, h):
    return strategies.acem_strategy(acem.params_of(cfg, h), h.var_init)


def _one_plus_one_strategy(cfg, h):
    return strategies.one_plus_one_strategy(one_plus_one.params_of(cfg, h), h.var_init)


def _generation_strategy(cfg, h):
    """CEM (its numbers traced), or an evosax strategy (its std built in Python: structure)."""
    if cfg.es == "cem":
        return strategies.cem_strategy(cem.params_of(cfg, h), h.var_init)
    return strategies.evosax_strategy(
        cfg.es.split(":", 1)[1], cfg.pop_size, sigma_init=float(cfg.var_init) ** 0.5
    )


def _no_strategy(cfg, h):
    return None


def _td3_tick_cost(cfg) -> float:
    return 1.0 / cfg.env_steps_per_tick + 1.0 / cfg.critic_steps_per_tick


for _algorithm in (
    Algorithm(
        "aes-rl",
        "async",
        "AES-RL: asynchronous separable-Gaussian ES with a shared TD3 critic (Lee et al. 2020)",
        _aes_strategy,
        preset=_aes_preset,
        needs_f_mu=True,
    ),
    Algorithm(
        "acem-rl",
        "async",
        "ACEM-RL: an asynchronous CEM over a ring of the latest arrivals",
        _acem_strategy,
    ),
    Algorithm(
        "one-plus-one",
        "async",
        "(1+1)-ES with the 1/5 success rule, asynchronous",
        _one_plus_one_strategy,
        needs_f_mu=True,
    ),
    Algorithm(
        "p-cem-rl",
        "generation",
        "P-CEM-RL: CEM-RL's generations on W workers, barriers between stages",
        _generation_strategy,
        preset=lambda env: dict(buffer_size=1_000_000, n_mean_evals=1),
        actor_stage=True,
        serial_critic=lambda cfg: not cfg.parallel_critic,
        parallel_critic_mode=True,
    ),
    Algorithm(
        "cem-rl",
        "generation",
        "CEM-RL: one worker, each RL member's critic segment, training and rollout in turn",
        _generation_strategy,
        preset=lambda env: dict(buffer_size=1_000_000, batch_size=100, num_slots=1, n_mean_evals=0),
        one_slot=True,
        chained=True,
        serial_critic=lambda cfg: True,
    ),
    Algorithm(
        "td3",
        "td3",
        "TD3: one worker, an env step then a joint update per tick",
        _no_strategy,
        preset=lambda env: dict(
            buffer_size=1_000_000,
            actor_hidden=(256, 256),
            critic_hidden=(256, 256),
            actor_lr=3e-4,
            critic_lr=3e-4,
            num_slots=1,
            n_mean_evals=0,
        ),
        tick_cost=_td3_tick_cost,
    ),
):
    register(_algorithm)
