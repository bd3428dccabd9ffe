"""Run configuration: one frozen, hashable record per run, per-environment presets, validation.

`Config` is the structure of the compiled loop (static under jit) plus the algorithm's
hyper-parameters (docs/algorithm.md §2-5). Run settings (seed, run directory, logging
cadence) are not here: they belong to the driver and the CLI.

Each field is declared once, by `field(default, help, low, high, ...)` (`aes_rl.fields`): its
meaning, type, range or choices, its value on particular envs and its mark (traced,
structural or neither). The settings every algorithm reads are declared here, in `_Shared`;
each algorithm's own numbers beside the code that reads them (`OPTIONS` of `es.aes`,
`es.cem`, `es.acem`, `es.one_plus_one`, `es.strategies` and `td3`, each with a `params_of`
that builds its ES params from a run), and `Config` joins them into one flat record
(`OPTION_GROUPS`). The rest reads the declarations: `FIELDS` (by name), `HYPER` (the traced
fields, from which `engine.HParams` is made), `STRUCTURAL` (the fields a continued run may
not change), `validate`, `preset`, the flags' help and sweep eligibility (`aes_rl.flags`), the
resume check (`aes_rl.rundir`) and the reference tables (docs/make_reference.py). What
differs per algorithm is the registry's (`aes_rl.algorithms`, each record's `preset`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from aes_rl import registry, td3
from aes_rl.envs import BACKENDS, BRAX_ENVS, ENV_NAMES, PROBE_ENVS
from aes_rl.es import acem, aes, cem, one_plus_one, strategies
from aes_rl.fields import INT_MAX, Field, field
from aes_rl.networks import INITS

COST_MODELS = ("paper", "device", "custom")
RATE_FIELDS = ("env_steps_per_tick", "actor_steps_per_tick", "critic_steps_per_tick")
# The authors' regime (docs/algorithm.md §8): a TD3 gradient step of 400-300 nets in
# PyTorch on a GPU, with a Ray call to the replay buffer per step, costs about as much as 10
# MuJoCo env steps of a worker that runs its policy on that GPU; a tick is one gradient step.
PAPER_RATES = (10.0, 1.0, 1.0)
# Each algorithm's own settings, declared beside the code that reads them, and the names
# they are known by here (re-exported: rules, P presets, evosax's strategies).
OPTION_GROUPS = (
    aes.OPTIONS,
    cem.OPTIONS,
    acem.OPTIONS,
    one_plus_one.OPTIONS,
    strategies.OPTIONS,
    td3.OPTIONS,
)
MEAN_RULES, VAR_RULES = aes.MEAN_RULES, aes.VAR_RULES
AUTHORS_MEAN_PARAM, BRAX_P_FACTOR, MEAN_PARAM = (
    aes.AUTHORS_MEAN_PARAM,
    aes.BRAX_P_FACTOR,
    aes.MEAN_PARAM,
)
EVOSAX_STRATEGIES = strategies.EVOSAX_STRATEGIES


def algo_names() -> tuple[str, ...]:
    """The registered algorithms, built-in or added by `algorithms.register`, as of now."""
    return registry.names()


def __getattr__(name: str) -> Any:
    """`ALGOS`: the registry's names when read (`from aes_rl.config import ALGOS` takes those
    registered at that moment: the built-in ones)."""
    if name == "ALGOS":
        return algo_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclasses.dataclass(frozen=True)
class _Shared:
    """The settings every algorithm reads, and `Config`'s methods; `Config` adds each
    algorithm's own (`OPTION_GROUPS`)."""

    algo: str = field("aes-rl", "Algorithm.", choices=algo_names, structural=True)
    env: str = field(
        "hopper",
        "Environment (probe and countdown are tiny pure-JAX test envs).",
        choices=ENV_NAMES,
        structural=True,
    )
    backend: str = field(
        "spring",
        "Brax physics backend (a different simulator each: compare returns within one).",
        choices=BACKENDS,
        structural=True,
        per_env={"swimmer": "generalized"},
    )
    episode_length: int = field(
        1000,
        "Episode time limit in env steps (paper: 1000).",
        1,
        INT_MAX,
        structural=True,
        per_env=dict.fromkeys(PROBE_ENVS, 50),
    )
    env_kwargs: tuple[tuple[str, Any], ...] = field(
        (), "Extra make_env keywords (probe envs' options).", structural=True
    )
    num_slots: int = field(
        5, "W worker slots, the paper's actor workers.", 1, INT_MAX, structural=True
    )
    actor_hidden: tuple[int, ...] = field(
        (400, 300), "Actor hidden layer widths.", 1, INT_MAX, structural=True
    )
    critic_hidden: tuple[int, ...] = field(
        (400, 300), "Twin-critic hidden layer widths.", 1, INT_MAX, structural=True
    )
    weight_init: str = field(
        "torch",
        "How actor and critic layers start: torch (PyTorch's default nn.Linear, the authors': "
        "weights and biases U(+-1/sqrt(fan_in))) or flax (nn.Dense's: lecun-normal weights, "
        "1.73x torch's std, zero biases; every run before this field existed).",
        choices=INITS,
        structural=True,
    )
    buffer_size: int = field(
        200_000,
        "Replay buffer capacity in transitions.",
        1,
        INT_MAX,
        structural=True,
        per_env=dict.fromkeys(PROBE_ENVS, 20_000),
    )
    batch_size: int = field(256, "TD3 minibatch size (<= buffer_size).", 1, INT_MAX)
    warmup_steps: int = field(
        10_000,
        "Counted steps of random-action ES rollouts before any RL job or critic step "
        "(>= 1, so nothing samples an empty buffer).",
        1,
        INT_MAX,
        traced=True,
        per_env=dict.fromkeys(PROBE_ENVS, 500),
    )
    # --- the clock: what one tick buys (docs/algorithm.md §8)
    cost_model: str = field(
        "paper",
        "The clock: paper (the authors' regime: a gradient step costs 10 env steps), device "
        "(rates measured on this machine at the run's shapes, stored in config.json) or custom "
        "(the three *_steps_per_tick rates; giving one selects custom).",
        choices=COST_MODELS,
    )
    env_steps_per_tick: float = field(
        PAPER_RATES[0],
        "Env steps a rolling-out or mean-evaluating slot takes per tick (fractions allowed).",
        1e-3,
        1e3,
    )
    actor_steps_per_tick: float = field(
        PAPER_RATES[1],
        "Actor-only TD3 steps a training slot takes per tick (fractions allowed).",
        1e-3,
        1e3,
    )
    critic_steps_per_tick: float = field(
        PAPER_RATES[2],
        "Critic steps per tick of the critic worker or the serial critic slot (fractions "
        "allowed); td3 always takes one joint update per env step, this is only its cost.",
        1e-3,
        1e3,
    )
    # --- mean evaluation and population control
    n_mean_evals: int = field(
        5,
        "Mean-evaluation episodes per individual (asynchronous algorithms; >= 1 for aes-rl and "
        "one-plus-one, whose rules compare f with f_mu) or per generation (p-cem-rl, cem-rl).",
        0,
        INT_MAX,
        structural=True,
    )
    rl_history: int = field(
        10,
        "B_a = sum of the last rl_history individual episode lengths.",
        1,
        INT_MAX,
        structural=True,
    )
    rho: float = field(
        0.5,
        "Target RL share of the population control P_rl = 0.5 - k (r - rho).",
        0,
        1,
        traced=True,
    )
    pop_control_k: float = field(
        50.0,
        "Gain k of the population control (0: P_rl = 0.5; negative would reverse it).",
        0,
        1e6,
        traced=True,
    )
    stagger: bool = field(True, "Stagger the slots' first episodes so arrivals spread out.")
    var_init: float = field(
        1e-3,
        "Initial ES variance v0 (a variance, not a std).",
        0,
        1e6,
        low_open=True,
        traced=True,
    )
    var_min: float = field(1e-5, "Variance floor v_min (<= var_init).", 0, 1e6, traced=True)
    # --- TD3 (section 2)
    gamma: float = field(0.99, "TD3 discount.", 0, 1, traced=True)
    tau: float = field(
        0.005, "Polyak rate of the target networks.", 0, 1, low_open=True, traced=True
    )
    policy_noise: float = field(
        0.2, "Std of TD3's target-policy smoothing noise.", 0, 1e6, traced=True
    )
    noise_clip: float = field(
        0.5, "Clip of the target-policy smoothing noise.", 0, 1e6, traced=True
    )
    critic_lr: float = field(1e-3, "Critic Adam learning rate.", 0, 1, low_open=True, traced=True)
    actor_lr: float = field(1e-3, "Actor Adam learning rate.", 0, 1, low_open=True, traced=True)
    # --- the critic worker
    parallel_critic: bool = field(
        False,
        "p-cem-rl only: a critic worker trains continuously against the ES mean (no cap), "
        "instead of the serial critic phase before each generation's actor training.",
    )
    critic_job_steps: int = field(
        1000,
        "Critic steps per job of a critic worker (aes-rl, acem-rl, one-plus-one; p-cem-rl with "
        "parallel_critic): each job trains against the ES mean as it was when the job started, "
        "and new RL jobs copy the critic as the last job ended (the authors' 1000; 1: a fresh "
        "mean and critic every step).",
        1,
        INT_MAX,
        traced=True,
    )
    # --- compilation
    ticks_per_chunk: int = field(
        1000, "Ticks per compiled chunk (logging and checkpoint cadence).", 1, INT_MAX
    )

    def __post_init__(self):
        for f in dataclasses.fields(self):  # ints given for float fields are stored as floats
            value = getattr(self, f.name)
            if _kind(f) == "float" and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, f.name, float(value))
        validate(self)

    def replace(self, **changes) -> Config:
        return dataclasses.replace(self, **changes)

    @property
    def algorithm(self):
        """This config's `algorithms.Algorithm` (the registry's record)."""
        return registry.get(self.algo)

    @property
    def is_async(self) -> bool:
        return self.algorithm.family == "async"

    @property
    def is_sync(self) -> bool:
        return self.algorithm.family == "generation"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["env_kwargs"] = dict(self.env_kwargs)
        return d

    @property
    def hyper_fields(self) -> tuple[str, ...]:
        """The traced fields of this config (`HYPER`; an evosax strategy's `var_init` sets its
        initial std at construction, so it is structure there)."""
        if self.es.startswith("evosax:") and self.is_sync:
            return tuple(f for f in HYPER if f != "var_init")
        return HYPER

    def structure(self) -> Config:
        """This config with every traced field set to None: equal for configs that compile to
        the same program, and a guard (None in arithmetic fails at trace time) against reading
        a traced field from the config instead of the hyper-parameters."""
        out = object.__new__(Config)
        for f in dataclasses.fields(self):
            value = None if f.name in self.hyper_fields else getattr(self, f.name)
            object.__setattr__(out, f.name, value)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(known) - {"mean_eval"})
        if unknown:
            raise ValueError(f"config: unknown field(s) {', '.join(unknown)}")
        d = dict(d)
        # Configs stored before mean evaluations side by side were cut (they ran one after
        # another unless told otherwise, as they still do).
        if d.pop("mean_eval", "sequential") != "sequential":
            raise ValueError("config: mean_eval 'parallel' is no longer supported")
        for name in ("actor_hidden", "critic_hidden"):
            if name in d:
                d[name] = tuple(d[name])
        d.setdefault("weight_init", "flax")  # runs stored before the field started flax's way
        if "env_kwargs" in d:
            d["env_kwargs"] = tuple(sorted(dict(d["env_kwargs"]).items()))
        return cls(**d)


