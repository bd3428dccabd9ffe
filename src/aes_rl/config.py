"""Run configuration: one frozen, hashable record per run, per-environment presets, validation.

`Config` is the structure of the compiled loop (static under jit) plus the algorithm's
hyper-parameters (docs/algorithm.md §2-5). Run settings (seed, run directory, logging
cadence) are not here: they belong to the driver and the CLI.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from aes_rl.envs import BACKENDS, BRAX_ENVS, ENV_NAMES, PROBE_ENVS
from aes_rl.networks import INITS

# The built-in algorithms (`aes_rl.algorithms` registers them, and may register more).
ALGOS = ("aes-rl", "acem-rl", "one-plus-one", "p-cem-rl", "cem-rl", "td3")
COST_MODELS = ("paper", "device", "custom")
MEAN_EVALS = ("sequential", "parallel")
RATE_FIELDS = ("env_steps_per_tick", "actor_steps_per_tick", "critic_steps_per_tick")
# The authors' regime (docs/algorithm.md §8): a TD3 gradient step of 400-300 nets in
# PyTorch on a GPU, with a Ray call to the replay buffer per step, costs about as much as 10
# MuJoCo env steps of a worker that runs its policy on that GPU; a tick is one gradient step.
PAPER_RATES = (10.0, 1.0, 1.0)
MEAN_RULES = ("fixed-linear", "fixed-sigmoid", "baseline-absolute", "baseline-relative")
VAR_RULES = ("fixed", "adaptive")
# The authors' mean_update_param P per environment (their MuJoCo configs, docs/algorithm.md
# §3), set for MuJoCo returns at 1M steps.
AUTHORS_MEAN_PARAM = {
    "halfcheetah": 2000.0,
    "hopper": 600.0,
    "walker2d": 800.0,
    "ant": 960.0,
    "humanoid": 960.0,
    "swimmer": 48.0,
}
# The presets' P on Brax: a quarter of the authors' (docs/findings.md, "Presets"). On Brax
# walker2d at 100k steps, f - f_mu of 80% of the arrivals is in [-108, 88], so at P = 800 they
# get p in [0.46, 0.53] and the mean averages them all; P = 200 and 50 ended near the
# ~1000 plateau in 5 and 4 of 5 seeds where 800 reached it in none. 200 is
# measured on walker2d (hopper's 150 lies inside its measured 50..600 grid); the other envs
# take the same factor, unmeasured. Probes use a small P.
BRAX_P_FACTOR = 0.25
MEAN_PARAM = {env: BRAX_P_FACTOR * p for env, p in AUTHORS_MEAN_PARAM.items()} | {
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
    "weight_init",
    "buffer_size",
    "pop_size",
    "es",
    "env_kwargs",
    "rl_history",
    "n_mean_evals",
    "mean_eval",
    "n_parents",
    "acem_ring",
    "acem_scale_var",
    "success_window",
)
# Numbers and rule choices that fix no shape: the compiled program takes them as traced values
# (`loop.HParams`, carried in the state), so rows of one program may differ in them (a sweep)
# and changing them never recompiles. Every other field is structure (docs/algorithm.md §10).
HYPER = (
    "warmup_steps",
    "rho",
    "pop_control_k",
    "mean_rule",
    "var_rule",
    "mean_param",
    "fixed_n",
    "negative_ratio",
    "var_init",
    "var_min",
    "rl_members",
    "gamma",
    "tau",
    "policy_noise",
    "noise_clip",
    "critic_lr",
    "actor_lr",
    "expl_noise",
    "policy_delay",
    "damp_init",
    "damp_limit",
    "damp_tau",
    "success_threshold",
    "success_factor",
    "critic_job_steps",
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
    weight_init: str = "torch"  # torch (the authors' nn.Linear default) | flax (nn.Dense's)
    buffer_size: int = 200_000
    batch_size: int = 256
    warmup_steps: int = 10_000  # counted steps of random-action ES rollouts
    # --- the clock: what one tick buys (docs/algorithm.md §8)
    cost_model: str = "paper"  # paper | device (calibrated) | custom (the three rates below)
    env_steps_per_tick: float = PAPER_RATES[0]  # env steps a rolling-out slot takes per tick
    actor_steps_per_tick: float = PAPER_RATES[1]  # actor steps a training slot takes per tick
    critic_steps_per_tick: float = PAPER_RATES[2]  # steps the critic (worker or slot) per tick
    # --- mean evaluation and the critic's schedule
    n_mean_evals: int = 5  # mean-evaluation episodes per individual (async) / generation (sync)
    mean_eval: str = "sequential"  # sequential (one after another, the authors') | parallel
    parallel_critic: bool = False  # p-cem-rl: a critic worker against the mean, no serial phase
    critic_job_steps: int = 1000  # a critic worker's job: steps against one snapshot of the mean
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
    # --- the baselines' own ES parameters (section 5)
    n_parents: int = 0  # elites of cem and acem-rl's ring tell; 0: half the population / ring
    acem_ring: int = 10  # K: acem-rl's ring of the latest arrivals
    acem_scale_var: bool = False  # acem-rl: a 1/K step on the variance too (not the authors')
    damp_init: float = 1e-3  # cem / acem-rl: initial noise added to the variance
    damp_limit: float = 1e-5  # ... its limit
    damp_tau: float = 0.9  # ... and its decay per generation (acem-rl: per K arrivals)
    success_window: int = 10  # one-plus-one: outcomes in the success-rate window
    success_threshold: float = 0.2  # one-plus-one: grow v above this success rate
    success_factor: float = 0.99  # one-plus-one: v /= factor (grow) or v *= factor (shrink)
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
        from aes_rl import algorithms

        return algorithms.get(self.algo)

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
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(f"config: unknown field(s) {', '.join(unknown)}")
        d = dict(d)
        for name in ("actor_hidden", "critic_hidden"):
            if name in d:
                d[name] = tuple(d[name])
        d.setdefault("weight_init", "flax")  # runs stored before the field started flax's way
        if "env_kwargs" in d:
            d["env_kwargs"] = tuple(sorted(dict(d["env_kwargs"]).items()))
        return cls(**d)


INT_MAX = 2**31 - 1  # counters and sizes live in int32 arrays inside the compiled loop
# evosax 0.3.2 distribution-based strategies the adapter supports (`aes_rl.es.strategies`).
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


@dataclasses.dataclass(frozen=True)
class Field:
    """What a Config field means and which values it takes (validation and CLI help)."""

    help: str
    low: float | None = None  # inclusive bound, unless low_open
    high: float | None = None  # inclusive bound, unless high_open
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] | None = None

    def range_text(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(self.choices)
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            high = "2^31-1" if self.high == INT_MAX else f"{self.high:g}"
            return f"in {left}{self.low:g}, {high}{right}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return "any value"


FIELDS: dict[str, Field] = {
    "algo": Field("Algorithm.", choices=ALGOS),
    "env": Field(
        "Environment (probe and countdown are tiny pure-JAX test envs).", choices=ENV_NAMES
    ),
    "backend": Field(
        "Brax physics backend (a different simulator each: compare returns within one).",
        choices=BACKENDS,
    ),
    "episode_length": Field("Episode time limit in env steps (paper: 1000).", 1, INT_MAX),
    "env_kwargs": Field("Extra make_env keywords (probe envs' options)."),
    "num_slots": Field("W worker slots, the paper's actor workers.", 1, INT_MAX),
    "actor_hidden": Field("Actor hidden layer widths.", 1, INT_MAX),
    "critic_hidden": Field("Twin-critic hidden layer widths.", 1, INT_MAX),
    "weight_init": Field(
        "How actor and critic layers start: torch (PyTorch's default nn.Linear, the authors': "
        "weights and biases U(+-1/sqrt(fan_in))) or flax (nn.Dense's: lecun-normal weights, "
        "1.73x torch's std, zero biases; every run before this field existed).",
        choices=INITS,
    ),
    "buffer_size": Field("Replay buffer capacity in transitions.", 1, INT_MAX),
    "batch_size": Field("TD3 minibatch size (<= buffer_size).", 1, INT_MAX),
    "warmup_steps": Field(
        "Counted steps of random-action ES rollouts before any RL job or critic step "
        "(>= 1, so nothing samples an empty buffer).",
        1,
        INT_MAX,
    ),
    "n_mean_evals": Field(
        "Mean-evaluation episodes per individual (asynchronous algorithms; >= 1 for aes-rl and "
        "one-plus-one, whose rules compare f with f_mu) or per generation (p-cem-rl, cem-rl).",
        0,
        INT_MAX,
    ),
    "cost_model": Field(
        "The clock: paper (the authors' regime: a gradient step costs 10 env steps), device "
        "(rates measured on this machine at the run's shapes, stored in config.json) or custom "
        "(the three *_steps_per_tick rates; giving one selects custom).",
        choices=COST_MODELS,
    ),
    "env_steps_per_tick": Field(
        "Env steps a rolling-out or mean-evaluating slot takes per tick (fractions allowed).",
        1e-3,
        1e3,
    ),
    "actor_steps_per_tick": Field(
        "Actor-only TD3 steps a training slot takes per tick (fractions allowed).", 1e-3, 1e3
    ),
    "critic_steps_per_tick": Field(
        "Critic steps per tick of the critic worker or the serial critic slot (fractions "
        "allowed); td3 always takes one joint update per env step, this is only its cost.",
        1e-3,
        1e3,
    ),
    "mean_eval": Field(
        "How a slot runs its n_mean_evals episodes of the mean: sequential (one after another, "
        "as the authors' workers do) or parallel (side by side: only the arrival comes sooner).",
        choices=MEAN_EVALS,
    ),
    "parallel_critic": Field(
        "p-cem-rl only: a critic worker trains continuously against the ES mean (no cap), "
        "instead of the serial critic phase before each generation's actor training."
    ),
    "critic_job_steps": Field(
        "Critic steps per job of a critic worker (aes-rl, acem-rl, one-plus-one; p-cem-rl with "
        "parallel_critic): each job trains against the ES mean as it was when the job started, "
        "and new RL jobs copy the critic as the last job ended (the authors' 1000; 1: a fresh "
        "mean and critic every step).",
        1,
        INT_MAX,
    ),
    "rl_history": Field("B_a = sum of the last rl_history individual episode lengths.", 1, INT_MAX),
    "rho": Field("Target RL share of the population control P_rl = 0.5 - k (r - rho).", 0, 1),
    "pop_control_k": Field(
        "Gain k of the population control (0: P_rl = 0.5; negative would reverse it).", 0, 1e6
    ),
    "stagger": Field("Stagger the slots' first episodes so arrivals spread out."),
    "mean_rule": Field("AES-RL mean update rule for p.", choices=MEAN_RULES),
    "var_rule": Field("AES-RL variance update rule (divisor n).", choices=VAR_RULES),
    "mean_param": Field(
        "P of the mean rule, in return units (Brax presets: a quarter of the authors' "
        "MuJoCo values, docs/findings.md; theirs: halfcheetah 2000, hopper 600, walker2d "
        "800, ant 960, humanoid 960, swimmer 48).",
        0,
        1e12,
        low_open=True,
    ),
    "fixed_n": Field(
        "Divisor n of the fixed variance rule (>= 1; below 1 the update overshoots).", 1, 1e12
    ),
    "negative_ratio": Field("fixed-linear: scale of p when f < f_mu.", 0, 1),
    "var_init": Field("Initial ES variance v0 (a variance, not a std).", 0, 1e6, low_open=True),
    "var_min": Field("Variance floor v_min (<= var_init).", 0, 1e6),
    "es": Field(
        "Generation ES of p-cem-rl/cem-rl: cem or evosax:NAME with NAME one of "
        + ", ".join(EVOSAX_STRATEGIES)
        + "."
    ),
    "pop_size": Field("Generation size of p-cem-rl/cem-rl (even: antithetic pairs).", 2, INT_MAX),
    "rl_members": Field("RL members per generation (<= pop_size).", 0, INT_MAX),
    "n_parents": Field(
        "Elites (parents) of the CEM tell of p-cem-rl/cem-rl (<= pop_size) and of acem-rl's "
        "ring tell (<= acem_ring); 0: half the population or ring.",
        0,
        INT_MAX,
    ),
    "acem_ring": Field("acem-rl: K, its ring of the latest arrivals (the authors' 10).", 1, 10_000),
    "acem_scale_var": Field(
        "acem-rl: take a 1/K step on the variance too, instead of replacing it by the ring's "
        "CEM variance at every arrival (the authors')."
    ),
    "damp_init": Field("CEM and acem-rl: initial noise added to the variance.", 0, 1e6),
    "damp_limit": Field("CEM and acem-rl: the limit the variance noise decays to.", 0, 1e6),
    "damp_tau": Field(
        "CEM and acem-rl: decay of the variance noise per generation (acem-rl: per K arrivals).",
        0,
        1,
    ),
    "success_window": Field("one-plus-one: outcomes in the success-rate window.", 1, 10_000),
    "success_threshold": Field(
        "one-plus-one: the variance grows above this success rate, else shrinks.", 0, 1
    ),
    "success_factor": Field(
        "one-plus-one: v /= factor when growing, v *= factor when shrinking.",
        0,
        1,
        low_open=True,
    ),
    "gamma": Field("TD3 discount.", 0, 1),
    "tau": Field("Polyak rate of the target networks.", 0, 1, low_open=True),
    "policy_noise": Field("Std of TD3's target-policy smoothing noise.", 0, 1e6),
    "noise_clip": Field("Clip of the target-policy smoothing noise.", 0, 1e6),
    "critic_lr": Field("Critic Adam learning rate.", 0, 1, low_open=True),
    "actor_lr": Field("Actor Adam learning rate.", 0, 1, low_open=True),
    "expl_noise": Field("TD3 baseline's exploration noise std, times max_action.", 0, 1e6),
    "policy_delay": Field("TD3 baseline: critic steps per actor and target update.", 1, INT_MAX),
    "ticks_per_chunk": Field(
        "Ticks per compiled chunk (logging and checkpoint cadence).", 1, INT_MAX
    ),
}


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _kind(f: dataclasses.Field) -> str:
    return f.type if isinstance(f.type, str) else f.type.__name__


def _check_value(name: str, kind: str, value: Any) -> None:
    """Type, finiteness and range of one field (the table FIELDS)."""
    spec = FIELDS[name]
    if kind == "bool":
        _check(isinstance(value, bool), f"{name}: expected true/false, got {value!r}")
        return
    if kind == "str":
        _check(isinstance(value, str), f"{name}: expected a string, got {value!r}")
        if name == "algo":  # the registry's algorithms, built-in or registered
            from aes_rl import algorithms

            algorithms.get(value)
        elif spec.choices is not None:
            _check(
                value in spec.choices,
                f"{name}: unknown {value!r}; allowed: {', '.join(spec.choices)}",
            )
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

    Every field: type, finiteness and range (the table FIELDS); then the relations between
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


def preset(env: str, algo: str = "aes-rl", **overrides) -> Config:
    """The authors' hyper-parameters for `env` and `algo` (their per-algorithm configs), then
    `overrides`. Per-env exceptions apply only where the authors' config of that algorithm has
    them: 256-256 nets and lr 3e-4 on humanoid for aes-rl (td3 has them everywhere); rho 0.1 on
    swimmer for aes-rl. Batch 256 everywhere but cem-rl (100); buffer 2e5 for the
    asynchronous algorithms, 1e6 for the others."""
    if env not in ENV_NAMES:
        raise ValueError(f"env: unknown {env!r}; allowed: {', '.join(ENV_NAMES)}")
    from aes_rl import algorithms

    algorithm = algorithms.get(algo)
    base: dict[str, Any] = dict(algo=algo, env=env, mean_param=MEAN_PARAM[env])
    if env == "swimmer":
        base.update(backend="generalized")
    base.update(algorithm.preset(env))  # the authors' config of this algorithm on this env
    if env not in BRAX_ENVS:
        base.update(episode_length=50, warmup_steps=500, buffer_size=20_000)
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
    "600" or "400 300; 256 256 for td3, humanoid (aes-rl)"."""
    values = {(a, e): getattr(preset(e, a), name) for a in ALGOS for e in BRAX_ENVS}
    counts: dict[Any, int] = {}
    for v in values.values():
        counts[v] = counts.get(v, 0) + 1
    common = max(counts, key=lambda v: counts[v])
    parts = []
    for value in sorted(set(values.values()) - {common}, key=_fmt):
        pairs = {k for k, v in values.items() if v == value}
        algos = [a for a in ALGOS if all((a, e) in pairs for e in BRAX_ENVS)]
        envs = [e for e in BRAX_ENVS if all((a, e) in pairs for a in ALGOS)]
        rest = sorted((a, e) for a, e in pairs if a not in algos and e not in envs)
        by_env: dict[str, list[str]] = {}
        for a, e in rest:
            by_env.setdefault(e, []).append(a)
        where = algos + envs + [f"{e} ({'/'.join(a)})" for e, a in by_env.items()]
        parts.append(f"{_fmt(value)} for {', '.join(where)}")
    if name == "mean_param":  # one value per env: list them all
        return ", ".join(f"{e} {_fmt(MEAN_PARAM[e])}" for e in BRAX_ENVS)
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

