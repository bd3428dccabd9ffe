"""The engine's state: phases, the traced hyper-parameters, the slots, the counters, the
the critic worker's job, one tick's metrics, and per-tick rates.

Every array here carries no row axis; several rows share one program by stacking states on a
leading axis (`aes_rl.program`). docs/algorithm.md §6 describes the slot engine.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from aes_rl import replay
from aes_rl.config import FIELDS, HYPER, Config
from aes_rl.envs import State as EnvState

TRAIN, ROLLOUT, MEAN_EVAL, WAIT, CRITIC = 0, 1, 2, 3, 4
PHASES = ("train", "rollout", "mean-eval", "wait", "critic")
# `jax.named_scope`s of the tick's parts (in its order) and, inside the env steps, of the
# simulator and of the actors' actions: profiles split a compiled tick's time by them.
SCOPES = ("actor_steps", "env_steps", "critic_steps", "job_ends")
ENV_SCOPES = ("simulator", "actions")


def _hparams_of(cls, cfg: Config):
    """The traced values of a full config (structure-only configs have none): an int field
    as int32, a rule choice as its int32 index into the field's choices, the rest float32."""
    vals = {}
    for name in HYPER:
        v, kind = getattr(cfg, name), _KINDS[name]
        if kind == "str":
            v, kind = FIELDS[name].choices.index(v), "int"
        elif v is None:  # structure there (evosax var_init): a placeholder, never read
            v = 0.0
        vals[name] = jnp.asarray(v, jnp.int32 if kind == "int" else jnp.float32)
    return cls(**vals)


_KINDS = {f.name: f.type for f in dataclasses.fields(Config)}
# The traced hyper-parameters of one row: one scalar per traced Config field (`config.HYPER`,
# in its order), carried in the state, so rows of one program may differ in them. Derived
# from the fields' declarations: a new traced field needs no change here.
HParams = struct.dataclass(
    type(
        "HParams",
        (),
        {
            "__annotations__": dict.fromkeys(HYPER, "jax.Array"),
            "__module__": __name__,
            "__doc__": "The traced hyper-parameters of one row (`config.HYPER`), int32 or "
            "float32 scalars; rule choices are indices into the field's choices. "
            "`HParams.of(cfg)` builds them.",
            "of": classmethod(_hparams_of),
        },
    )
)


@struct.dataclass
class Slots:
    phase: jax.Array  # [W] i32, one of TRAIN/ROLLOUT/MEAN_EVAL/WAIT/CRITIC
    counter: jax.Array  # [W] i32, actor (TRAIN) or critic (CRITIC) steps done in this job
    target: jax.Array  # [W] i32, B_a or S_prev (TRAIN), S_prev / rl_members (CRITIC)
    params: jax.Array  # [W, d] f32, the policy being trained or run (mean snapshot in eval)
    x: jax.Array  # [W, d] f32, the member to tell (set when its rollout ends)
    opt: Any  # Adam state over [W, d], fresh for every training job
    critic: Any  # [W] twin-critic parameters, a snapshot taken when training starts (td3: None)
    env: EnvState  # [W] env states
    ep_ret: jax.Array  # [W] f32, return of the running episode
    ep_len: jax.Array  # [W] i32, length of the running episode
    ret: jax.Array  # [W] f32, the member's return
    length: jax.Array  # [W] i32, the member's episode length
    eval_sum: jax.Array  # [W] f32, sum of mean-evaluation returns so far
    eval_count: jax.Array  # [W] i32, mean-evaluation episodes finished
    is_rl: jax.Array  # [W] bool, current job is an RL member's
    random: jax.Array  # [W] bool, current rollout uses uniform random actions (warm-up)
    member: jax.Array  # [W] i32, index in the generation (synchronous algorithms)
    drawn_mean: jax.Array  # [W, d] f32, the ES mean when the slot drew its job (diagnostics)
    drawn_tells: jax.Array  # [W] i32, arrivals told (filed) before the slot drew its job


@struct.dataclass
class Counters:
    total_steps: jax.Array  # [] i32, counted env steps (the budget)
    critic_steps: jax.Array  # [] i32
    actor_steps: jax.Array  # [] i32
    ticks: jax.Array  # [] i32
    busy: jax.Array  # [] i32, busy slot-ticks (phase != WAIT)
    n_rl: jax.Array  # [] i32, RL jobs chosen after warm-up (+1)
    n_es: jax.Array  # [] i32, ES jobs chosen after warm-up (+1)
    arrivals: jax.Array  # [] i32
    lengths: jax.Array  # [rl_history] i32, ring of the last individual episode lengths
    lengths_seen: jax.Array  # [] i32, episodes pushed into the ring
    f_mu: jax.Array  # [] f32, latest mean fitness (of a told arrival: always finite)
    nonfinite_arrivals: jax.Array  # [] i32, arrivals not told: non-finite return or f_mu
    nonfinite_transitions: jax.Array  # [] i32, rollout transitions kept out of the buffer


