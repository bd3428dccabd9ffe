"""The training loop: W worker slots advanced tick by tick inside one compiled `lax.scan`.

docs/algorithm.md §6 (the slot engine) and §8 (the clock). Every slot carries a phase (RL actor
training, serial critic training, rollout, mean evaluation, waiting), its own counters, its
member's flat parameters and its env state. One tick is one unit of modeled time; in it every
slot does what the cost model says that time buys:

1. training slots take `actor_steps_per_tick` actor-only TD3 steps (exactly `B_a` or `S_prev`
   in all) against the critic snapshot taken when their training started;
2. rolling-out and mean-evaluating slots take `env_steps_per_tick` env steps (per-slot
   policies, vmapped); rollout transitions enter the replay buffer and are counted;
3. the critic takes `critic_steps_per_tick` steps: as a separate worker against the ES mean
   (asynchronous algorithms, never ahead of counted steps; p-cem-rl's parallel critic, no cap),
   or in the slot that holds the serial critic job, against that job's member (p-cem-rl,
   cem-rl); td3 takes one joint update per env step;
4. slots whose job ended are handled: asynchronous algorithms tell arrivals to the ES in slot
   order (`tell_many`); synchronous ones file results into the generation, whose stages (serial
   critic -> actor training -> evaluation -> tell -> mean evaluation -> ask) end in barriers;
   then every free slot draws its next job in slot order.

Rates may be fractions: a rate p/q gives floor((t+1) p/q) - floor(t p/q) units at tick t.
Asynchrony is data: masks, counters and `jnp.where`; `lax.cond` only on scalar predicates.
The whole `TrainState` carries a leading seed axis so several seeds share one program.
"""

from __future__ import annotations

import dataclasses
import functools
from fractions import Fraction
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from aes_rl import evaluation, replay, td3
from aes_rl.config import HYPER, MEAN_RULES, VAR_RULES, Config
from aes_rl.envs import State as EnvState
from aes_rl.envs import TimeLimit, make_env
from aes_rl.es import strategies
from aes_rl.es.aes import AESParams
from aes_rl.es.cem import CEMParams
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

    @classmethod
    def of(cls, cfg: Config) -> HParams:
        """The traced values of a full config (structure-only configs have none)."""
        ints = {"warmup_steps", "rl_members", "policy_delay"}
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
    """The population of a synchronous generation (one dummy row for asynchronous ones)."""

    xs: jax.Array  # [N, d] f32, members (RL members replaced by their trained actors)
    rets: jax.Array  # [N] f32
    is_rl: jax.Array  # [N] bool, rows 0..rl_members-1 after warm-up
    stage: jax.Array  # [] i32, STAGE_CRITIC/ACTOR/EVAL/MEAN
    handed: jax.Array  # [] i32, jobs of this stage handed out
    finished: jax.Array  # [] i32, jobs of this stage finished
    steps: jax.Array  # [] i32, counted steps of this generation
    s_prev: jax.Array  # [] i32, counted steps of the previous generation


@struct.dataclass
class TrainState:
    key: jax.Array  # typed PRNG key
    slots: Slots
    es: Any  # strategy state (None for td3)
    learner: Any  # td3.CriticState (ES algorithms) or td3.TD3State (td3)
    buffer: replay.ReplayBuffer
    gen: Generation
    counters: Counters
    hp: HParams  # this row's traced hyper-parameters


class TickMetrics(NamedTuple):
    arrived: jax.Array  # [W] bool, an individual's evaluation ended (the ES hears of it)
    ret: jax.Array  # [W] f32
    length: jax.Array  # [W] i32
    p: jax.Array  # [W] f32
    is_rl: jax.Array  # [W] bool, the ARRIVING member was an RL member (not the slot's next job)
    told: jax.Array  # [W] bool, the arrival was told to the ES (finite return and f_mu)
    f_mu: jax.Array  # [] f32


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
    h: HParams | None = None  # set by `bind`
    strategy: Any = None  # AsyncStrategy, GenerationStrategy or None (td3); set by `bind`

    def bind(self, h: HParams) -> Setup:
        """This setup for one row: its strategy and numbers built from traced values."""
        return dataclasses.replace(self, h=h, strategy=_strategy(self.cfg, h))

    @property
    def hp(self) -> td3.TD3HParams:
        h = self.h
        return td3.TD3HParams(
            h.gamma, h.tau, h.policy_noise, h.noise_clip, h.critic_lr, h.actor_lr, h.expl_noise
        )

    @property
    def env_rate(self) -> Rate:
        return Rate(1, 1) if self.cfg.algo == "td3" else Rate.of(self.cfg.env_steps_per_tick)

    @property
    def actor_rate(self) -> Rate:
        return Rate.of(self.cfg.actor_steps_per_tick)

    @property
    def critic_rate(self) -> Rate:
        return Rate(1, 1) if self.cfg.algo == "td3" else Rate.of(self.cfg.critic_steps_per_tick)

    @property
    def serial_critic(self) -> bool:
        """The critic trains in a slot, member by member (cem-rl; p-cem-rl by default)."""
        return self.cfg.algo == "cem-rl" or (
            self.cfg.algo == "p-cem-rl" and not self.cfg.parallel_critic
        )


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
    actor = ActorSpec(env.observation_size, env.action_size, tuple(cfg.actor_hidden))
    critic = CriticSpec(env.observation_size, env.action_size, tuple(cfg.critic_hidden))
    return Setup(cfg, env, actor, critic)


