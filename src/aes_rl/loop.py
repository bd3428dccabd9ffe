"""The training loop: W worker slots advanced tick by tick inside one compiled `lax.scan`.

docs/algorithm.md §6 (the slot engine) and §8 (the clock). Every slot carries a phase (RL actor
training, serial critic training, rollout, mean evaluation, waiting), its own counters, its
member's flat parameters and its env state. One tick is one unit of modeled time; in it every
slot does what the cost model says that time buys:

1. training slots take `actor_steps_per_tick` actor-only TD3 steps (exactly `B_a` or `S_prev`
   in all) against the critic snapshot taken when their training started;
2. rolling-out and mean-evaluating slots take `env_steps_per_tick` env steps (per-slot
   policies, vmapped); rollout transitions enter the replay buffer and are counted;
3. the critic takes `critic_steps_per_tick` steps: as a separate worker, in jobs against the
   ES mean at each job's start (`CriticJob`; asynchronous algorithms: a job starts only while
   the critic is behind the counted steps; p-cem-rl's parallel critic: no cap),
   or in the slot that holds the serial critic job, against that job's member (p-cem-rl,
   cem-rl); td3 takes one joint update per env step;
4. slots whose job ended are handled: asynchronous algorithms tell arrivals to the ES in slot
   order (`tell_many`); synchronous ones file results into the generation, whose stages (serial
   critic -> actor training -> evaluation -> tell -> mean evaluation -> ask) end in barriers;
   then every free slot draws its next job in slot order.

What differs between algorithms comes from their family (`Family`, a record of pure functions
in `aes_rl.families`) and their registry entry (`aes_rl.algorithms`): the tick names no
algorithm, and the state holds only the running family's parts.

Rates may be fractions: a rate p/q gives floor((t+1) p/q) - floor(t p/q) units at tick t.
Asynchrony is data: masks, counters and `jnp.where`; branches only on scalar predicates,
through `row_cond`, which keeps them branches when rows run side by side (docs/algorithm.md
§10). The whole `TrainState` carries a leading row axis so several rows share one program.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
from collections.abc import Callable
from fractions import Fraction
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from aes_rl import evaluation, hosts, replay, td3
from aes_rl.config import HYPER, MEAN_RULES, VAR_RULES, Config
from aes_rl.envs import State as EnvState
from aes_rl.envs import TimeLimit, make_env
from aes_rl.networks import ActorSpec, CriticSpec

TRAIN, ROLLOUT, MEAN_EVAL, WAIT, CRITIC = 0, 1, 2, 3, 4
PHASES = ("train", "rollout", "mean-eval", "wait", "critic")
# Stages of a synchronous generation, each ending in a barrier.
STAGE_CRITIC, STAGE_ACTOR, STAGE_EVAL, STAGE_MEAN = 0, 1, 2, 3
STAGES = ("critic", "actor", "eval", "mean-eval")


@struct.dataclass
class HParams:
    """The traced hyper-parameters of one row (`config.HYPER`), scalars in the state: rows of
    one program may differ in them. Rule choices are indices into MEAN_RULES / VAR_RULES."""

    warmup_steps: jax.Array  # i32
    rho: jax.Array
    pop_control_k: jax.Array
    mean_rule: jax.Array  # i32
    var_rule: jax.Array  # i32
    mean_param: jax.Array
    fixed_n: jax.Array
    negative_ratio: jax.Array
    var_init: jax.Array
    var_min: jax.Array
    rl_members: jax.Array  # i32
    gamma: jax.Array
    tau: jax.Array
    policy_noise: jax.Array
    noise_clip: jax.Array
    critic_lr: jax.Array
    actor_lr: jax.Array
    expl_noise: jax.Array
    policy_delay: jax.Array  # i32
    damp_init: jax.Array
    damp_limit: jax.Array
    damp_tau: jax.Array
    success_threshold: jax.Array
    success_factor: jax.Array
    critic_job_steps: jax.Array  # i32

    @classmethod
    def of(cls, cfg: Config) -> HParams:
        """The traced values of a full config (structure-only configs have none)."""
        ints = {"warmup_steps", "rl_members", "policy_delay", "critic_job_steps"}
        vals = {}
        for name in HYPER:
            v = getattr(cfg, name)
            if name == "mean_rule":
                v = MEAN_RULES.index(v)
            elif name == "var_rule":
                v = VAR_RULES.index(v)
            elif v is None:  # structure there (evosax var_init): a placeholder, never read
                v = 0.0
            dtype = jnp.int32 if name in ints | {"mean_rule", "var_rule"} else jnp.float32
            vals[name] = jnp.asarray(v, dtype)
        return cls(**vals)


@struct.dataclass
class SideEnvs:
    """The mean-evaluation episodes of `mean_eval="parallel"`, E = n_mean_evals per slot."""

    env: EnvState  # [W, E] env states
    ret: jax.Array  # [W, E] f32, returns so far
    alive: jax.Array  # [W, E] bool, episode still running


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
    side: SideEnvs | None  # parallel mean evaluation (None when sequential)


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
class Generation:
    """The population of a generation (the generation family's part of the state)."""

    xs: jax.Array  # [N, d] f32, members (RL members replaced by their trained actors)
    rets: jax.Array  # [N] f32
    is_rl: jax.Array  # [N] bool, rows 0..rl_members-1 after warm-up
    stage: jax.Array  # [] i32, STAGE_CRITIC/ACTOR/EVAL/MEAN
    handed: jax.Array  # [] i32, jobs of this stage handed out
    finished: jax.Array  # [] i32, jobs of this stage finished
    steps: jax.Array  # [] i32, counted steps of this generation
    s_prev: jax.Array  # [] i32, counted steps of the previous generation


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
    gen: Generation | None  # the generation family's (None for the others)
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
    env_path: jax.Array  # [] i32, the env steps this row's tick needed (`_step_envs`): 0 none,
    # 1 its few acting slots, 2 all W; side by side the batch takes the widest any row needs
    info: Any  # `families.diagnostics.ArrivalInfo`: what each arrival was told against
    total_steps: jax.Array  # [] i32, counted steps at the end of the tick (its arrivals' x axis)


class Family(NamedTuple):
    """A family of algorithms on the slot engine: a record of pure functions the tick calls
    (`aes_rl.families`). `s` is the bound `Setup`; every function is traced into the tick."""

    name: str
    staggered: bool  # stagger the slots' first episodes (cfg.stagger)
    joint_update: bool  # one env step and one joint update per tick (the rates are 1)
    init_learner: Callable  # (s, key, mu0) -> (learner, mu0, per-slot critic copies or None)
    init_es: Callable  # (s, mu0, key) -> ES state (None: no ES)
    start: Callable  # (s, state, key) -> state with the first jobs handed out
    draw: Callable  # (s, state, free, key) -> (state, (x, phase, rl, valid, member, target))
    train_actors: Callable  # (s, state, key) -> state after this tick's actor steps
    acting: Callable  # (s, state) -> the actors as `act` reads them, made once a tick
    #   (ES families: from `state.slots.params`, which on the path of the few acting slots
    #   hold only those, `_step_envs`)
    act: Callable  # (s, state, acting, key, random actions) -> every slot's action
    critic_target: Callable  # (s, state, steps this tick) -> (policy, critic steps allowed)
    #   (with a critic worker: steps a new job may start in; the job then runs to its end)
    critic_worker: Callable  # (s) -> True: the critic is a worker that trains in jobs
    critic_update: Callable  # (s, learner, batch, policy, key) -> learner
    after_critic: Callable  # (s, slots, critic steps taken) -> slots
    end_jobs: Callable  # (s, state, done, k_phase, k_tell, k_jobs)
    #   -> (state, arrived, p, told, arrived member was RL, `diagnostics.ArrivalInfo`)
    mean: Callable  # (s, state) -> the policy the run reports (ES mean; td3: the actor)
    finite_parts: Callable  # (s, state) -> [3] bool: ES state, critic, actors finite
    var: Callable  # (s, state) -> mean ES variance (0 without an ES)


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


@dataclasses.dataclass(frozen=True)
class Setup:
    """What a program is built from: the structure (env, networks, rates), and once bound to a
    row's traced hyper-parameters (`bind`), its strategy and TD3 numbers."""

    cfg: Config  # structure only: traced fields are None (`Config.structure`)
    env: TimeLimit
    actor: ActorSpec
    critic: CriticSpec
    algorithm: Any  # algorithms.Algorithm: its family, ES and options
    family: Family
    h: HParams | None = None  # set by `bind`
    strategy: Any = None  # the family's strategy (None without an ES); set by `bind`
    row_axis: str | None = None  # the vmap axis name when rows run side by side (`row_cond`)

    def bind(self, h: HParams) -> Setup:
        """This setup for one row: its strategy and numbers built from traced values."""
        return dataclasses.replace(self, h=h, strategy=self.algorithm.strategy(self.cfg, h))

    @property
    def hp(self) -> td3.TD3HParams:
        h = self.h
        return td3.TD3HParams(
            h.gamma, h.tau, h.policy_noise, h.noise_clip, h.critic_lr, h.actor_lr, h.expl_noise
        )

    @property
    def env_rate(self) -> Rate:
        return Rate(1, 1) if self.family.joint_update else Rate.of(self.cfg.env_steps_per_tick)

    @property
    def actor_rate(self) -> Rate:
        return Rate.of(self.cfg.actor_steps_per_tick)

    @property
    def critic_rate(self) -> Rate:
        if self.family.joint_update:
            return Rate(1, 1)
        return Rate.of(self.cfg.critic_steps_per_tick)

    @property
    def serial_critic(self) -> bool:
        """The critic trains in a slot, member by member (cem-rl; p-cem-rl by default)."""
        return self.algorithm.serial_critic(self.cfg)


def build(cfg: Config) -> Setup:
    """The setup of `cfg`'s structure (configs that differ only in traced fields share it, and
    so share every compiled program), bound to `cfg`'s own hyper-parameters when it has them
    (a full config); a structure-only config gives it unbound. The compiled tick always
    re-binds to the row's traced values (`Setup.bind(state.hp)`)."""
    s = _build(cfg.structure())
    if all(getattr(cfg, name) is not None for name in cfg.hyper_fields):
        return s.bind(HParams.of(cfg))
    return s


@functools.lru_cache(maxsize=32)
def _build(structure: Config) -> Setup:
    cfg = structure
    env = make_env(cfg.env, cfg.backend, cfg.episode_length, **dict(cfg.env_kwargs))
    obs, act = env.observation_size, env.action_size
    actor = ActorSpec(obs, act, tuple(cfg.actor_hidden), "tanh", env.max_action, cfg.weight_init)
    critic = CriticSpec(obs, act, tuple(cfg.critic_hidden), weight_init=cfg.weight_init)
    from aes_rl import algorithms

    algorithm = algorithms.get(cfg.algo)
    return Setup(cfg, env, actor, critic, algorithm, algorithms.family(algorithm.family))


def tick_cost(cfg: Config) -> float:
    """Modeled time of one tick, in ticks of the cost model: 1 for the slot algorithms; td3's
    one worker takes an env step and then a joint update, one after the other."""
    from aes_rl import algorithms

    return algorithms.get(cfg.algo).tick_cost(cfg)


# ------------------------------------------------------------------ helpers


def tree_where(mask: jax.Array, new, old):
    """Per-slot select over a pytree whose leaves have a leading [W] axis."""

    def sel(a, b):
        m = mask.reshape(mask.shape + (1,) * (a.ndim - mask.ndim))
        return jnp.where(m, a, b)

    return jax.tree.map(sel, new, old)


def row_cond(
    s: Setup,
    pred: jax.Array,
    true_fn: Callable,
    false_fn: Callable,
    operand,
    all_rows=False,
    masked=False,
):
    """`lax.cond(pred, true_fn, false_fn, operand)` on this row's predicate, and the same work
    for every row when rows run side by side (`s.row_axis`, `--rows vmap`).

    Under vmap a per-row predicate turns a cond into a select: every row would compute
    `true_fn` every tick. Here the branch is entered for the whole batch only in ticks where
    some row of it needs it (a sum over the row axis, not a per-row branch); inside it each row
    keeps its own outcome (the inner cond is a per-row select over the operand). Either way
    each row gets what a plain cond on its own predicate gives it: `false_fn(x)` when no row
    needs the branch, its own choice of the two when some row does.

    `masked`: `true_fn` already leaves a row bit-identical where `pred` is False (it writes
    only what its own per-slot masks select, and those are all False then), so the batch runs
    it without the per-row select, which on a GPU reads and writes the whole operand (at 32
    rows of 400-300 nets the slots' actors alone are 80 MB). The caller owes that contract;
    `tests/test_sweep.py` checks it for every masked branch of the tick.

    `all_rows`: the branch is one that in most ticks every row takes (the critic's steps); it
    gets a third branch for those ticks, `true_fn` without the select. It costs a second copy
    of `true_fn` in the program, so it is kept to branches that cannot be masked."""
    if s.row_axis is None:
        return jax.lax.cond(pred, true_fn, false_fn, operand)
    needed = jax.lax.psum(pred.astype(jnp.int32), s.row_axis)
    if masked:
        return jax.lax.cond(needed > 0, true_fn, false_fn, operand)

    def per_row(x):
        return jax.lax.cond(pred, true_fn, false_fn, x)

    if not all_rows:
        return jax.lax.cond(needed > 0, per_row, false_fn, operand)
    which = jnp.where(needed == 0, 0, jnp.where(needed == jax.lax.psum(1, s.row_axis), 2, 1))
    return jax.lax.switch(which, (false_fn, per_row, true_fn), operand)


def _tile(tree, w: int):
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (w,) + x.shape), tree)