def _assemble() -> type:
    """`Config`: the shared settings, then each algorithm's own, in `OPTION_GROUPS` order (one
    frozen dataclass, so flags, sweeps and config.json see one flat record)."""
    extra, seen = [], {f.name for f in dataclasses.fields(_Shared)}
    for group in OPTION_GROUPS:
        for name, f in group.items():
            if name in seen:
                raise ValueError(f"config: field {name!r} is declared twice")
            seen.add(name)
            extra.append((name, type(f.default).__name__, f))
    cls = dataclasses.make_dataclass(
        "Config",
        extra,
        bases=(_Shared,),
        frozen=True,
        namespace={
            "__doc__": "Everything that defines a run's computation. Every field can be "
            "overridden.",
            "__module__": __name__,
        },
    )
    return cls


Config = _assemble()
FIELDS: dict[str, Field] = {f.name: f.metadata["spec"] for f in dataclasses.fields(Config)}
# The traced fields, in declaration order (`engine.HParams` is made from them, in this order).
HYPER = tuple(name for name, spec in FIELDS.items() if spec.traced)
# The fields that fix the compiled program's shapes: a continued run may not change them.
STRUCTURAL = tuple(name for name, spec in FIELDS.items() if spec.structural)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _kind(f: dataclasses.Field) -> str:
    return f.type if isinstance(f.type, str) else f.type.__name__