@struct.dataclass
class CriticJob:
    """The job of a critic worker (`Family.critic_worker`; docs/algorithm.md §2). As in the
    authors' code, the worker trains in jobs of `critic_job_steps` steps: a job starts when
    none runs and the family allows it, trains against the ES mean as it was at the job's
    start, and when it ends its critic becomes the one new RL jobs copy."""

    policy: jax.Array  # [d] f32, this job's target policy: the ES mean at the job's start
    left: jax.Array  # [] i32, critic steps left in this job (0: none running)
    published: Any  # twin-critic params as the last job ended: what a new RL job copies


@struct.dataclass
class TrainState:
    key: jax.Array  # typed PRNG key
    slots: Slots
    es: Any  # the family's strategy state (None for td3)
    learner: Any  # td3.CriticState (ES families) or td3.TD3State (td3)
    buffer: replay.ReplayBuffer
    fam: Any  # the family's own state (the generation family's `Generation`; None: none)
    counters: Counters
    hp: HParams  # this row's traced hyper-parameters
    critic_job: CriticJob | None = None  # the critic worker's job (None: no critic worker)


class TickMetrics(NamedTuple):
    arrived: jax.Array  # [W] bool, an individual's evaluation ended (the ES hears of it)
    ret: jax.Array  # [W] f32
    length: jax.Array  # [W] i32
    p: jax.Array  # [W] f32
    is_rl: jax.Array  # [W] bool, the ARRIVING member was an RL member (not the slot's next job)
    told: jax.Array  # [W] bool, the arrival was told to the ES (finite return and f_mu)
    f_mu: jax.Array  # [] f32
    env_path: jax.Array  # [] i32, the env steps this row's tick needed (`step_envs`): 0 none,
    # 1 its few acting slots, 2 all W
    info: Any  # the family's record of what each arrival was told against (`Ended.info`)
    total_steps: jax.Array  # [] i32, counted steps at the end of the tick (its arrivals' x axis)


@dataclasses.dataclass(frozen=True)
class Rate:
    """A per-tick rate num/den: `at(t)` units at tick t, at most `most` in any tick."""

    num: int
    den: int

    @classmethod
    def of(cls, value: float) -> Rate:
        f = Fraction(value).limit_denominator(1000)
        return cls(max(f.numerator, 1), f.denominator)

    @property
    def most(self) -> int:
        return -(-self.num // self.den)

    def at(self, tick: jax.Array) -> jax.Array:
        t = tick % self.den
        return ((t + 1) * self.num) // self.den - (t * self.num) // self.den


class Draw(NamedTuple):
    """The jobs free slots draw (`Family.draw`), one entry per slot ([W] or [W, d])."""

    x: jax.Array  # [W, d] f32, the member (or the mean, for a mean evaluation)
    phase: jax.Array  # [W] i32, the job's first phase
    rl: jax.Array  # [W] bool, an RL member
    valid: jax.Array  # [W] bool, a job was drawn (else the slot waits)
    member: jax.Array  # [W] i32, index in the generation (0 for asynchronous families)
    target: jax.Array  # [W] i32, the job's step target (B_a, S_prev, a critic segment)


class Ended(NamedTuple):
    """What a tick's ended jobs gave (`Family.end_jobs`), [W] each."""

    arrived: jax.Array  # bool, an individual's evaluation ended (the ES hears of it)
    p: jax.Array  # f32, the mean update ratio it was told with (0: none)
    told: jax.Array  # bool, told to the ES (finite return and f_mu)
    arrived_rl: jax.Array  # bool, the arriving member was an RL member
    info: Any  # the family's diagnostics of each arrival (`families.diagnostics.ArrivalInfo`)


class Learner(NamedTuple):
    """What `Family.init_learner` builds."""

    learner: Any  # td3.CriticState (a shared critic) or td3.TD3State (td3)
    mu0: jax.Array  # [d] f32, the initial policy (the ES's initial mean)
    slot_critic: Any  # [W] per-slot critic copies, or None


def tree_where(mask: jax.Array, new, old):
    """Per-slot select over a pytree whose leaves have a leading [W] axis."""

    def sel(a, b):
        m = mask.reshape(mask.shape + (1,) * (a.ndim - mask.ndim))
        return jnp.where(m, a, b)

    return jax.tree.map(sel, new, old)


def tile(tree, w: int):
    """`tree` repeated on a new leading [w] axis."""
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (w,) + x.shape), tree)


def count(mask: jax.Array) -> jax.Array:
    """How many entries of `mask` are True (i32)."""
    return jnp.sum(mask.astype(jnp.int32))