def _reset_envs(s: Setup, env: EnvState, mask: jax.Array, key: jax.Array) -> EnvState:
    """Fresh initial states (fresh keys) for the masked slots; skipped if none is masked."""

    def reset(e):
        fresh = jax.vmap(s.env.reset)(jax.random.split(key, mask.shape[0]))
        return tree_where(mask, fresh, e)

    return row_cond(s, jnp.any(mask), reset, lambda e: e, env, masked=True)


def _mean(s: Setup, state: TrainState) -> jax.Array:
    """The policy whose quality we report: the ES mean, or TD3's actor."""
    return s.family.mean(s, state)


def _ring_push(values: jax.Array, seen: jax.Array, new: jax.Array, mask: jax.Array):
    """Push the masked entries of `new` ([W]) in slot order into a ring of size K."""
    k = values.shape[0]
    offset = jnp.cumsum(mask.astype(jnp.int32)) - 1
    count = jnp.sum(mask.astype(jnp.int32))
    keep = mask & (offset >= count - k)  # only the last K of this tick can survive
    idx = jnp.where(keep, (seen + offset) % k, k)
    return values.at[idx].set(new, mode="drop"), seen + count


def _count(mask: jax.Array) -> jax.Array:
    return jnp.sum(mask.astype(jnp.int32))