def _check_value(name: str, kind: str, value: Any) -> None:
    """Type, finiteness and range of one field (its declaration, FIELDS[name])."""
    spec = FIELDS[name]
    if kind == "bool":
        _check(isinstance(value, bool), f"{name}: expected true/false, got {value!r}")
        return
    if kind == "str":
        _check(isinstance(value, str), f"{name}: expected a string, got {value!r}")
        choices = spec.choices  # algo: the registry's, built-in or registered
        if choices is not None:
            _check(value in choices, f"{name}: unknown {value!r}; allowed: {', '.join(choices)}")
        return
    if kind.startswith("tuple[int"):
        _check(
            isinstance(value, tuple) and len(value) > 0,
            f"{name}: expected one or more layer widths, got {value!r}",
        )
        for v in value:
            _check_value(name, "int", v)
        return
    if kind == "int":
        _check(
            isinstance(value, int) and not isinstance(value, bool),
            f"{name}: expected an int, got {value!r}",
        )
    elif kind == "float":
        _check(
            isinstance(value, int | float) and not isinstance(value, bool),
            f"{name}: expected a number, got {value!r}",
        )
        _check(
            math.isfinite(value),
            f"{name}: must be finite"
            + (f" and {spec.range_text()}" if spec.low is not None or spec.high is not None else "")
            + f", got {value!r}",
        )
    else:
        return
    low_ok = spec.low is None or (value > spec.low if spec.low_open else value >= spec.low)
    high_ok = spec.high is None or (value < spec.high if spec.high_open else value <= spec.high)
    _check(low_ok and high_ok, f"{name}: must be {spec.range_text()}, got {value!r}")