def tick_cost(cfg: Config) -> float:
    """Modeled time of one tick, in ticks of the cost model: 1 for the slot algorithms; td3's
    one worker takes an env step and then a joint update, one after the other."""
    if cfg.algo == "td3":
        return 1.0 / cfg.env_steps_per_tick + 1.0 / cfg.critic_steps_per_tick
    return 1.0


def _strategy(cfg: Config, h: HParams):
    """The algorithm's ES, its numbers traced (`h`); None for td3."""
    if cfg.algo == "aes-rl":
        params = AESParams(
            mean_rule=h.mean_rule,
            var_rule=h.var_rule,
            mean_param=h.mean_param,
            fixed_n=h.fixed_n,
            negative_ratio=h.negative_ratio,
            var_min=h.var_min,
        )
        return strategies.aes_strategy(params, h.var_init)
    if cfg.algo == "acem-rl":
        from aes_rl.es.acem import ACEMParams

        return strategies.acem_strategy(ACEMParams(), h.var_init)
    if cfg.algo == "one-plus-one":
        from aes_rl.es.one_plus_one import OnePlusOneParams

        return strategies.one_plus_one_strategy(OnePlusOneParams(var_min=h.var_min), h.var_init)
    if cfg.is_sync and cfg.es == "cem":
        return strategies.cem_strategy(CEMParams(pop_size=cfg.pop_size), h.var_init)
    if cfg.is_sync:  # evosax builds its std from var_init in Python: structure here
        return strategies.evosax_strategy(
            cfg.es.split(":", 1)[1], cfg.pop_size, sigma_init=float(cfg.var_init) ** 0.5
        )
    return None


# ------------------------------------------------------------------ helpers


def tree_where(mask: jax.Array, new, old):
    """Per-slot select over a pytree whose leaves have a leading [W] axis."""

    def sel(a, b):
        m = mask.reshape(mask.shape + (1,) * (a.ndim - mask.ndim))
        return jnp.where(m, a, b)

    return jax.tree.map(sel, new, old)


def _tile(tree, w: int):
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (w,) + x.shape), tree)


def _reset_envs(s: Setup, env: EnvState, mask: jax.Array, key: jax.Array) -> EnvState:
    """Fresh initial states (fresh keys) for the masked slots; skipped if none is masked."""

    def reset(e):
        fresh = jax.vmap(s.env.reset)(jax.random.split(key, mask.shape[0]))
        return tree_where(mask, fresh, e)

    return jax.lax.cond(jnp.any(mask), reset, lambda e: e, env)


def _mean(s: Setup, state: TrainState) -> jax.Array:
    """The policy whose quality we report: the ES mean, or TD3's actor."""
    if s.strategy is None:
        return state.learner.actor
    return s.strategy.mean(state.es)


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
    d = mu0.shape[0]
    if cfg.algo == "td3":
        learner = td3.td3_init(k_critic, s.actor, s.critic)
        mu0 = learner.actor
        critic = None
    else:
        learner = td3.critic_init(k_critic, s.critic)
        critic = _tile(learner.params, w)
    es = _init_es(s, mu0, k_es)
    env = jax.vmap(s.env.reset)(jax.random.split(k_env, w))
    if cfg.stagger and cfg.is_async:  # staggered per-slot step counters (section 6)
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
    n = cfg.pop_size if cfg.is_sync else 1  # a dummy row: orbax cannot save empty arrays
    gen = Generation(
        jnp.zeros((n, d)), jnp.zeros((n,)), jnp.zeros((n,), bool), *(i32(0) for _ in range(5))
    )
    buffer = replay.init(cfg.buffer_size, s.env.observation_size, s.env.action_size)
    state = TrainState(key, slots, es, learner, buffer, gen, counters, hp)
    if cfg.is_sync:
        state = state.replace(gen=_new_generation(s, state, k_jobs))
        state = _barriers(s, state, k_jobs)  # pass the empty stages of a warm-up generation
    if cfg.algo == "td3":
        slots = slots.replace(phase=jnp.full((w,), ROLLOUT, jnp.int32))
        return state.replace(slots=slots)
    return _assign_jobs(s, state, jnp.ones((w,), bool), k_jobs, reset_envs=False)


