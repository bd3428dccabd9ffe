"""Run configuration: one frozen, hashable record per run, per-environment presets, validation.

`Config` is the structure of the compiled loop (static under jit) plus the algorithm's
hyper-parameters (ALGORITHM.md sections 2-5). Run settings (seed, run directory, logging
cadence) are not here: they belong to the driver and the CLI.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from aes_rl.envs import BACKENDS, BRAX_ENVS, ENV_NAMES

ALGOS = ("aes-rl", "acem-rl", "one-plus-one", "p-cem-rl", "cem-rl", "td3")
ASYNC_ALGOS = ("aes-rl", "acem-rl", "one-plus-one")
SYNC_ALGOS = ("p-cem-rl", "cem-rl")
MEAN_RULES = ("fixed-linear", "fixed-sigmoid", "baseline-absolute", "baseline-relative")
VAR_RULES = ("fixed", "adaptive")
# Paper's mean_update_param P per environment (ALGORITHM.md section 3); probes use small P.
MEAN_PARAM = {
    "halfcheetah": 2000.0,
    "hopper": 600.0,
    "walker2d": 800.0,
    "ant": 960.0,
    "humanoid": 960.0,
    "swimmer": 48.0,
    "probe": 1.0,
    "countdown": 1.0,
}
# Fields that fix the compiled program's shapes: a resumed run may not change them.
STRUCTURAL = (
    "algo",
    "env",
    "backend",
    "episode_length",
    "num_slots",
    "actor_hidden",
    "critic_hidden",
    "buffer_size",
    "pop_size",
    "es",
    "env_kwargs",
)


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines a run's computation. Every field can be overridden."""

    algo: str = "aes-rl"
    env: str = "hopper"
    backend: str = "spring"
    episode_length: int = 1000
    env_kwargs: tuple[tuple[str, Any], ...] = ()  # extra make_env keywords (probe envs)
    num_slots: int = 5  # W worker slots (the paper's actor workers)
    actor_hidden: tuple[int, ...] = (400, 300)
    critic_hidden: tuple[int, ...] = (400, 300)
    buffer_size: int = 200_000
    batch_size: int = 256
    warmup_steps: int = 10_000  # counted steps of random-action ES rollouts
    # --- asynchronous loop (ALGORITHM.md sections 2 and 6)
    n_mean_evals: int = 5  # mean-evaluation episodes per individual
    actor_steps_per_tick: int = 10  # actor-only TD3 steps a training slot does per tick
    critic_steps_per_tick: int = 2  # shared-critic (or joint TD3) steps per tick
    rl_history: int = 10  # B_a = sum of the last <= rl_history episode lengths
    rho: float = 0.5  # target RL share
    pop_control_k: float = 50.0
    stagger: bool = True
    # --- AES-RL rules (section 3-4)
    mean_rule: str = "baseline-relative"
    var_rule: str = "adaptive"
    mean_param: float = 600.0  # P
    fixed_n: float = 10.0
    negative_ratio: float = 0.0
    var_init: float = 1e-3
    var_min: float = 1e-5
    # --- synchronous baselines (section 5)
    es: str = "cem"  # generation strategy of p-cem-rl/cem-rl: "cem" or "evosax:<Name>"
    pop_size: int = 10
    rl_members: int = 5
    # --- TD3 (section 2)
    gamma: float = 0.99
    tau: float = 0.005
    policy_noise: float = 0.2
    noise_clip: float = 0.5
    critic_lr: float = 1e-3
    actor_lr: float = 1e-3
    expl_noise: float = 0.1
    policy_delay: int = 2
    # --- compilation
    ticks_per_chunk: int = 1000

    def __post_init__(self):
        validate(self)

    def replace(self, **changes) -> Config:
        return dataclasses.replace(self, **changes)

    @property
    def is_async(self) -> bool:
        return self.algo in ASYNC_ALGOS

    @property
    def is_sync(self) -> bool:
        return self.algo in SYNC_ALGOS

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["env_kwargs"] = dict(self.env_kwargs)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(f"config: unknown field(s) {', '.join(unknown)}")
        d = dict(d)
        for name in ("actor_hidden", "critic_hidden"):
            if name in d:
                d[name] = tuple(d[name])
        if "env_kwargs" in d:
            d["env_kwargs"] = tuple(sorted(dict(d["env_kwargs"]).items()))
        return cls(**d)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _check_types(cfg: Config) -> None:
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        if kind == "int":
            _check(
                isinstance(value, int) and not isinstance(value, bool),
                f"{f.name}: expected an int, got {value!r}",
            )
        elif kind == "float":
            _check(
                isinstance(value, (int, float)) and not isinstance(value, bool),
                f"{f.name}: expected a number, got {value!r}",
            )
        elif kind == "bool":
            _check(isinstance(value, bool), f"{f.name}: expected true/false, got {value!r}")
        elif kind == "str":
            _check(isinstance(value, str), f"{f.name}: expected a string, got {value!r}")