# ------------------------------------------------------------------ init


def init(cfg: Config, key: jax.Array, hp: HParams | None = None) -> TrainState:
    """The state of one row (no row axis); see `init_batch` for several. `cfg` may be a
    structure-only config when `hp` (the row's traced values) is given."""
    hp = HParams.of(cfg) if hp is None else hp
    s = build(cfg).bind(hp)
    cfg = s.cfg
    w = cfg.num_slots
    k_actor, k_critic, k_es, k_env, k_jobs, key = jax.random.split(key, 6)
    mu0 = s.actor.init_flat(k_actor)
    learner, mu0, critic = s.family.init_learner(s, k_critic, mu0)
    es = s.family.init_es(s, mu0, k_es)
    env = jax.vmap(s.env.reset)(jax.random.split(k_env, w))
    if cfg.stagger and s.family.staggered:  # staggered per-slot step counters (section 6)
        offsets = (jnp.arange(w, dtype=jnp.int32) * cfg.episode_length) // w
        env = env.replace(info=dict(env.info, steps=offsets))
    z = functools.partial(jnp.zeros, (w,))
    slots = Slots(
        phase=jnp.full((w,), WAIT, jnp.int32),
        counter=z(dtype=jnp.int32),
        target=z(dtype=jnp.int32),
        params=jnp.tile(mu0, (w, 1)),
        x=jnp.tile(mu0, (w, 1)),
        opt=jax.vmap(td3.actor_opt_init)(jnp.tile(mu0, (w, 1))),
        critic=critic,
        env=env,
        ep_ret=z(),
        ep_len=z(dtype=jnp.int32),
        ret=z(),
        length=z(dtype=jnp.int32),
        eval_sum=z(),
        eval_count=z(dtype=jnp.int32),
        is_rl=z(dtype=bool),
        random=z(dtype=bool),
        member=z(dtype=jnp.int32),
        drawn_mean=jnp.tile(mu0, (w, 1)),
        drawn_tells=z(dtype=jnp.int32),
        side=_init_side(s, k_env),
    )
    i32 = functools.partial(jnp.asarray, dtype=jnp.int32)
    counters = Counters(
        *(i32(0) for _ in range(5)),
        n_rl=i32(1),
        n_es=i32(1),
        arrivals=i32(0),
        lengths=jnp.zeros((cfg.rl_history,), jnp.int32),
        lengths_seen=i32(0),
        f_mu=jnp.zeros(()),
        nonfinite_arrivals=i32(0),
        nonfinite_transitions=i32(0),
    )
    buffer = replay.init(cfg.buffer_size, s.env.observation_size, s.env.action_size)
    # Only the running family's parts: the generation family's `start` adds its generation.
    job = None
    if s.family.critic_worker(s):
        job = CriticJob(jnp.zeros_like(mu0), jnp.zeros((), jnp.int32), learner.params)
    state = TrainState(key, slots, es, learner, buffer, None, counters, hp, job)
    return s.family.start(s, state, k_jobs)


def _init_side(s: Setup, key: jax.Array) -> SideEnvs | None:
    cfg = s.cfg
    if cfg.mean_eval != "parallel" or cfg.n_mean_evals == 0 or s.family.joint_update:
        return None
    w, e = cfg.num_slots, cfg.n_mean_evals
    env = jax.vmap(jax.vmap(s.env.reset))(jax.random.split(jax.random.fold_in(key, 1), (w, e)))
    return SideEnvs(env, jnp.zeros((w, e)), jnp.zeros((w, e), bool))


def _reset_side(s: Setup, side: SideEnvs | None, mask: jax.Array, key: jax.Array):
    """Fresh side episodes for the masked slots (those starting their mean evaluation)."""
    if side is None:
        return None

    def reset(sd):
        w, e = sd.ret.shape
        keys = jax.random.split(jax.random.fold_in(key, 1), (w, e))  # not the main envs' keys
        fresh = jax.vmap(jax.vmap(s.env.reset))(keys)
        return SideEnvs(
            tree_where(mask, fresh, sd.env),
            jnp.where(mask[:, None], 0.0, sd.ret),
            jnp.where(mask[:, None], True, sd.alive),
        )

    return row_cond(s, jnp.any(mask), reset, lambda sd: sd, side, masked=True)


def _step_side(s: Setup, sl: Slots, allowed: jax.Array, layers) -> tuple[Slots, jax.Array]:
    """One env step of every running side episode of mean-evaluating slots (each slot acts
    with its actor's `layers`, `slot_layers`); returns (slots, all of a slot's side episodes
    have ended)."""
    side = sl.side
    evaluating = (sl.phase == MEAN_EVAL) & allowed

    def step(sd):
        act = jax.vmap(jax.vmap(s.actor.apply_layers, in_axes=(None, 0)))(layers, sd.env.obs)
        nxt = jax.vmap(jax.vmap(s.env.step))(sd.env, act)
        live = evaluating[:, None] & sd.alive
        return SideEnvs(
            tree_where(live, nxt, sd.env),
            jnp.where(live, sd.ret + nxt.reward, sd.ret),
            sd.alive & ~(live & (nxt.done > 0)),
        )

    side = row_cond(s, jnp.any(evaluating), step, lambda sd: sd, side, masked=True)
    ended = (sl.phase == MEAN_EVAL) & ~jnp.any(side.alive, axis=1)
    return sl.replace(side=side), ended


def _jit_init(cfg: Config):
    return _jit_init_structure(cfg.structure())


@functools.lru_cache(maxsize=32)
def _jit_init_structure(structure: Config):
    build(structure)  # build the env outside the trace (Brax creates arrays at construction)
    return jax.jit(jax.vmap(functools.partial(init, structure)))