def _init_side(s: Setup, key: jax.Array) -> SideEnvs | None:
    cfg = s.cfg
    if cfg.mean_eval != "parallel" or cfg.n_mean_evals == 0 or cfg.algo == "td3":
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

    return jax.lax.cond(jnp.any(mask), reset, lambda sd: sd, side)


def _step_side(s: Setup, sl: Slots, allowed: jax.Array) -> tuple[Slots, jax.Array]:
    """One env step of every running side episode of mean-evaluating slots; returns (slots,
    all of a slot's side episodes have ended)."""
    side = sl.side
    evaluating = (sl.phase == MEAN_EVAL) & allowed

    def step(sd):
        act = jax.vmap(jax.vmap(s.actor.apply, in_axes=(None, 0)))(sl.params, sd.env.obs)
        nxt = jax.vmap(jax.vmap(s.env.step))(sd.env, act)
        live = evaluating[:, None] & sd.alive
        return SideEnvs(
            tree_where(live, nxt, sd.env),
            jnp.where(live, sd.ret + nxt.reward, sd.ret),
            sd.alive & ~(live & (nxt.done > 0)),
        )

    side = jax.lax.cond(jnp.any(evaluating), step, lambda sd: sd, side)
    ended = (sl.phase == MEAN_EVAL) & ~jnp.any(side.alive, axis=1)
    return sl.replace(side=side), ended


def _init_es(s: Setup, mu0: jax.Array, key: jax.Array):
    if s.cfg.is_async:
        return s.strategy.init(mu0)
    if s.cfg.is_sync:
        return s.strategy.init(key, mu0)
    return None


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
    keys = jnp.stack([jax.random.key(int(seed)) for seed in seeds])
    state = _jit_init(cfgs[0])(keys, stack_hparams(cfgs))
    # Distinct buffers for every leaf (the chunk donates its input; aliases cannot be donated).
    return shard_rows(jax.tree.map(lambda x: x.copy(), state))


def row_sharding(num_rows: int) -> jax.sharding.NamedSharding:
    """The row axis split evenly over this host's devices: over all of them when they divide
    the rows, else over the largest count that does (1: no split)."""
    devices = jax.local_devices()
    n = max(k for k in range(1, len(devices) + 1) if num_rows % k == 0)
    mesh = jax.sharding.Mesh(np.asarray(devices[:n]), ("rows",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("rows"))


def shard_rows(state: TrainState) -> TrainState:
    """Every leaf's leading (row) axis split over the devices (`row_sharding`); rows are
    independent, so the compiled chunk runs each device's rows where they live. A no-op on
    one device."""
    if len(jax.local_devices()) == 1:
        return state
    return jax.device_put(state, row_sharding(state.counters.ticks.shape[0]))


# ------------------------------------------------------------------ generations


def _new_generation(s: Setup, state: TrainState, key: jax.Array) -> Generation:
    """Ask the generation strategy for N members; rows 0..rl_members-1 (the +eps half of the
    antithetic pairs) are RL members once the warm-up is over and a generation has run."""
    cfg, gen = s.cfg, state.gen
    xs = s.strategy.ask(key, state.es)
    warm = state.counters.total_steps < s.h.warmup_steps
    rl = (jnp.arange(cfg.pop_size) < s.h.rl_members) & ~warm & (gen.steps > 0)
    n, zero = cfg.pop_size, jnp.zeros((), jnp.int32)
    return Generation(xs, jnp.zeros((n,)), rl, zero, zero, zero, zero, gen.steps)


def _stage_size(s: Setup, gen: Generation) -> jax.Array:
    """Jobs in the generation's current stage: serial critic jobs (one per RL member, p-cem-rl
    without a parallel critic), actor-training jobs (p-cem-rl), evaluations, mean evaluation."""
    cfg = s.cfg
    n_rl = _count(gen.is_rl)
    pcem = cfg.algo == "p-cem-rl"
    sizes = jnp.stack(
        [
            n_rl if (pcem and s.serial_critic) else jnp.zeros((), jnp.int32),
            n_rl if pcem else jnp.zeros((), jnp.int32),
            jnp.asarray(cfg.pop_size, jnp.int32),
            jnp.asarray(int(cfg.n_mean_evals > 0), jnp.int32),
        ]
    )
    return sizes[gen.stage]


def _next_stage(s: Setup, es, gen: Generation, counters: Counters, key: jax.Array):
    """The barrier at the end of a complete stage: evaluation -> tell; mean evaluation -> ask."""

    def after_eval(es, gen):
        es = _generation_tell(s, es, gen)
        return es, gen.replace(stage=jnp.asarray(STAGE_MEAN, jnp.int32))

    def after_mean(es, gen):
        st = TrainState(None, None, es, None, None, gen, counters, s.h)
        return es, _new_generation(s, st, key)

    def advance(es, gen):
        return es, gen.replace(stage=gen.stage + 1)

    es, gen = jax.lax.switch(gen.stage, [advance, advance, after_eval, after_mean], es, gen)
    return es, gen.replace(handed=jnp.zeros_like(gen.handed), finished=jnp.zeros_like(gen.handed))


def _generation_tell(s: Setup, es, gen: Generation):
    """Tell the generation (non-finite returns rank last; none finite: the ES is unchanged)."""
    new = s.strategy.tell(es, gen.xs, _rank_last_if_nonfinite(gen.rets))
    ok = jnp.any(jnp.isfinite(gen.rets))
    return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, es)