def validate(cfg: Config) -> None:
    """Raise a one-line ValueError naming the first bad field and its allowed values."""
    _check_types(cfg)
    _check(cfg.algo in ALGOS, f"algo: unknown {cfg.algo!r}; allowed: {', '.join(ALGOS)}")
    _check(cfg.env in ENV_NAMES, f"env: unknown {cfg.env!r}; allowed: {', '.join(ENV_NAMES)}")
    _check(
        cfg.backend in BACKENDS, f"backend: unknown {cfg.backend!r}; allowed: {', '.join(BACKENDS)}"
    )
    _check(
        not (cfg.env == "swimmer" and cfg.backend != "generalized"),
        "backend: swimmer exists only on 'generalized'",
    )
    _check(
        cfg.mean_rule in MEAN_RULES,
        f"mean_rule: unknown {cfg.mean_rule!r}; allowed: {', '.join(MEAN_RULES)}",
    )
    _check(
        cfg.var_rule in VAR_RULES,
        f"var_rule: unknown {cfg.var_rule!r}; allowed: {', '.join(VAR_RULES)}",
    )
    _check(
        cfg.es == "cem" or cfg.es.startswith("evosax:"),
        f"es: unknown {cfg.es!r}; allowed: cem, evosax:<StrategyName>",
    )
    for name in (
        "episode_length",
        "num_slots",
        "buffer_size",
        "batch_size",
        "n_mean_evals",
        "actor_steps_per_tick",
        "critic_steps_per_tick",
        "rl_history",
        "pop_size",
        "policy_delay",
        "ticks_per_chunk",
        "warmup_steps",
        "rl_members",
    ):
        low = 0 if name in ("n_mean_evals", "warmup_steps", "rl_members") else 1
        _check(getattr(cfg, name) >= low, f"{name}: must be >= {low}, got {getattr(cfg, name)}")
    for name in ("mean_param", "var_init", "var_min", "critic_lr", "actor_lr", "fixed_n"):
        _check(getattr(cfg, name) > 0, f"{name}: must be > 0, got {getattr(cfg, name)}")
    _check(0.0 <= cfg.rho <= 1.0, f"rho: must be in [0, 1], got {cfg.rho}")
    _check(
        len(cfg.actor_hidden) > 0 and all(h > 0 for h in cfg.actor_hidden),
        f"actor_hidden: must be positive layer widths, got {cfg.actor_hidden}",
    )
    _check(
        len(cfg.critic_hidden) > 0 and all(h > 0 for h in cfg.critic_hidden),
        f"critic_hidden: must be positive layer widths, got {cfg.critic_hidden}",
    )
    _check(
        cfg.pop_size % 2 == 0 and cfg.rl_members <= cfg.pop_size,
        f"pop_size: must be even and >= rl_members, got {cfg.pop_size}, {cfg.rl_members}",
    )
    _check(
        cfg.algo != "cem-rl" or cfg.num_slots == 1,
        "num_slots: cem-rl is the one-slot synchronous baseline; use p-cem-rl for W > 1",
    )


def preset(env: str, algo: str = "aes-rl", **overrides) -> Config:
    """The paper's hyper-parameters for `env` and `algo` (ALGORITHM.md), then `overrides`."""
    if env not in ENV_NAMES:
        raise ValueError(f"env: unknown {env!r}; allowed: {', '.join(ENV_NAMES)}")
    base: dict[str, Any] = dict(algo=algo, env=env, mean_param=MEAN_PARAM[env])
    if env == "humanoid":
        base.update(
            actor_hidden=(256, 256), critic_hidden=(256, 256), critic_lr=3e-4, actor_lr=3e-4
        )
    if env == "swimmer":
        base.update(backend="generalized", rho=0.1)
    if algo in ("td3", "cem-rl", "p-cem-rl"):
        base.update(buffer_size=1_000_000)
    if algo == "td3":
        base.update(
            actor_hidden=(256, 256),
            critic_hidden=(256, 256),
            actor_lr=3e-4,
            critic_lr=3e-4,
            num_slots=1,
            critic_steps_per_tick=1,
        )
    if algo in ("cem-rl", "p-cem-rl"):
        base.update(batch_size=100)
    if algo == "cem-rl":
        base.update(num_slots=1)
    if env not in BRAX_ENVS:
        base.update(episode_length=50, warmup_steps=500, buffer_size=20_000)
    base.update(overrides)
    return Config(**base)