def stack_hparams(cfgs) -> HParams:
    """The traced values of several configs, stacked on a leading row axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *(HParams.of(c) for c in cfgs))


def init_batch(cfg: Config | list[Config], seeds) -> TrainState:
    """States of several rows stacked on a leading axis (one compiled program runs them all).

    `cfg`: one config for every row, or one config per row (a sweep: they must share their
    structure, `Config.structure`); `seeds`: one per row."""
    cfgs = list(cfg) if isinstance(cfg, list | tuple) else [cfg] * len(seeds)
    if len(cfgs) != len(seeds):
        raise ValueError(f"init_batch: {len(cfgs)} configs for {len(seeds)} seeds")
    if len({c.structure() for c in cfgs}) != 1:
        raise ValueError(
            "init_batch: the rows' configs differ in structure (not only in "
            "traced hyper-parameters); run them as separate programs"
        )
    hparams = stack_hparams(cfgs)
    sharding = row_sharding(len(seeds))
    if sharding.mesh.size == 1:  # a plain jit: its single-device outputs are laid out as the
        # chunk's outputs are, so the chunk compiles once (a 1-device mesh would compile twice)
        keys = jnp.stack([jax.random.key(int(seed)) for seed in seeds])
        state = _jit_init(cfgs[0])(keys, hparams)
    else:  # every device initialises its own rows (on several processes: only those)
        key_data = np.stack([jax.random.key_data(jax.random.key(int(s))) for s in seeds])
        inputs = hosts.global_rows((key_data, jax.device_get(hparams)), sharding)
        state = _sharded_init(cfgs[0].structure(), sharding.mesh)(*inputs)
    # Distinct buffers for every leaf (the chunk donates its input; aliases cannot be donated).
    return jax.tree.map(lambda x: x.copy(), state)


@functools.lru_cache(maxsize=32)
def _sharded_init(structure: Config, mesh: jax.sharding.Mesh):
    build(structure)
    rows = jax.sharding.PartitionSpec("rows")

    def init_rows(key_data, hparams):
        return jax.vmap(functools.partial(init, structure))(
            jax.random.wrap_key_data(key_data), hparams
        )

    return jax.jit(
        jax.shard_map(init_rows, mesh=mesh, in_specs=rows, out_specs=rows, check_vma=False)
    )


def row_sharding(num_rows: int) -> jax.sharding.NamedSharding:
    """The row axis split evenly over the devices: over all of them when they divide the
    rows, else over the largest count that does (1: no split). On several processes
    (`aes_rl.hosts`) every process takes the same number of its own devices."""
    devices = hosts.process_devices(num_rows)
    mesh = jax.sharding.Mesh(np.asarray(devices), ("rows",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("rows"))


# ------------------------------------------------------------------ job assignment


def assign_jobs(
    s: Setup, state: TrainState, free: jax.Array, key: jax.Array, reset_envs: bool = True
) -> TrainState:
    """Free slots draw their next job (or wait); training jobs start with a fresh Adam and a
    snapshot of the critic as it is now."""
    k_draw, k_reset = jax.random.split(key)
    state, (x, phase, rl, valid, member, target) = s.family.draw(s, state, free, k_draw)
    sl = state.slots
    phase = jnp.where(valid, phase, WAIT)
    c = state.counters
    warm = c.total_steps < s.h.warmup_steps
    sl = sl.replace(
        phase=jnp.where(free, phase, sl.phase),
        counter=jnp.where(free, 0, sl.counter),
        target=jnp.where(free, target, sl.target),
        params=jnp.where(free[:, None], x, sl.params),
        is_rl=jnp.where(free, rl, sl.is_rl),
        random=jnp.where(free, warm & (phase == ROLLOUT), sl.random),
        member=jnp.where(free, member, sl.member),
        drawn_mean=jnp.where(free[:, None], _mean(s, state)[None, :], sl.drawn_mean),
        drawn_tells=jnp.where(free, c.arrivals - c.nonfinite_arrivals, sl.drawn_tells),
        ep_ret=jnp.where(free, 0.0, sl.ep_ret),
        ep_len=jnp.where(free, 0, sl.ep_len),
        eval_sum=jnp.where(free & (phase == MEAN_EVAL), 0.0, sl.eval_sum),
        eval_count=jnp.where(free & (phase == MEAN_EVAL), 0, sl.eval_count),
    )
    sl = _start_training(s, state, sl, free & (phase == TRAIN))
    if reset_envs:  # at init the envs are fresh (and carry the staggered counters)
        acting = (phase == ROLLOUT) | (phase == MEAN_EVAL)
        sl = sl.replace(
            env=_reset_envs(s, sl.env, free & acting, k_reset),
            side=_reset_side(s, sl.side, free & (phase == MEAN_EVAL), k_reset),
        )
    return state.replace(slots=sl)


def _start_training(s: Setup, state: TrainState, sl: Slots, starting: jax.Array) -> Slots:
    """Slots entering TRAIN: a fresh Adam and a snapshot of the shared critic (the authors copy
    the critic into the worker when the job starts; later critic updates do not reach it). With
    a critic worker the shared critic is the one its last finished job published."""
    fresh_opt = jax.vmap(td3.actor_opt_init)(sl.params)
    job = state.critic_job  # a critic worker hands over its critic only when a job ends
    shared = state.learner.params if job is None else job.published
    snapshot = _tile(shared, sl.phase.shape[0])
    return sl.replace(
        opt=tree_where(starting, fresh_opt, sl.opt),
        critic=tree_where(starting, snapshot, sl.critic),
    )


def _assign_if_free(s: Setup, state: TrainState, free: jax.Array, key: jax.Array) -> TrainState:
    """`_assign_jobs` only in ticks where a slot is free; the cond carries only the parts it
    changes (slots, counters, generation), never the replay buffer."""

    def assign(parts):
        slots, counters, gen = parts
        st = state.replace(slots=slots, counters=counters, gen=gen)
        st = assign_jobs(s, st, free, key)
        return st.slots, st.counters, st.gen

    parts = (state.slots, state.counters, state.gen)
    slots, counters, gen = row_cond(s, jnp.any(free), assign, lambda p: p, parts, masked=True)
    return state.replace(slots=slots, counters=counters, gen=gen)


# ------------------------------------------------------------------ one tick


def _train_actors(s: Setup, state: TrainState, key: jax.Array) -> TrainState:
    """This tick's actor steps for every training slot (against its critic snapshot), stopping
    at the job's target."""
    cfg, sl = s.cfg, state.slots
    training = sl.phase == TRAIN
    hp, w, rate = s.hp, cfg.num_slots, s.actor_rate
    n_now = rate.at(state.counters.ticks)

    def update(params, opt, critic, obs):
        return td3.actor_step(params, opt, critic, obs, hp, s.actor, s.critic)

    def step(carry, inp):
        params, opt, counter = carry
        k, i = inp
        active = training & (counter < sl.target) & (i < n_now)
        obs = jax.vmap(lambda kk: replay.sample(state.buffer, kk, cfg.batch_size).obs)(
            jax.random.split(k, w)
        )
        new_p, new_o, _ = jax.vmap(update)(params, opt, sl.critic, obs)
        params = jnp.where(active[:, None], new_p, params)
        opt = tree_where(active, new_o, opt)
        return (params, opt, counter + active), _count(active)

    def run(args):
        keys = jax.random.split(key, rate.most)
        (params, opt, counter), n = jax.lax.scan(step, args, (keys, jnp.arange(rate.most)))
        return params, opt, counter, jnp.sum(n)

    params, opt, counter, n = row_cond(
        s,
        jnp.any(training),
        run,
        lambda a: a + (jnp.zeros((), jnp.int32),),
        (sl.params, sl.opt, sl.counter),
        masked=True,  # a slot that is not training keeps its actor, Adam and counter
    )
    c = state.counters
    return state.replace(
        slots=sl.replace(params=params, opt=opt, counter=counter),
        counters=c.replace(actor_steps=c.actor_steps + n),
    )