def _rank_last_if_nonfinite(rets: jax.Array) -> jax.Array:
    """Non-finite returns replaced by (lowest finite return - 1): they rank last, finitely."""
    finite = jnp.isfinite(rets)
    floor = jnp.min(jnp.where(finite, rets, jnp.inf))
    return jnp.where(finite, rets, jnp.where(jnp.isfinite(floor), floor - 1.0, 0.0))


def _barriers(s: Setup, state: TrainState, key: jax.Array) -> TrainState:
    """Pass every barrier whose stage is complete (empty stages are passed at once)."""
    for i in range(len(STAGES)):
        gen = state.gen
        complete = gen.finished >= _stage_size(s, gen)

        def go(parts, k=jax.random.fold_in(key, i), counters=state.counters):
            return _next_stage(s, parts[0], parts[1], counters, k)

        # The cond carries only the ES and the generation (never the replay buffer).
        es, gen = jax.lax.cond(complete, go, lambda p: p, (state.es, gen))
        state = state.replace(es=es, gen=gen)
    return state


# ------------------------------------------------------------------ job assignment


def _draw_async(s: Setup, state: TrainState, free, key):
    """Sample members for free slots; RL or ES by population control (section 2, step 2)."""
    c = state.counters
    warm = c.total_steps < s.h.warmup_steps
    keys = jax.random.split(key, free.shape[0])

    def one(carry, inp):
        n_rl, n_es = carry
        k, is_free = inp
        k_x, k_u = jax.random.split(k)
        x = s.strategy.sample(k_x, state.es)
        r = n_rl / (n_rl + n_es)
        p_rl = 0.5 - s.h.pop_control_k * (r - s.h.rho)
        rl = ~warm & (jax.random.uniform(k_u) <= p_rl)
        counted = is_free & ~warm
        carry = (n_rl + (counted & rl), n_es + (counted & ~rl))
        return carry, (x, rl)

    (n_rl, n_es), (x, rl) = jax.lax.scan(one, (c.n_rl, c.n_es), (keys, free))
    b_a = jnp.maximum(jnp.sum(c.lengths), 1)
    state = state.replace(counters=c.replace(n_rl=n_rl, n_es=n_es))
    phase = jnp.where(rl, TRAIN, ROLLOUT)
    zeros = jnp.zeros(free.shape, jnp.int32)
    return state, (x, phase, rl, jnp.ones(free.shape, bool), zeros, jnp.full(free.shape, b_a))