def _check_env_kwargs(cfg: Config) -> None:
    """(name, value) pairs the env's constructor accepts: probe envs are built (cheap); Brax
    envs are checked against their constructor's named options without building them."""
    kwargs = cfg.env_kwargs
    _check(
        isinstance(kwargs, tuple)
        and all(isinstance(kv, tuple) and len(kv) == 2 and isinstance(kv[0], str) for kv in kwargs),
        f"env_kwargs: expected (name, value) pairs, got {kwargs!r}",
    )
    allowed = env_options(cfg.env)
    for key, _ in kwargs:
        _check(
            key in allowed,
            f"env_kwargs: {cfg.env} has no option {key!r}; allowed: {', '.join(allowed)}",
        )
    if cfg.env in PROBE_ENVS:
        from aes_rl.envs import make_env

        try:
            make_env(cfg.env, cfg.backend, cfg.episode_length, **dict(kwargs))
        except (TypeError, ValueError) as err:
            raise ValueError(f"env_kwargs: {str(err).splitlines()[0]}") from None


def _check_relations(cfg: Config) -> None:
    """Cross-field rules: each names the fields involved and what they must satisfy."""
    _check(
        not (cfg.env == "swimmer" and cfg.backend != "generalized"),
        "backend: swimmer exists only on 'generalized'",
    )
    _check(
        not (cfg.env in PROBE_ENVS and cfg.backend != "spring"),
        f"backend: {cfg.env} is a pure-JAX test env with no physics backend; leave backend "
        f"at its default (spring), got {cfg.backend!r}",
    )
    _check(
        cfg.batch_size <= cfg.buffer_size,
        f"batch_size: must be <= buffer_size ({cfg.buffer_size}), got {cfg.batch_size}",
    )
    _check(
        cfg.var_min <= cfg.var_init,
        f"var_min: must be <= var_init ({cfg.var_init:g}), got {cfg.var_min:g}",
    )
    algorithm = cfg.algorithm
    _check(
        cfg.n_mean_evals >= 1 or not algorithm.needs_f_mu,
        f"n_mean_evals: {cfg.algo} compares each return with the mean fitness f_mu, "
        f"so it needs >= 1 mean-evaluation episode, got {cfg.n_mean_evals}",
    )
    _check(
        cfg.es == "cem"
        or (cfg.es.startswith("evosax:") and cfg.es.split(":", 1)[1] in EVOSAX_STRATEGIES),
        f"es: unknown {cfg.es!r}; allowed: cem, "
        + ", ".join("evosax:" + n for n in EVOSAX_STRATEGIES),
    )
    _check(cfg.pop_size % 2 == 0, f"pop_size: must be even (antithetic pairs), got {cfg.pop_size}")
    _check(
        cfg.n_parents <= cfg.pop_size or not cfg.is_sync,
        f"n_parents: must be <= pop_size ({cfg.pop_size}), got {cfg.n_parents}",
    )
    _check(
        cfg.n_parents <= cfg.acem_ring or cfg.algo != "acem-rl",
        f"n_parents: must be <= acem_ring ({cfg.acem_ring}), got {cfg.n_parents}",
    )
    _check(
        cfg.rl_members <= cfg.pop_size,
        f"rl_members: must be <= pop_size ({cfg.pop_size}), got {cfg.rl_members}",
    )
    _check(
        not algorithm.one_slot or cfg.num_slots == 1,
        f"num_slots: {cfg.algo} is defined for one slot"
        + ("; use p-cem-rl for W > 1" if cfg.algo == "cem-rl" else ""),
    )
    _check(
        not cfg.parallel_critic or algorithm.parallel_critic_mode,
        f"parallel_critic: only p-cem-rl has a parallel-critic mode, not {cfg.algo}",
    )
    rates = tuple(getattr(cfg, name) for name in RATE_FIELDS)
    _check(
        cfg.cost_model != "paper" or rates == PAPER_RATES,
        f"cost_model: 'paper' fixes the rates at {PAPER_RATES}, got {rates}; "
        "use cost_model 'custom' for other rates",
    )