def _act(s: Setup, state: TrainState, view, key: jax.Array, pick=None) -> jax.Array:
    """Actions of every slot (the family's policy); uniform random ones are drawn for the
    warm-up, exploration noise from the second key. `pick`: the slots `state` and `view` hold
    (`_step_envs`); the random actions are drawn for all W slots and picked, so a slot acts the
    same whichever path steps it."""
    w, a_dim, a_max = s.cfg.num_slots, s.actor.act_dim, s.actor.max_action
    k_rand, k_noise = jax.random.split(key)
    rand = jax.random.uniform(k_rand, (w, a_dim), minval=-a_max, maxval=a_max)
    if pick is not None:
        rand = rand[pick]
    return s.family.act(s, state, view, k_noise, rand)


def slot_layers(s: Setup, state: TrainState):
    """Every slot's actor as its layers ([W] leading axis), made once a tick: the env steps
    only read them (`ActorSpec.layers`)."""
    return jax.vmap(s.actor.layers)(state.slots.params)


def slot_actions(s: Setup, state: TrainState, layers, key: jax.Array, rand: jax.Array):
    """Every slot's own policy; uniform random actions where its rollout is a warm-up one."""
    del key
    sl = state.slots
    act = jax.vmap(s.actor.apply_layers)(layers, sl.env.obs)
    return jnp.where(sl.random[:, None], rand, act)


def _env_step(s: Setup, state: TrainState, sl: Slots, done, key, allowed, view, pick=None):
    """One env step for acting slots whose episode has not ended this tick. `sl`: the slots
    being stepped (all W, or with `pick` only those, as `view`, the family's view of their
    actors made before the tick's env steps: they do not change the actors); `state` is
    read, as the tick began. Returns (slots, ended, transitions, rolling): the transitions
    of rolling-out slots go to the buffer after the tick's env steps (`_step_envs`)."""
    phase_acting = (sl.phase == ROLLOUT) | ((sl.phase == MEAN_EVAL) & (sl.side is None))
    acting = phase_acting & ~done & allowed
    rolling = acting & (sl.phase == ROLLOUT)
    action = _act(s, state.replace(slots=sl), view, key, pick)
    nxt = jax.vmap(s.env.step)(sl.env, action)
    trans = replay.Transition(sl.env.obs, action, nxt.reward, nxt.obs, 1.0 - nxt.info["terminated"])
    trans = tree_where(rolling, trans, jax.tree.map(jnp.zeros_like, trans))  # rows kept only
    sl = sl.replace(
        env=tree_where(acting, nxt, sl.env),
        ep_ret=jnp.where(acting, sl.ep_ret + nxt.reward, sl.ep_ret),
        ep_len=jnp.where(acting, sl.ep_len + 1, sl.ep_len),
    )
    done = done | (acting & (nxt.done > 0))
    if sl.side is not None:
        sl, side_ended = _step_side(s, sl, allowed, view)
        done = done | side_ended
    return sl, done, trans, rolling