def _draw_sync(s: Setup, state: TrainState, free, key):
    """Hand out the current stage's jobs in slot order. Serial jobs (critic, mean evaluation)
    go to slot 0 only; a slot with no job left waits."""
    del key
    cfg, gen = s.cfg, state.gen
    w = free.shape[0]
    serial_stage = (gen.stage == STAGE_CRITIC) | (gen.stage == STAGE_MEAN)
    eligible = free & (~serial_stage | (jnp.arange(w) == 0))
    order = jnp.cumsum(eligible.astype(jnp.int32)) - 1
    idx = gen.handed + order
    valid = eligible & (idx < _stage_size(s, gen))
    member = jnp.minimum(idx, cfg.pop_size - 1)
    gen = gen.replace(handed=gen.handed + _count(valid))
    rl = gen.is_rl[member]
    chain = cfg.algo == "cem-rl"  # cem-rl: an RL member's job starts with its critic segment
    eval_phase = jnp.where(rl & chain, CRITIC, ROLLOUT)
    phase = jnp.stack(
        [jnp.full((w,), CRITIC), jnp.full((w,), TRAIN), eval_phase, jnp.full((w,), MEAN_EVAL)]
    )[gen.stage]
    seg = jnp.maximum(gen.s_prev // jnp.maximum(s.h.rl_members, 1), 1)
    target = jnp.where(phase == CRITIC, seg, jnp.maximum(gen.s_prev, 1))
    x = jnp.where((phase == MEAN_EVAL)[:, None], s.strategy.mean(state.es)[None], gen.xs[member])
    rl = rl & (phase != MEAN_EVAL)
    return state.replace(gen=gen), (x, phase, rl, valid, member, target)


def _assign_jobs(
    s: Setup, state: TrainState, free: jax.Array, key: jax.Array, reset_envs: bool = True
) -> TrainState:
    """Free slots draw their next job (or wait); training jobs start with a fresh Adam and a
    snapshot of the critic as it is now."""
    k_draw, k_reset = jax.random.split(key)
    draw = _draw_async if s.cfg.is_async else _draw_sync
    state, (x, phase, rl, valid, member, target) = draw(s, state, free, k_draw)
    sl = state.slots
    phase = jnp.where(valid, phase, WAIT)
    warm = state.counters.total_steps < s.h.warmup_steps
    sl = sl.replace(
        phase=jnp.where(free, phase, sl.phase),
        counter=jnp.where(free, 0, sl.counter),
        target=jnp.where(free, target, sl.target),
        params=jnp.where(free[:, None], x, sl.params),
        is_rl=jnp.where(free, rl, sl.is_rl),
        random=jnp.where(free, warm & (phase == ROLLOUT), sl.random),
        member=jnp.where(free, member, sl.member),
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
    the critic into the worker when the job starts; later critic updates do not reach it)."""
    fresh_opt = jax.vmap(td3.actor_opt_init)(sl.params)
    snapshot = _tile(state.learner.params, sl.phase.shape[0])
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
        st = _assign_jobs(s, st, free, key)
        return st.slots, st.counters, st.gen

    parts = (state.slots, state.counters, state.gen)
    slots, counters, gen = jax.lax.cond(jnp.any(free), assign, lambda p: p, parts)
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

    params, opt, counter, n = jax.lax.cond(
        jnp.any(training),
        run,
        lambda a: a + (jnp.zeros((), jnp.int32),),
        (sl.params, sl.opt, sl.counter),
    )
    c = state.counters
    return state.replace(
        slots=sl.replace(params=params, opt=opt, counter=counter),
        counters=c.replace(actor_steps=c.actor_steps + n),
    )


def _act(s: Setup, state: TrainState, key: jax.Array) -> jax.Array:
    """Actions of every slot: its policy, uniform random in warm-up, TD3 exploration noise."""
    cfg, sl, a_max = s.cfg, state.slots, s.actor.max_action
    w, a_dim = cfg.num_slots, s.actor.act_dim
    k_rand, k_noise = jax.random.split(key)
    rand = jax.random.uniform(k_rand, (w, a_dim), minval=-a_max, maxval=a_max)
    if cfg.algo == "td3":
        act = jax.vmap(s.actor.apply, in_axes=(None, 0))(state.learner.actor, sl.env.obs)
        noise = s.h.expl_noise * a_max * jax.random.normal(k_noise, act.shape)
        act = jnp.clip(act + noise, -a_max, a_max)
        warm = state.counters.total_steps < s.h.warmup_steps
        return jnp.where(warm, rand, act)
    act = jax.vmap(s.actor.apply)(sl.params, sl.env.obs)
    return jnp.where(sl.random[:, None], rand, act)


def _env_step(s: Setup, state: TrainState, done: jax.Array, key: jax.Array, allowed):
    """One env step for acting slots whose episode has not ended this tick."""
    sl, c = state.slots, state.counters
    phase_acting = (sl.phase == ROLLOUT) | ((sl.phase == MEAN_EVAL) & (sl.side is None))
    acting = phase_acting & ~done & allowed
    rolling = acting & (sl.phase == ROLLOUT)
    action = _act(s, state, key)
    nxt = jax.vmap(s.env.step)(sl.env, action)
    trans = replay.Transition(sl.env.obs, action, nxt.reward, nxt.obs, 1.0 - nxt.info["terminated"])
    finite = replay.finite_rows(trans)  # a non-finite transition never reaches the critic
    buffer = replay.add(state.buffer, trans, rolling & finite)
    c = c.replace(
        total_steps=c.total_steps + _count(rolling),
        nonfinite_transitions=c.nonfinite_transitions + _count(rolling & ~finite),
    )
    sl = sl.replace(
        env=tree_where(acting, nxt, sl.env),
        ep_ret=jnp.where(acting, sl.ep_ret + nxt.reward, sl.ep_ret),
        ep_len=jnp.where(acting, sl.ep_len + 1, sl.ep_len),
    )
    done = done | (acting & (nxt.done > 0))
    if sl.side is not None:
        sl, side_ended = _step_side(s, sl, allowed)
        done = done | side_ended
    return state.replace(slots=sl, buffer=buffer, counters=c), done


def _step_envs(s: Setup, state: TrainState, key: jax.Array):
    """This tick's env steps (`env_steps_per_tick`) for acting slots; an episode that ends
    mid-tick leaves its slot idle for the rest of the tick. Returns (state, episode ended)."""
    rate = s.env_rate
    n_now = rate.at(state.counters.ticks)
    done = jnp.zeros((s.cfg.num_slots,), bool)
    if rate.most == 1:
        return _env_step(s, state, done, key, n_now > 0)

    def body(carry, inp):
        k, i = inp
        st, dn = carry
        return _env_step(s, st, dn, k, i < n_now), None

    keys = jax.random.split(key, rate.most)
    (state, done), _ = jax.lax.scan(body, (state, done), (keys, jnp.arange(rate.most)))
    return state, done


def _train_critic(s: Setup, state: TrainState, key: jax.Array) -> TrainState:
    """This tick's critic steps: td3's joint update; the critic worker against the ES mean
    (never ahead of counted steps, except p-cem-rl's parallel critic); or the serial critic job
    of a slot, against that job's member, counted in the slot."""
    cfg, c, sl = s.cfg, state.counters, state.slots
    rate = s.critic_rate
    n_now = rate.at(c.ticks)
    past_warmup = (c.total_steps >= s.h.warmup_steps) & (state.buffer.size > 0)
    if s.serial_critic:
        in_critic = sl.phase == CRITIC
        w_star = jnp.argmax(in_critic)
        policy = sl.params[w_star]
        left = jnp.where(jnp.any(in_critic), sl.target[w_star] - sl.counter[w_star], 0)
    else:
        policy = _mean(s, state)
        capped = cfg.is_async or cfg.algo == "td3"
        left = jnp.where(past_warmup, n_now, 0)
        if capped:
            left = jnp.minimum(left, c.total_steps - c.critic_steps)

    def step(carry, inp):
        learner, done = carry
        k, i = inp
        ok = (i < n_now) & (done < left) & (state.buffer.size > 0)

        def update(lrn):
            k_batch, k_noise = jax.random.split(k)
            batch = replay.sample(state.buffer, k_batch, cfg.batch_size)
            if cfg.algo == "td3":
                out = td3.td3_step(lrn, batch, k_noise, s.hp, s.actor, s.critic, s.h.policy_delay)
                return out[0]
            lrn, _ = td3.critic_step(lrn, batch, policy, k_noise, s.hp, s.actor, s.critic)
            return td3.soft_update_critic(lrn, s.h.tau)

        learner = jax.lax.cond(ok, update, lambda lrn: lrn, learner)
        return (learner, done + ok), None

    keys = jax.random.split(key, rate.most)
    init = (state.learner, jnp.zeros((), jnp.int32))
    (learner, n), _ = jax.lax.scan(step, init, (keys, jnp.arange(rate.most)))
    if s.serial_critic:
        sl = sl.replace(counter=sl.counter + jnp.where(sl.phase == CRITIC, n, 0))
    return state.replace(
        learner=learner, slots=sl, counters=c.replace(critic_steps=c.critic_steps + n)
    )


def _advance_phases(s: Setup, state: TrainState, done: jax.Array, key: jax.Array):
    """End of tick: units that completed move their slot to its next phase, or end its job.

    Returns (state, job_end mask, mean returns of the ended jobs)."""
    cfg, sl, c = s.cfg, state.slots, state.counters
    chain = cfg.is_async or cfg.algo == "cem-rl"  # training is followed by the rollout
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
    to_eval = roll_done & (cfg.is_async and cfg.n_mean_evals > 0)
    eval_end = eval_done & (eval_count >= cfg.n_mean_evals)
    to_train = critic_done & (cfg.algo == "cem-rl")
    job_end = (
        (critic_done & ~to_train) | (train_done & (not chain)) | (roll_done & ~to_eval) | eval_end
    )
    phase = jnp.where(to_train, TRAIN, sl.phase)
    phase = jnp.where(train_done & chain, ROLLOUT, phase)
    phase = jnp.where(to_eval, MEAN_EVAL, phase)
    mean = _mean(s, state)
    sl = sl.replace(
        phase=phase,
        counter=jnp.where(to_train, 0, sl.counter),
        target=jnp.where(to_train, jnp.maximum(state.gen.s_prev, 1), sl.target),
        x=jnp.where(roll_done[:, None] | train_done[:, None], sl.params, sl.x),
        params=jnp.where(to_eval[:, None], mean[None, :], sl.params),
        ret=jnp.where(roll_done, sl.ep_ret, sl.ret),
        length=jnp.where(roll_done, sl.ep_len, sl.length),
        eval_sum=jnp.where(to_eval, 0.0, eval_sum),
        eval_count=jnp.where(to_eval, 0, eval_count),
        random=jnp.where(to_eval | train_done, False, sl.random),
    )
    if cfg.algo == "cem-rl":
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


def _tell_async(s: Setup, state: TrainState, arrived, mean_rets):
    """Tell arrivals to the ES in slot order. Non-finite guard: an arrival whose return or mean
    fitness is not finite is not told, only counted. Returns (state, ps, told)."""
    sl, c = state.slots, state.counters
    n_arr = _count(arrived)
    told = arrived & jnp.isfinite(sl.ret) & jnp.isfinite(mean_rets)
    n_told = _count(told)
    es, ps = jax.lax.cond(
        n_told > 0,
        lambda e: s.strategy.tell_many(e, sl.x, sl.ret, mean_rets, told),
        lambda e: (e, jnp.zeros(arrived.shape)),
        state.es,
    )
    last = jnp.max(jnp.where(told, jnp.arange(arrived.shape[0]), -1))
    f_mu = jnp.where(n_told > 0, mean_rets[jnp.maximum(last, 0)], c.f_mu)
    c = c.replace(
        f_mu=f_mu,
        arrivals=c.arrivals + n_arr,
        nonfinite_arrivals=c.nonfinite_arrivals + n_arr - n_told,
    )
    return state.replace(es=es, counters=c), ps, told


def _file_sync(s: Setup, state: TrainState, job_end, mean_rets, key):
    """File ended jobs into the generation (trained actors, returns, the mean's fitness), then
    pass the barriers of complete stages. Returns (state, arrived, told)."""
    cfg, sl, c, gen = s.cfg, state.slots, state.counters, state.gen
    ended_roll = job_end & (sl.phase == ROLLOUT)
    ended_train = job_end & (sl.phase == TRAIN)
    ended_mean = job_end & (sl.phase == MEAN_EVAL)
    idx = jnp.where(ended_roll | ended_train, sl.member, cfg.pop_size)
    gen = gen.replace(
        rets=gen.rets.at[jnp.where(ended_roll, sl.member, cfg.pop_size)].set(sl.ret, mode="drop"),
        xs=gen.xs.at[idx].set(sl.x, mode="drop"),
        steps=gen.steps + jnp.sum(jnp.where(ended_roll, sl.length, 0)),
        finished=gen.finished + _count(job_end),
    )
    told = ended_roll & jnp.isfinite(sl.ret)
    f_mu = jnp.where(jnp.any(ended_mean), jnp.sum(jnp.where(ended_mean, mean_rets, 0.0)), c.f_mu)
    f_mu = jnp.where(jnp.isfinite(f_mu), f_mu, c.f_mu)
    c = c.replace(
        arrivals=c.arrivals + _count(ended_roll),
        nonfinite_arrivals=c.nonfinite_arrivals + _count(ended_roll & ~told),
        f_mu=f_mu,
    )
    state = _barriers(s, state.replace(gen=gen, counters=c), key)
    return state, ended_roll, told


def _td3_arrivals(s: Setup, state: TrainState, done: jax.Array, key: jax.Array):
    """TD3: an episode end is an arrival (recorded for metrics); the slot starts a new one."""
    sl, c = state.slots, state.counters
    sl = sl.replace(
        ret=jnp.where(done, sl.ep_ret, sl.ret),
        length=jnp.where(done, sl.ep_len, sl.length),
        ep_ret=jnp.where(done, 0.0, sl.ep_ret),
        ep_len=jnp.where(done, 0, sl.ep_len),
        env=_reset_envs(s, sl.env, done, key),
    )
    c = c.replace(arrivals=c.arrivals + _count(done))
    return state.replace(slots=sl, counters=c)


def tick(s: Setup, state: TrainState, _=None) -> tuple[TrainState, TickMetrics]:
    """Advance every slot by one tick of modeled time (module docstring, steps 1-4)."""
    s = s.bind(state.hp)
    key, k_train, k_act, k_critic, k_phase, k_tell, k_jobs = jax.random.split(state.key, 7)
    busy = _count(state.slots.phase != WAIT)
    state = state.replace(key=key)
    if s.cfg.algo != "td3":
        state = _train_actors(s, state, k_train)
    state, done = _step_envs(s, state, k_act)
    state = _train_critic(s, state, k_critic)
    if s.cfg.algo == "td3":
        state = _td3_arrivals(s, state, done, k_phase)
        arrived, ps, told = done, jnp.zeros(done.shape), jnp.zeros_like(done)
        arrived_rl = jnp.ones_like(done)  # every TD3 episode is its actor's
    else:
        state, job_end, mean_rets = _advance_phases(s, state, done, k_phase)
        ps = jnp.zeros(done.shape)
        if s.cfg.is_async:
            state, ps, told = _tell_async(s, state, job_end, mean_rets)
            arrived = job_end
        else:
            state, arrived, told = _file_sync(s, state, job_end, mean_rets, k_tell)
        arrived_rl = state.slots.is_rl  # read before the slot draws its next job
        free = job_end | (state.slots.phase == WAIT)
        state = _assign_if_free(s, state, free, k_jobs)
    c = state.counters
    state = state.replace(counters=c.replace(ticks=c.ticks + 1, busy=c.busy + busy))
    sl = state.slots
    metrics = TickMetrics(arrived, sl.ret, sl.length, ps, arrived_rl, told, state.counters.f_mu)
    return state, metrics


# ------------------------------------------------------------------ compiled chunks


def run_chunk(s: Setup, state: TrainState, num_ticks: int) -> tuple[TrainState, TickMetrics]:
    """`num_ticks` ticks of one run (no seed axis), un-jitted."""
    return jax.lax.scan(functools.partial(tick, s), state, None, length=num_ticks)


ROW_MODES = ("auto", "map", "vmap")


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
      is latency-bound, but every scalar `lax.cond` becomes a select, so each row pays for the
      branches any row takes;
    - `map`: one after another inside the program (`lax.map`), so every row keeps its real
      branches and costs what it does on its own; on several devices each device maps over
      its own rows (`shard_map`);
    - `auto` (default): `map` on a CPU, `vmap` elsewhere.
    One row always runs on its own (no batching).
    """
    n = num_ticks or cfg.ticks_per_chunk
    return _make_train_chunk(cfg.structure(), num_seeds, n, row_mode(rows))


@functools.lru_cache(maxsize=32)
def _make_train_chunk(cfg: Config, num_seeds: int, num_ticks: int, mode: str = "vmap"):
    s = build(cfg)
    chunk = functools.partial(run_chunk, s, num_ticks=num_ticks)
    if num_seeds == 1:

        def one(state):
            out = chunk(jax.tree.map(lambda x: x[0], state))
            return jax.tree.map(lambda x: x[None], out)

        return jax.jit(one, donate_argnums=0)
    if mode == "vmap":
        return jax.jit(jax.vmap(chunk), donate_argnums=0)

    def one_by_one(state):
        return jax.lax.map(chunk, state)

    sharding = row_sharding(num_seeds)
    if sharding.mesh.size == 1:
        return jax.jit(one_by_one, donate_argnums=0)
    spec = sharding.spec
    # Rows are independent: no collective inside, so the per-device map needs no replication
    # typing (check_vma off; lax.cond's branches would otherwise disagree on it).
    per_device = jax.shard_map(
        one_by_one, mesh=sharding.mesh, in_specs=spec, out_specs=spec, check_vma=False
    )
    return jax.jit(per_device, donate_argnums=0)


def clear_caches() -> None:
    """Drop every compiled program this module and JAX hold (they are rebuilt on next use,
    from the persistent compilation cache when it is on). Each compiled XLA CPU program keeps a
    few memory mappings, and Linux allows a process about 65k of them
    (`/proc/sys/vm/max_map_count`): a long-lived process that builds thousands of different
    programs (a test session, a script looping over many structures) calls this now and then,
    or XLA fails to map its next program's code and the process dies."""
    for cached in (
        _build,
        _jit_init_structure,
        _make_train_chunk,
        _make_evaluate,
        _jit_finite_structure,
    ):
        cached.cache_clear()
    jax.clear_caches()


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


def _finite_parts(s: Setup, state: TrainState) -> jax.Array:
    """[3] bool: every float in the ES state (and f_mu), the critic, the actors is finite."""

    def finite(tree) -> jax.Array:
        leaves = [
            jnp.all(jnp.isfinite(x))
            for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.floating)
        ]
        return jnp.all(jnp.stack(leaves)) if leaves else jnp.ones((), bool)

    if s.strategy is None:  # td3: the learner holds the critic and the actor
        lrn = state.learner
        parts = (jnp.ones((), bool), finite(lrn.critic), finite((lrn.actor, lrn.actor_target)))
    else:
        es = (state.es, state.counters.f_mu)
        parts = (finite(es), finite(state.learner), finite((state.slots.params, state.slots.x)))
    return jnp.stack(parts)


def _jit_finite(cfg: Config):
    return _jit_finite_structure(cfg.structure())


@functools.lru_cache(maxsize=32)
def _jit_finite_structure(structure: Config):
    s = build(structure)
    return jax.jit(jax.vmap(lambda st: _finite_parts(s.bind(st.hp), st)))


def nonfinite_parts(cfg: Config, state: TrainState) -> list[tuple[int, str]]:
    """(seed index, part) for every part of a batched state holding a NaN or an inf."""
    ok = jax.device_get(_jit_finite(cfg)(state))  # [seeds, 3]
    return [(i, FINITE_PARTS[j]) for i, j in zip(*(~ok).nonzero())]


def var_mean(cfg: Config, state: TrainState) -> jax.Array:
    """Mean of the ES variance per seed ([seeds]; zeros for td3, which has no ES)."""
    s = build(cfg)
    if cfg.algo == "td3":
        return jnp.zeros(state.counters.ticks.shape)
    return jax.vmap(lambda st: jnp.mean(s.bind(st.hp).strategy.var(st.es)))(state)