def validate(cfg: Config) -> None:
    """Raise a one-line ValueError naming the first bad field and its allowed values.

    Every field: type, finiteness and range (its declaration); then the relations between
    fields. A Config that passes builds and runs; nothing is checked later inside the loop.
    """
    for f in dataclasses.fields(cfg):
        if f.name != "env_kwargs":
            _check_value(f.name, _kind(f), getattr(cfg, f.name))
    _check_env_kwargs(cfg)
    _check_relations(cfg)


def env_options(env: str) -> tuple[str, ...]:
    """The named keyword options of an env's constructor (Brax's `backend` is a Config field)."""
    import inspect

    if env in PROBE_ENVS:
        from aes_rl.envs import _PROBES

        cls = _PROBES[env]
    else:
        from brax import envs as brax_envs

        cls = brax_envs._envs[env]
    skip = ("self", "backend", "kwargs")
    return tuple(p for p in inspect.signature(cls.__init__).parameters if p not in skip)


def env_defaults(env: str) -> dict[str, Any]:
    """The values the fields declare for `env` (`Field.per_env`): P, swimmer's backend, the
    test envs' small sizes."""
    return {name: spec.per_env[env] for name, spec in FIELDS.items() if env in spec.per_env}


def preset(env: str, algo: str = "aes-rl", **overrides) -> Config:
    """The authors' hyper-parameters for `env` and `algo`, then `overrides`: the Config
    defaults, under the algorithm's preset (its registry record's, the authors'
    per-algorithm configs), under what the fields declare for `env` (`env_defaults`). Per-env
    exceptions of an algorithm apply only where the authors' config of it has them: 256-256
    nets and lr 3e-4 on humanoid for aes-rl (td3 has them everywhere); rho 0.1 on swimmer for
    aes-rl. Batch 256 everywhere but cem-rl (100); buffer 2e5 for the asynchronous
    algorithms, 1e6 for the others."""
    if env not in ENV_NAMES:
        raise ValueError(f"env: unknown {env!r}; allowed: {', '.join(ENV_NAMES)}")
    algorithm = registry.get(algo)
    base: dict[str, Any] = dict(algo=algo, env=env)
    base.update(algorithm.preset(env))  # the authors' config of this algorithm on this env
    base.update(env_defaults(env))
    if any(name in overrides for name in RATE_FIELDS) and "cost_model" not in overrides:
        base.update(cost_model="custom")
    base.update(overrides)
    return Config(**base)