def acting_capacity(num_slots: int) -> int:
    """How many acting slots a row's env steps step by themselves in a tick where no more
    act (`_step_envs`): half the slots, rounded down (at least 1). Past AES-RL's warm-up
    about one slot in ten acts."""
    return max(1, num_slots // 2)


def _step_envs(s: Setup, state: TrainState, key: jax.Array):
    """This tick's env steps (`env_steps_per_tick`) for acting slots; an episode that ends
    mid-tick leaves its slot idle for the rest of the tick. Returns (state, episode ended,
    the path this row needed: `TickMetrics.env_path`).

    The env steps cost what the acting slots need (docs/algorithm.md §6): a tick in which no
    slot rolls out or evaluates the mean takes none (the branch is skipped), and one in which
    at most `acting_capacity(W)` slots act steps only those. Side by side, one path is taken
    for the batch: none where no row acts, the few where every row's acting slots fit, else
    all W. The rollouts' transitions enter the buffer after the env steps, in the order of
    the steps and, within a step, of the slots (the branches never write the buffer, which
    a branch that writes it in place would have to copy)."""
    rate = s.env_rate
    n_now = rate.at(state.counters.ticks)
    w, most = s.cfg.num_slots, rate.most

    def steps(sl, pick=None):
        sub, k = sl, w
        if pick is not None:  # only the picked slots: what their env steps read and change
            take = lambda x: x[pick]  # noqa: E731
            sub = sl.replace(
                env=jax.tree.map(take, sl.env),
                ep_ret=take(sl.ep_ret),
                ep_len=take(sl.ep_len),
                phase=take(sl.phase),
                random=take(sl.random),
                params=take(sl.params),
            )
            k = pick.shape[0]
        view = s.family.acting(s, state.replace(slots=sub))

        def body(carry, inp):
            kk, i = inp
            got, dn, trans, rolling = _env_step(s, state, *carry, kk, i < n_now, view, pick)
            return (got, dn), (trans, rolling)

        init = (sub, jnp.zeros((k,), bool))
        if most == 1:  # one env step, on the tick's own key
            (sub, done), ys = body(init, (key, 0))
            trans, rolling = jax.tree.map(lambda x: x[None], ys)
        else:
            keys = jax.random.split(key, most)
            (sub, done), (trans, rolling) = jax.lax.scan(body, init, (keys, jnp.arange(most)))
        if pick is None:
            return sub, done, trans, rolling
        put = lambda a, b: a.at[pick].set(b)  # noqa: E731
        sl = sl.replace(
            env=jax.tree.map(put, sl.env, sub.env),
            ep_ret=put(sl.ep_ret, sub.ep_ret),
            ep_len=put(sl.ep_len, sub.ep_len),
        )
        _, no_done, no_trans, no_rolling = none(sl)
        spread = lambda z, x: z.at[:, pick].set(x)  # noqa: E731  [most, k] -> [most, W]
        trans = jax.tree.map(spread, no_trans, trans)
        return sl, put(no_done, done), trans, spread(no_rolling, rolling)

    def none(sl):
        o, a = s.actor.obs_dim, s.actor.act_dim
        z = lambda *shape: jnp.zeros((most, w) + shape, jnp.float32)  # noqa: E731
        trans = replay.Transition(z(o), z(a), z(), z(o), z())
        return sl, jnp.zeros((w,), bool), trans, jnp.zeros((most, w), bool)

    sl = state.slots
    if s.family.joint_update:  # its one slot acts in every tick
        sl, done, trans, rolling = steps(sl)
        path = jnp.int32(2)
    else:
        acting = (sl.phase == ROLLOUT) | (sl.phase == MEAN_EVAL)
        n_acting = _count(acting)
        cap = acting_capacity(w)
        on = (n_acting > 0) & (n_now > 0)
        few_fit = jnp.asarray(False)
        if cap >= w or sl.side is not None:  # parallel mean evaluation: all or none
            act_fn = steps
        else:
            few_fit = n_acting <= cap

            def few(sl):  # the acting slots (and non-acting ones, which stay as they are)
                return steps(sl, jnp.argsort(jnp.where(acting, 0, 1), stable=True)[:cap])

            def act_fn(sl):
                over = ~few_fit
                if s.row_axis is not None:  # the batch steps all W when any row needs them
                    over = jax.lax.psum(over.astype(jnp.int32), s.row_axis) > 0
                return jax.lax.cond(over, steps, few, sl)

        # masked: the env steps change only acting slots, and give zero transitions and no
        # rolling slot where none rolls out (no slot acts: what `none` gives)
        sl, done, trans, rolling = row_cond(s, on, act_fn, none, sl, masked=True)
        path = jnp.where(on, jnp.where(few_fit, 1, 2), 0).astype(jnp.int32)
    flat = jax.tree.map(lambda x: x.reshape((most * w,) + x.shape[2:]), trans)
    rolling = rolling.reshape(most * w)
    finite = replay.finite_rows(flat)  # a non-finite transition never reaches the critic
    c = state.counters
    c = c.replace(
        total_steps=c.total_steps + _count(rolling),
        nonfinite_transitions=c.nonfinite_transitions + _count(rolling & ~finite),
    )
    buffer = replay.add(state.buffer, flat, rolling & finite)
    return state.replace(slots=sl, buffer=buffer, counters=c), done, path


def _train_critic(s: Setup, state: TrainState, key: jax.Array) -> TrainState:
    """This tick's critic steps, up to what the family allows (`critic_target`): td3's joint
    update; a critic worker's job against the ES mean (`CriticJob`); or the serial critic job
    of a slot, against that job's member (counted in the slot, `after_critic`)."""
    cfg, c = s.cfg, state.counters
    rate = s.critic_rate
    n_now = rate.at(c.ticks)
    policy, left = s.family.critic_target(s, state, n_now)

    def step(carry, inp):
        learner, job, done = carry
        k, i = inp
        now = i < n_now
        if job is None:
            ok = now & (done < left) & (state.buffer.size > 0)
            target = policy
        else:  # a job starts when none runs and the family allows a step now; it runs to its end
            start = now & (job.left == 0) & (done < left)
            job = job.replace(
                policy=jnp.where(start, policy, job.policy),
                left=jnp.where(start, s.h.critic_job_steps, job.left),
            )
            ok = now & (job.left > 0) & (state.buffer.size > 0)
            target = job.policy

        def update(lrn):
            k_batch, k_noise = jax.random.split(k)
            batch = replay.sample(state.buffer, k_batch, cfg.batch_size)
            return s.family.critic_update(s, lrn, batch, target, k_noise)

        learner = row_cond(s, ok, update, lambda lrn: lrn, learner, all_rows=True)
        if job is not None:  # a job that ended hands its critic over
            left_after = job.left - ok
            published = row_cond(
                s,
                ok & (left_after == 0),
                lambda p: p[0],
                lambda p: p[1],
                (learner.params, job.published),
            )
            job = job.replace(left=left_after, published=published)
        return (learner, job, done + ok), None

    keys = jax.random.split(key, rate.most)
    init = (state.learner, state.critic_job, jnp.zeros((), jnp.int32))
    (learner, job, n), _ = jax.lax.scan(step, init, (keys, jnp.arange(rate.most)))
    sl = s.family.after_critic(s, state.slots, n)
    return state.replace(
        learner=learner,
        critic_job=job,
        slots=sl,
        counters=c.replace(critic_steps=c.critic_steps + n),
    )


def worker_critic_target(s: Setup, state: TrainState, n_now: jax.Array, capped: bool):
    """A critic worker against the reported policy (the ES mean): this tick's steps once past
    the warm-up, and with `capped` none while the critic's steps are not behind the counted
    env steps. With jobs (`CriticJob`) this decides only when a job may start; the job then
    takes its `critic_job_steps` (the authors' worker may so run up to a job ahead)."""
    c = state.counters
    past_warmup = (c.total_steps >= s.h.warmup_steps) & (state.buffer.size > 0)
    left = jnp.where(past_warmup, n_now, 0)
    if capped:
        left = jnp.minimum(left, c.total_steps - c.critic_steps)
    return _mean(s, state), left


def shared_critic_learner(s: Setup, key: jax.Array, mu0: jax.Array):
    """The shared twin critic of the ES families, and its per-slot snapshots."""
    learner = td3.critic_init(key, s.critic)
    return learner, mu0, _tile(learner.params, s.cfg.num_slots)


def shared_critic_update(s: Setup, lrn, batch, policy, key):
    """One step of the shared critic against `policy`, then its soft target update."""
    lrn, _ = td3.critic_step(lrn, batch, policy, key, s.hp, s.actor, s.critic)
    return td3.soft_update_critic(lrn, s.h.tau)


def no_slot_critic(s: Setup, slots: Slots, n: jax.Array) -> Slots:
    return slots


def advance_phases(
    s: Setup,
    state: TrainState,
    done: jax.Array,
    key: jax.Array,
    chain: bool,
    eval_after_rollout: bool = False,
    critic_then_train: bool = False,
):
    """End of tick: units that completed move their slot to its next phase, or end its job.
    The family says which phases follow: `chain` (training is followed by the member's
    rollout), `eval_after_rollout` (a rollout by the mean evaluation), `critic_then_train` (a
    serial critic segment by the member's actor training).

    Returns (state, job_end mask, mean returns of the ended jobs)."""
    cfg, sl, c = s.cfg, state.slots, state.counters
    critic_done = (sl.phase == CRITIC) & (sl.counter >= sl.target)
    train_done = (sl.phase == TRAIN) & (sl.counter >= sl.target)
    roll_done = (sl.phase == ROLLOUT) & done
    eval_done = (sl.phase == MEAN_EVAL) & done
    lengths, seen = _ring_push(c.lengths, c.lengths_seen, sl.ep_len, roll_done)
    c = c.replace(lengths=lengths, lengths_seen=seen)
    if sl.side is None:  # sequential: one more episode of the mean has ended
        eval_sum = jnp.where(eval_done, sl.eval_sum + sl.ep_ret, sl.eval_sum)
        eval_count = jnp.where(eval_done, sl.eval_count + 1, sl.eval_count)
    else:  # parallel: all of them, side by side
        eval_sum = jnp.where(eval_done, jnp.sum(sl.side.ret, axis=1), sl.eval_sum)
        eval_count = jnp.where(eval_done, cfg.n_mean_evals, sl.eval_count)
    to_eval = roll_done & eval_after_rollout
    eval_end = eval_done & (eval_count >= cfg.n_mean_evals)
    to_train = critic_done & critic_then_train
    job_end = (
        (critic_done & ~to_train) | (train_done & (not chain)) | (roll_done & ~to_eval) | eval_end
    )
    phase = jnp.where(to_train, TRAIN, sl.phase)
    phase = jnp.where(train_done & chain, ROLLOUT, phase)
    phase = jnp.where(to_eval, MEAN_EVAL, phase)
    kept = roll_done | train_done  # the member as it ends its rollout or its training

    def write(xp):  # [W, d] copies only in ticks where some slot needs one (masked per slot)
        x, params = xp
        x = jnp.where(kept[:, None], params, x)
        return x, jnp.where(to_eval[:, None], _mean(s, state)[None, :], params)

    x, params = row_cond(
        s, jnp.any(kept | to_eval), write, lambda xp: xp, (sl.x, sl.params), masked=True
    )
    target = sl.target
    if critic_then_train:  # the member's actor training is as long as the last generation
        target = jnp.where(to_train, jnp.maximum(state.gen.s_prev, 1), sl.target)
    sl = sl.replace(
        phase=phase,
        counter=jnp.where(to_train, 0, sl.counter),
        target=target,
        x=x,
        params=params,
        ret=jnp.where(roll_done, sl.ep_ret, sl.ret),
        length=jnp.where(roll_done, sl.ep_len, sl.length),
        eval_sum=jnp.where(to_eval, 0.0, eval_sum),
        eval_count=jnp.where(to_eval, 0, eval_count),
        random=jnp.where(to_eval | train_done, False, sl.random),
    )
    if critic_then_train:
        sl = _start_training(s, state, sl, to_train)
    restart = (train_done & chain) | to_eval | (eval_done & ~eval_end)
    sl = sl.replace(
        ep_ret=jnp.where(restart, 0.0, sl.ep_ret),
        ep_len=jnp.where(restart, 0, sl.ep_len),
        env=_reset_envs(s, sl.env, restart, key),
        side=_reset_side(s, sl.side, to_eval, key),
    )
    mean_rets = eval_sum / jnp.maximum(eval_count, 1)
    return state.replace(slots=sl, counters=c), job_end, mean_rets


def tick(s: Setup, state: TrainState, _=None) -> tuple[TrainState, TickMetrics]:
    """Advance every slot by one tick of modeled time (module docstring, steps 1-4). The
    family supplies every algorithm-specific step; the tick itself names no algorithm."""
    s = s.bind(state.hp)
    fam = s.family
    key, k_train, k_act, k_critic, k_phase, k_tell, k_jobs = jax.random.split(state.key, 7)
    busy = _count(state.slots.phase != WAIT)
    state = state.replace(key=key)
    state = fam.train_actors(s, state, k_train)
    state, done, env_path = _step_envs(s, state, k_act)
    state = _train_critic(s, state, k_critic)
    ended = fam.end_jobs(s, state, done, k_phase, k_tell, k_jobs)
    state, arrived, ps, told, arrived_rl, info = ended
    c = state.counters
    state = state.replace(counters=c.replace(ticks=c.ticks + 1, busy=c.busy + busy))
    sl = state.slots
    metrics = TickMetrics(
        arrived, sl.ret, sl.length, ps, arrived_rl, told, c.f_mu, env_path, info, c.total_steps
    )
    return state, metrics


# ------------------------------------------------------------------ compiled chunks


def run_chunk(s: Setup, state: TrainState, num_ticks: int) -> tuple[TrainState, TickMetrics]:
    """`num_ticks` ticks of one run (no seed axis), un-jitted."""
    return jax.lax.scan(functools.partial(tick, s), state, None, length=num_ticks)


ROW_MODES = ("auto", "map", "vmap", "select")


def row_mode(mode: str = "auto") -> str:
    """`auto`: rows one after another on a CPU (`map`), side by side elsewhere (`vmap`)."""
    if mode not in ROW_MODES:
        raise ValueError(f"rows: unknown {mode!r}; allowed: {', '.join(ROW_MODES)}")
    if mode == "auto":
        return "map" if jax.default_backend() == "cpu" else "vmap"
    return mode


def make_train_chunk(cfg: Config, num_seeds: int, num_ticks: int | None = None, rows: str = "auto"):
    """The jitted chunk: `state[rows] -> (state, metrics[rows, ticks])`, donating the state.

    Cached on the structure: configs that differ only in traced hyper-parameters (carried in
    the state) share one program. How the rows of one program run (`rows`):
    - `vmap`: side by side, one batched computation. It fills an accelerator whose single tick
      is latency-bound; every row does the same work in a tick: a branch of the tick (a job
      assignment, a tell, an env reset) runs for the batch when some row of it needs it
      (`row_cond`), each row keeping its own outcome;
    - `select`: side by side under a plain vmap: each branch of the tick becomes a select
      that every row computes every tick (no conditional to wait on; on one H200 faster than
      `vmap` at 32 rows, as fast at 8: benchmarks/RESULTS.md, `sweep_rows-gpu`);
    - `map`: one after another inside the program (`lax.map`), so every row keeps its real
      branches and costs what it does on its own; on several devices each device maps over
      its own rows (`shard_map`);
    - `auto` (default): `map` on a CPU, `vmap` elsewhere.
    One row always runs on its own (no batching).
    """
    n = num_ticks or cfg.ticks_per_chunk
    return _make_train_chunk(cfg.structure(), num_seeds, n, row_mode(rows))


ROW_AXIS = "row"  # the vmap axis of rows run side by side (not the device mesh's "rows")


@functools.lru_cache(maxsize=32)
def _make_train_chunk(cfg: Config, num_seeds: int, num_ticks: int, mode: str = "vmap"):
    s = build(cfg)
    if num_seeds > 1 and mode == "vmap":
        # Side by side: the tick's conds are entered when some row of the batch needs them
        # (`row_cond`, a sum over this axis), never a select that every row pays each tick.
        s = dataclasses.replace(s, row_axis=ROW_AXIS)
    chunk = functools.partial(run_chunk, s, num_ticks=num_ticks)
    if num_seeds == 1:

        def one(state):
            out = chunk(jax.tree.map(lambda x: x[0], state))
            return jax.tree.map(lambda x: x[None], out)

        return jax.jit(one, donate_argnums=0)
    if mode in ("vmap", "select"):
        rows = jax.vmap(chunk, axis_name=ROW_AXIS if mode == "vmap" else None)
    else:

        def rows(state):
            return jax.lax.map(chunk, state)

    sharding = row_sharding(num_seeds)
    if sharding.mesh.size == 1:
        return jax.jit(rows, donate_argnums=0)
    spec = sharding.spec
    # Each device runs its own rows (a vmap's row sums stay on the device): no collective
    # inside, so no replication typing is needed (check_vma off; lax.cond's branches would
    # otherwise disagree on it).
    per_device = jax.shard_map(
        rows, mesh=sharding.mesh, in_specs=spec, out_specs=spec, check_vma=False
    )
    return jax.jit(per_device, donate_argnums=0)


def clear_caches() -> None:
    """Drop every compiled program this module and JAX hold (they are rebuilt on next use,
    from the persistent compilation cache when it is on). Each compiled XLA CPU program keeps a
    few memory mappings, and Linux allows a process about 65k of them
    (`/proc/sys/vm/max_map_count`): a long-lived process that builds many different programs
    calls this before it nears the limit (`bound_compiled_programs` does, when it must), or XLA
    fails to map its next program's code and the process dies."""
    for cached in (
        _build,
        _jit_init_structure,
        _sharded_init,
        _make_train_chunk,
        _make_evaluate,
        _jit_finite_structure,
    ):
        cached.cache_clear()
    jax.clear_caches()


def memory_maps() -> tuple[int, int]:
    """(memory mappings this process holds, the most Linux allows it); (0, 0) where there is
    no /proc (not Linux: no such limit)."""
    try:
        with open("/proc/self/maps", "rb") as f:
            held = sum(1 for _ in f)
        with open("/proc/sys/vm/max_map_count") as f:
            return held, int(f.read())
    except (OSError, ValueError):
        return 0, 0


def bound_compiled_programs(fraction: float = 0.6) -> bool:
    """`clear_caches` (and a garbage collection) when this process holds more than `fraction`
    of the memory mappings Linux allows it; True if it cleared. A process that compiles many
    different programs (a benchmark or an experiment over many configurations, a test session)
    calls this before each new one: a compiled program of the training loop holds thousands of
    mappings (about 1,500 for a probe env's chunk), which JAX keeps while it caches the
    program, and at the limit XLA cannot map the next program's code and the process dies (an
    LLVM "Unable to allocate section memory" abort, or a segfault in the unwinder)."""
    held, allowed = memory_maps()
    if not allowed or held <= fraction * allowed:
        return False
    clear_caches()
    gc.collect()
    return True


def mean_params(cfg: Config, state: TrainState) -> jax.Array:
    """The ES mean (TD3: the actor) of a batched state: [seeds, d]."""
    s = build(cfg)
    return jax.vmap(lambda st: _mean(s.bind(st.hp), st))(state)


def make_evaluate(cfg: Config, num_episodes: int):
    """Jitted `evaluate(flat [seeds, d], key) -> returns [seeds, episodes]`.

    Deterministic episodes from fresh initial states, not counted, not stored.
    """
    return _make_evaluate(cfg.structure(), num_episodes)


@functools.lru_cache(maxsize=32)
def _make_evaluate(cfg: Config, num_episodes: int):
    s = build(cfg)

    def one(flat, key):
        return evaluation.episode_return(s.env, s.actor, flat, key, cfg.episode_length)[0]

    def evaluate(flat, key):
        keys = jax.random.split(key, (flat.shape[0], num_episodes))
        return jax.vmap(jax.vmap(one, in_axes=(None, 0)))(flat, keys)

    return jax.jit(evaluate)


FINITE_PARTS = ("ES state", "critic", "actors")


def finite(tree) -> jax.Array:
    """Every float leaf of `tree` is finite (a scalar bool)."""
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(x.dtype, jnp.floating)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.ones((), bool)


def es_finite_parts(s: Setup, state: TrainState) -> jax.Array:
    """[3] bool: the ES state (and f_mu), the shared critic, the slots' actors are finite."""
    es = (state.es, state.counters.f_mu)
    critic = (state.learner, state.critic_job)
    parts = (finite(es), finite(critic), finite((state.slots.params, state.slots.x)))
    return jnp.stack(parts)


def _finite_parts(s: Setup, state: TrainState) -> jax.Array:
    """[3] bool: every float in the ES state (and f_mu), the critic, the actors is finite."""
    return s.family.finite_parts(s, state)


def _jit_finite(cfg: Config):
    return _jit_finite_structure(cfg.structure())


@functools.lru_cache(maxsize=32)
def _jit_finite_structure(structure: Config):
    s = build(structure)
    return jax.jit(jax.vmap(lambda st: _finite_parts(s.bind(st.hp), st)))


def nonfinite_parts(cfg: Config, state: TrainState) -> list[tuple[int, str]]:
    """(seed index, part) for every part of a batched state holding a NaN or an inf."""
    ok = hosts.fetch(_jit_finite(cfg)(state))  # [seeds, 3]
    return [(i, FINITE_PARTS[j]) for i, j in zip(*(~ok).nonzero())]


def var_mean(cfg: Config, state: TrainState) -> jax.Array:
    """Mean of the ES variance per seed ([seeds]; zeros for td3, which has no ES)."""
    s = build(cfg)
    return jax.vmap(lambda st: s.bind(st.hp).family.var(s.bind(st.hp), st))(state)


def es_mean(s: Setup, state: TrainState) -> jax.Array:
    return s.strategy.mean(state.es)


def es_var(s: Setup, state: TrainState) -> jax.Array:
    return jnp.mean(s.strategy.var(state.es))


def next_jobs(s: Setup, state: TrainState, job_end: jax.Array, key: jax.Array):
    """After a tick's ended jobs are handled: whether each arriving member was an RL member
    (read before its slot draws again), then every free slot draws its next job.
    Returns (state, arrived member was RL)."""
    arrived_rl = state.slots.is_rl
    free = job_end | (state.slots.phase == WAIT)
    return _assign_if_free(s, state, free, key), arrived_rl


def es_family(name: str, **own: Callable | bool) -> Family:
    """The record of a family whose slots run ES members against a shared critic: the slot
    policies, actor steps, shared-critic learner and updates, the ES mean, variance and
    finiteness check; `own` supplies the rest (how jobs are drawn and end, the critic's
    target, ...)."""
    common = dict(
        joint_update=False,
        init_learner=shared_critic_learner,
        train_actors=_train_actors,
        acting=slot_layers,
        act=slot_actions,
        critic_update=shared_critic_update,
        critic_worker=lambda s: True,
        after_critic=no_slot_critic,
        mean=es_mean,
        finite_parts=es_finite_parts,
        var=es_var,
    )
    return Family(name=name, **dict(common, **own))


# What the family modules (`aes_rl.families`) build on.
count = _count
reset_envs = _reset_envs
train_actors = _train_actors