def _fmt(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).lower() if isinstance(value, bool) else str(value)


def preset_default_text(name: str) -> str:
    """How `preset` sets field `name` across algorithms and Brax envs, for help texts:
    "600" or "400 300; 256 256 for td3, humanoid (aes-rl)"; a field declared per env lists
    its values ("halfcheetah 500, hopper 50, ...")."""
    per_env = FIELDS[name].per_env
    if all(e in per_env for e in BRAX_ENVS):  # one value per env: list them all
        return ", ".join(f"{e} {_fmt(per_env[e])}" for e in BRAX_ENVS)
    algos = algo_names()
    values = {(a, e): getattr(preset(e, a), name) for a in algos for e in BRAX_ENVS}
    counts: dict[Any, int] = {}
    for v in values.values():
        counts[v] = counts.get(v, 0) + 1
    common = max(counts, key=lambda v: counts[v])
    parts = []
    for value in sorted(set(values.values()) - {common}, key=_fmt):
        pairs = {k for k, v in values.items() if v == value}
        where_algos = [a for a in algos if all((a, e) in pairs for e in BRAX_ENVS)]
        envs = [e for e in BRAX_ENVS if all((a, e) in pairs for a in algos)]
        rest = sorted((a, e) for a, e in pairs if a not in where_algos and e not in envs)
        by_env: dict[str, list[str]] = {}
        for a, e in rest:
            by_env.setdefault(e, []).append(a)
        where = where_algos + envs + [f"{e} ({'/'.join(a)})" for e, a in by_env.items()]
        parts.append(f"{_fmt(value)} for {', '.join(where)}")
    return "; ".join([_fmt(common)] + parts)


def whole_number(text: str) -> int:
    """An int as a researcher writes one on a command line: `100000`, `100_000` or `1e5`
    (a float spelling only when it is a whole number). ValueError otherwise."""
    word = text.strip()
    try:
        return int(word)  # also takes underscores
    except ValueError:
        pass
    try:
        value = float(word)
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None
    if not value.is_integer():  # also NaN and the infinities
        raise ValueError(f"expected a whole number, got {text!r}")
    return int(value)
