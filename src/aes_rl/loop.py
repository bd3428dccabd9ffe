"""The training loop: W worker slots advanced tick by tick inside one compiled `lax.scan`.

ALGORITHM.md sections 2 and 6. Every slot carries a phase (RL actor training, rollout, mean
evaluation, waiting at a generation barrier), its own counters, its member's flat parameters and
its env state. One tick advances every slot by one unit of its phase, vectorised over slots:

1. training slots take `actor_steps_per_tick` actor-only TD3 steps (exactly `B_a` in all);
2. rolling-out and mean-evaluating slots take one env step (per-slot policies, vmapped);
   rollout transitions enter the replay buffer and are counted;
3. the shared critic takes `critic_steps_per_tick` steps against the ES mean as target policy,
   never more critic steps than counted env steps (TD3: joint steps with policy delay);
4. slots whose job ended ARRIVE: asynchronous algorithms tell them to the ES in slot order
   (`tell_many`), synchronous ones file them into the generation and tell the whole generation
   at the barrier; then every free slot draws its next job in slot order.

Asynchrony is data: masks, counters and `jnp.where`. `lax.cond` is used only on scalar
predicates (e.g. "does any slot need an env reset this tick"). The whole `TrainState` carries a
leading seed axis so several seeds share one compiled program.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from aes_rl import evaluation, replay, td3
from aes_rl.config import Config
from aes_rl.envs import State as EnvState
from aes_rl.envs import TimeLimit, make_env
from aes_rl.es import strategies
from aes_rl.es.aes import AESParams
from aes_rl.es.cem import CEMParams
from aes_rl.networks import ActorSpec, CriticSpec

TRAIN, ROLLOUT, MEAN_EVAL, WAIT = 0, 1, 2, 3
PHASES = ("train", "rollout", "mean-eval", "wait")


@struct.dataclass
class Slots:
    phase: jax.Array  # [W] i32, one of TRAIN/ROLLOUT/MEAN_EVAL/WAIT
    counter: jax.Array  # [W] i32, actor steps done in the current RL job
    target: jax.Array  # [W] i32, B_a of the current RL job
    params: jax.Array  # [W, d] f32, the policy being trained or run (mean snapshot in eval)
    x: jax.Array  # [W, d] f32, the member to tell (set when its rollout ends)
    opt: Any  # Adam state over [W, d], fresh for every RL job
    env: EnvState  # [W] env states
    ep_ret: jax.Array  # [W] f32, return of the running episode
    ep_len: jax.Array  # [W] i32, length of the running episode
    ret: jax.Array  # [W] f32, the member's return
    length: jax.Array  # [W] i32, the member's episode length
    eval_sum: jax.Array  # [W] f32, sum of mean-evaluation returns so far
    eval_count: jax.Array  # [W] i32, mean-evaluation episodes finished
    is_rl: jax.Array  # [W] bool, current job is an RL job
    random: jax.Array  # [W] bool, current rollout uses uniform random actions (warm-up)
    member: jax.Array  # [W] i32, index in the generation (synchronous algorithms)


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
    """The population of a synchronous generation (empty arrays for asynchronous algorithms)."""

    xs: jax.Array  # [N, d] f32
    rets: jax.Array  # [N] f32
    done: jax.Array  # [N] bool
    is_rl: jax.Array  # [N] bool
    next: jax.Array  # [] i32, next member to hand out
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


class TickMetrics(NamedTuple):
    arrived: jax.Array  # [W] bool
    ret: jax.Array  # [W] f32
    length: jax.Array  # [W] i32
    p: jax.Array  # [W] f32
    is_rl: jax.Array  # [W] bool, the ARRIVING member was an RL member (not the slot's next job)
    told: jax.Array  # [W] bool, the arrival was told to the ES (finite return and f_mu)
    f_mu: jax.Array  # [] f32


@dataclasses.dataclass(frozen=True)
class Setup:
    """Static pieces built once from a Config: env, networks, strategy."""

    cfg: Config
    env: TimeLimit
    actor: ActorSpec
    critic: CriticSpec
    strategy: Any  # AsyncStrategy, GenerationStrategy or None

    @property
    def hp(self) -> td3.TD3HParams:
        c = self.cfg
        return td3.TD3HParams(
            c.gamma, c.tau, c.policy_noise, c.noise_clip, c.critic_lr, c.actor_lr, c.expl_noise
        )


@functools.lru_cache(maxsize=32)
def build(cfg: Config) -> Setup:
    env = make_env(cfg.env, cfg.backend, cfg.episode_length, **dict(cfg.env_kwargs))
    actor = ActorSpec(env.observation_size, env.action_size, tuple(cfg.actor_hidden))
    critic = CriticSpec(env.observation_size, env.action_size, tuple(cfg.critic_hidden))
    return Setup(cfg, env, actor, critic, _strategy(cfg))


def _strategy(cfg: Config):
    if cfg.algo == "aes-rl":
        params = AESParams(
            mean_rule=cfg.mean_rule,
            var_rule=cfg.var_rule,
            mean_param=cfg.mean_param,
            fixed_n=cfg.fixed_n,
            negative_ratio=cfg.negative_ratio,
            var_min=cfg.var_min,
        )
        return strategies.aes_strategy(params, cfg.var_init)
    if cfg.algo == "acem-rl":
        from aes_rl.es.acem import ACEMParams

        return strategies.acem_strategy(ACEMParams(), cfg.var_init)
    if cfg.algo == "one-plus-one":
        from aes_rl.es.one_plus_one import OnePlusOneParams

        return strategies.one_plus_one_strategy(OnePlusOneParams(var_min=cfg.var_min), cfg.var_init)
    if cfg.is_sync and cfg.es == "cem":
        return strategies.cem_strategy(CEMParams(pop_size=cfg.pop_size), cfg.var_init)
    if cfg.is_sync:
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


# ------------------------------------------------------------------ init


def init(cfg: Config, key: jax.Array) -> TrainState:
    """The state of one run (no seed axis); see `init_batch` for several seeds."""
    s = build(cfg)
    w = cfg.num_slots
    k_actor, k_critic, k_es, k_env, k_jobs, key = jax.random.split(key, 6)
    mu0 = s.actor.init_flat(k_actor)
    d = mu0.shape[0]
    if cfg.algo == "td3":
        learner = td3.td3_init(k_critic, s.actor, s.critic)
        mu0 = learner.actor
    else:
        learner = td3.critic_init(k_critic, s.critic)
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
    )

    def i32(v=0):
        return jnp.asarray(v, jnp.int32)

    counters = Counters(
        i32(),
        i32(),
        i32(),
        i32(),
        i32(),
        i32(1),
        i32(1),
        i32(),
        jnp.zeros((cfg.rl_history,), jnp.int32),
        i32(),
        jnp.zeros(()),
        i32(),
        i32(),
    )
    n = cfg.pop_size if cfg.is_sync else 1  # a dummy row: orbax cannot save empty arrays
    gen = Generation(
        jnp.zeros((n, d)),
        jnp.zeros((n,)),
        jnp.zeros((n,), bool),
        jnp.zeros((n,), bool),
        i32(),
        i32(),
        i32(),
    )
    buffer = replay.init(cfg.buffer_size, s.env.observation_size, s.env.action_size)
    state = TrainState(key, slots, es, learner, buffer, gen, counters)
    if cfg.is_sync:
        state = state.replace(gen=_new_generation(s, state, k_jobs))
    if cfg.algo == "td3":
        slots = slots.replace(phase=jnp.full((w,), ROLLOUT, jnp.int32))
        return state.replace(slots=slots)
    return _assign_jobs(s, state, jnp.ones((w,), bool), k_jobs, reset_envs=False)


def _init_es(s: Setup, mu0: jax.Array, key: jax.Array):
    if s.cfg.is_async:
        return s.strategy.init(mu0)
    if s.cfg.is_sync:
        return s.strategy.init(key, mu0)
    return None


@functools.lru_cache(maxsize=32)
def _jit_init(cfg: Config):
    build(cfg)  # build the env outside the trace (Brax creates arrays at construction)
    return jax.jit(jax.vmap(functools.partial(init, cfg)))


def init_batch(cfg: Config, seeds) -> TrainState:
    """States of several seeds stacked on a leading axis (one compiled program runs them all)."""
    keys = jnp.stack([jax.random.key(int(seed)) for seed in seeds])
    state = _jit_init(cfg)(keys)
    # Distinct buffers for every leaf (the chunk donates its input; aliases cannot be donated).
    return jax.tree.map(lambda x: x.copy(), state)


# ------------------------------------------------------------------ job assignment


def _new_generation(s: Setup, state: TrainState, key: jax.Array) -> Generation:
    """Ask the generation strategy for N members; the first `rl_members` are RL members."""
    cfg, gen = s.cfg, state.gen
    xs = s.strategy.ask(key, state.es)
    warm = state.counters.total_steps < cfg.warmup_steps
    rl = (jnp.arange(cfg.pop_size) < cfg.rl_members) & ~warm & (gen.steps > 0)
    n = cfg.pop_size
    return Generation(
        xs,
        jnp.zeros((n,)),
        jnp.zeros((n,), bool),
        rl,
        jnp.zeros((), jnp.int32),
        jnp.zeros((), jnp.int32),
        gen.steps,
    )


def _draw_async(s: Setup, state: TrainState, free, key):
    """Sample members for free slots; RL or ES by population control (section 2, step 2)."""
    cfg, c = s.cfg, state.counters
    warm = c.total_steps < cfg.warmup_steps
    keys = jax.random.split(key, free.shape[0])

    def one(carry, inp):
        n_rl, n_es = carry
        k, is_free = inp
        k_x, k_u = jax.random.split(k)
        x = s.strategy.sample(k_x, state.es)
        r = n_rl / (n_rl + n_es)
        p_rl = 0.5 - cfg.pop_control_k * (r - cfg.rho)
        rl = ~warm & (jax.random.uniform(k_u) <= p_rl)
        counted = is_free & ~warm
        carry = (n_rl + (counted & rl), n_es + (counted & ~rl))
        return carry, (x, rl, jnp.ones((), bool), jnp.zeros((), jnp.int32))

    (n_rl, n_es), out = jax.lax.scan(one, (c.n_rl, c.n_es), (keys, free))
    b_a = jnp.maximum(jnp.sum(c.lengths), 1)
    counters = c.replace(n_rl=n_rl, n_es=n_es)
    return state.replace(counters=counters), out + (jnp.full(free.shape, b_a),)


def _draw_sync(s: Setup, state: TrainState, free, key):
    """Hand out the next members of the generation in slot order; none left: wait."""
    gen = state.gen
    order = jnp.cumsum(free.astype(jnp.int32)) - 1
    idx = gen.next + order
    valid = free & (idx < s.cfg.pop_size)
    safe = jnp.minimum(idx, s.cfg.pop_size - 1)
    gen = gen.replace(next=gen.next + jnp.sum(valid.astype(jnp.int32)))
    target = jnp.full(free.shape, jnp.maximum(gen.s_prev, 1))
    return state.replace(gen=gen), (gen.xs[safe], gen.is_rl[safe] & valid, valid, safe, target)


def _assign_jobs(
    s: Setup, state: TrainState, free: jax.Array, key: jax.Array, reset_envs: bool = True
) -> TrainState:
    """Free slots draw their next job: RL training, ES rollout, or wait (no member left)."""
    k_draw, k_reset = jax.random.split(key)
    draw = _draw_async if s.cfg.is_async else _draw_sync
    state, (x, rl, valid, member, target) = draw(s, state, free, k_draw)
    sl = state.slots
    phase = jnp.where(valid, jnp.where(rl, TRAIN, ROLLOUT), WAIT)
    warm = state.counters.total_steps < s.cfg.warmup_steps
    fresh_opt = jax.vmap(td3.actor_opt_init)(x)
    sl = sl.replace(
        phase=jnp.where(free, phase, sl.phase),
        counter=jnp.where(free, 0, sl.counter),
        target=jnp.where(free, target, sl.target),
        params=jnp.where(free[:, None], x, sl.params),
        opt=tree_where(free & rl, fresh_opt, sl.opt),
        is_rl=jnp.where(free, rl, sl.is_rl),
        random=jnp.where(free, warm & ~rl, sl.random),
        member=jnp.where(free, member, sl.member),
        ep_ret=jnp.where(free, 0.0, sl.ep_ret),
        ep_len=jnp.where(free, 0, sl.ep_len),
    )
    if reset_envs:  # at init the envs are fresh (and carry the staggered counters)
        sl = sl.replace(env=_reset_envs(s, sl.env, free & valid & ~rl, k_reset))
    return state.replace(slots=sl)


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
    """`actor_steps_per_tick` actor-only steps for every training slot, stopping at B_a."""
    cfg, sl = s.cfg, state.slots
    training = sl.phase == TRAIN
    hp, w = s.hp, cfg.num_slots

    def update(params, opt, obs):
        return td3.actor_step(params, opt, state.learner.params, obs, hp, s.actor, s.critic)

    def step(carry, k):
        params, opt, counter = carry
        active = training & (counter < sl.target)
        obs = jax.vmap(lambda kk: replay.sample(state.buffer, kk, cfg.batch_size).obs)(
            jax.random.split(k, w)
        )
        new_p, new_o, _ = jax.vmap(update)(params, opt, obs)
        params = jnp.where(active[:, None], new_p, params)
        opt = tree_where(active, new_o, opt)
        return (params, opt, counter + active), jnp.sum(active.astype(jnp.int32))

    def run(args):
        keys = jax.random.split(key, cfg.actor_steps_per_tick)
        (params, opt, counter), n = jax.lax.scan(step, args, keys)
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
        noise = cfg.expl_noise * a_max * jax.random.normal(k_noise, act.shape)
        act = jnp.clip(act + noise, -a_max, a_max)
        warm = state.counters.total_steps < cfg.warmup_steps
        return jnp.where(warm, rand, act)
    act = jax.vmap(s.actor.apply)(sl.params, sl.env.obs)
    return jnp.where(sl.random[:, None], rand, act)


def _step_envs(s: Setup, state: TrainState, key: jax.Array):
    """One env step for acting slots; rollout transitions go to the buffer and are counted."""
    sl, c = state.slots, state.counters
    acting = (sl.phase == ROLLOUT) | (sl.phase == MEAN_EVAL)
    rolling = sl.phase == ROLLOUT
    action = _act(s, state, key)
    nxt = jax.vmap(s.env.step)(sl.env, action)
    trans = replay.Transition(sl.env.obs, action, nxt.reward, nxt.obs, 1.0 - nxt.info["terminated"])
    finite = replay.finite_rows(trans)  # a non-finite transition never reaches the critic
    buffer = replay.add(state.buffer, trans, rolling & finite)
    n = jnp.sum(rolling.astype(jnp.int32))
    c = c.replace(
        nonfinite_transitions=c.nonfinite_transitions + jnp.sum(rolling & ~finite, dtype=jnp.int32)
    )
    sl = sl.replace(
        env=tree_where(acting, nxt, sl.env),
        ep_ret=jnp.where(acting, sl.ep_ret + nxt.reward, sl.ep_ret),
        ep_len=jnp.where(acting, sl.ep_len + 1, sl.ep_len),
    )
    done = acting & (nxt.done > 0)
    state = state.replace(
        slots=sl, buffer=buffer, counters=c.replace(total_steps=c.total_steps + n)
    )
    return state, done


def _train_critic(s: Setup, state: TrainState, key: jax.Array) -> TrainState:
    """Up to `critic_steps_per_tick` learner steps after warm-up, never ahead of the data."""
    cfg = s.cfg
    target_policy = _mean(s, state)

    def step(carry, k):
        learner, done = carry
        c = state.counters
        ok = (c.total_steps >= cfg.warmup_steps) & (c.critic_steps + done < c.total_steps)
        ok = ok & (state.buffer.size > 0)

        def update(lrn):
            k_batch, k_noise = jax.random.split(k)
            batch = replay.sample(state.buffer, k_batch, cfg.batch_size)
            if cfg.algo == "td3":
                return td3.td3_step(lrn, batch, k_noise, s.hp, s.actor, s.critic, cfg.policy_delay)[
                    0
                ]
            lrn, _ = td3.critic_step(lrn, batch, target_policy, k_noise, s.hp, s.actor, s.critic)
            return td3.soft_update_critic(lrn, cfg.tau)

        learner = jax.lax.cond(ok, update, lambda lrn: lrn, learner)
        return (learner, done + ok), None

    keys = jax.random.split(key, cfg.critic_steps_per_tick)
    (learner, n), _ = jax.lax.scan(step, (state.learner, jnp.zeros((), jnp.int32)), keys)
    c = state.counters
    return state.replace(learner=learner, counters=c.replace(critic_steps=c.critic_steps + n))


def _advance_phases(s: Setup, state: TrainState, done: jax.Array, key: jax.Array):
    """End of tick: finished jobs change phase; returns (state, arrived mask, mean returns)."""
    cfg, sl, c = s.cfg, state.slots, state.counters
    train_done = (sl.phase == TRAIN) & (sl.counter >= sl.target)
    roll_done = (sl.phase == ROLLOUT) & done
    eval_done = (sl.phase == MEAN_EVAL) & done
    lengths, seen = _ring_push(c.lengths, c.lengths_seen, sl.ep_len, roll_done)
    c = c.replace(lengths=lengths, lengths_seen=seen)
    eval_sum = jnp.where(eval_done, sl.eval_sum + sl.ep_ret, jnp.where(roll_done, 0.0, sl.eval_sum))
    eval_count = jnp.where(eval_done, sl.eval_count + 1, jnp.where(roll_done, 0, sl.eval_count))
    use_eval = cfg.is_async and cfg.n_mean_evals > 0
    if use_eval:
        arrived = eval_done & (eval_count >= cfg.n_mean_evals)
        to_eval = roll_done
    else:
        arrived = roll_done
        to_eval = jnp.zeros_like(roll_done)
    mean = _mean(s, state)
    phase = jnp.where(train_done, ROLLOUT, sl.phase)
    phase = jnp.where(to_eval, MEAN_EVAL, phase)
    sl = sl.replace(
        phase=phase,
        x=jnp.where(roll_done[:, None], sl.params, sl.x),
        params=jnp.where(to_eval[:, None], mean[None, :], sl.params),
        ret=jnp.where(roll_done, sl.ep_ret, sl.ret),
        length=jnp.where(roll_done, sl.ep_len, sl.length),
        eval_sum=eval_sum,
        eval_count=eval_count,
        random=jnp.where(to_eval | train_done, False, sl.random),
    )
    restart = train_done | to_eval | (eval_done & ~arrived)
    sl = sl.replace(
        ep_ret=jnp.where(restart, 0.0, sl.ep_ret),
        ep_len=jnp.where(restart, 0, sl.ep_len),
        env=_reset_envs(s, sl.env, restart, key),
    )
    mean_rets = (
        eval_sum / jnp.maximum(eval_count, 1) if use_eval else jnp.full_like(eval_sum, c.f_mu)
    )
    return state.replace(slots=sl, counters=c), arrived, mean_rets


def _tell(s: Setup, state: TrainState, arrived, mean_rets, key):
    """Tell arrivals to the ES (async: in slot order; sync: at the generation barrier).

    Non-finite guard: an arrival whose return or mean fitness is not finite is not told (async)
    or ranks below every finite member of its generation (sync); either way it is counted.
    Returns (state, ps, told)."""
    cfg, sl, c = s.cfg, state.slots, state.counters
    n_arr = jnp.sum(arrived.astype(jnp.int32))
    told = arrived & jnp.isfinite(sl.ret) & jnp.isfinite(mean_rets)
    n_told = jnp.sum(told.astype(jnp.int32))
    c = c.replace(nonfinite_arrivals=c.nonfinite_arrivals + n_arr - n_told)
    if cfg.is_async:
        es, ps = jax.lax.cond(
            n_told > 0,
            lambda e: s.strategy.tell_many(e, sl.x, sl.ret, mean_rets, told),
            lambda e: (e, jnp.zeros(arrived.shape)),
            state.es,
        )
        last = jnp.max(jnp.where(told, jnp.arange(arrived.shape[0]), -1))
        f_mu = jnp.where(n_told > 0, mean_rets[jnp.maximum(last, 0)], c.f_mu)
        c = c.replace(f_mu=f_mu, arrivals=c.arrivals + n_arr)
        return state.replace(es=es, counters=c), ps, told
    gen = state.gen
    idx = jnp.where(arrived, sl.member, cfg.pop_size)
    gen = gen.replace(
        rets=gen.rets.at[idx].set(sl.ret, mode="drop"),
        xs=gen.xs.at[idx].set(sl.x, mode="drop"),
        done=gen.done.at[idx].set(True, mode="drop"),
        steps=gen.steps + jnp.sum(jnp.where(arrived, sl.length, 0)),
    )
    state = state.replace(gen=gen, counters=c.replace(arrivals=c.arrivals + n_arr))

    def barrier(st):
        es = s.strategy.tell(st.es, st.gen.xs, _rank_last_if_nonfinite(st.gen.rets))
        # A generation without one finite return leaves the ES as it was.
        es = jax.tree.map(
            lambda new, old: jnp.where(jnp.any(jnp.isfinite(st.gen.rets)), new, old), es, st.es
        )
        st = st.replace(es=es)
        return st.replace(gen=_new_generation(s, st, key))

    # Only the ES and the generation change at the barrier: the cond carries just those (not
    # the replay buffer, which XLA might otherwise copy through the branches).
    def barrier_parts(parts):
        st = barrier(state.replace(es=parts[0], gen=parts[1]))
        return st.es, st.gen

    es, gen = jax.lax.cond(jnp.all(gen.done), barrier_parts, lambda p: p, (state.es, gen))
    return state.replace(es=es, gen=gen), jnp.zeros(arrived.shape), told


def _rank_last_if_nonfinite(rets: jax.Array) -> jax.Array:
    """Non-finite returns replaced by (lowest finite return - 1): they rank last, finitely."""
    finite = jnp.isfinite(rets)
    floor = jnp.min(jnp.where(finite, rets, jnp.inf))
    return jnp.where(finite, rets, jnp.where(jnp.isfinite(floor), floor - 1.0, 0.0))


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
    c = c.replace(arrivals=c.arrivals + jnp.sum(done.astype(jnp.int32)))
    return state.replace(slots=sl, counters=c)


def tick(s: Setup, state: TrainState, _=None) -> tuple[TrainState, TickMetrics]:
    """Advance every slot by one unit of its phase (module docstring, steps 1-4)."""
    key, k_train, k_act, k_critic, k_phase, k_tell, k_jobs = jax.random.split(state.key, 7)
    busy = jnp.sum((state.slots.phase != WAIT).astype(jnp.int32))
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
        state, arrived, mean_rets = _advance_phases(s, state, done, k_phase)
        state, ps, told = _tell(s, state, arrived, mean_rets, k_tell)
        arrived_rl = state.slots.is_rl  # read before the slot draws its next job
        free = arrived | (state.slots.phase == WAIT)
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


@functools.lru_cache(maxsize=32)
def make_train_chunk(cfg: Config, num_seeds: int, num_ticks: int | None = None):
    """The jitted chunk: `state[seeds] -> (state, metrics[seeds, ticks])`, donating the state.

    One seed runs un-vmapped so scalar `lax.cond`s stay real branches (under vmap they would
    execute both sides).
    """
    s = build(cfg)
    n = num_ticks or cfg.ticks_per_chunk
    chunk = functools.partial(run_chunk, s, num_ticks=n)
    if num_seeds == 1:

        def one(state):
            out = chunk(jax.tree.map(lambda x: x[0], state))
            return jax.tree.map(lambda x: x[None], out)

        return jax.jit(one, donate_argnums=0)
    return jax.jit(jax.vmap(chunk), donate_argnums=0)


def mean_params(cfg: Config, state: TrainState) -> jax.Array:
    """The ES mean (TD3: the actor) of a batched state: [seeds, d]."""
    s = build(cfg)
    return jax.vmap(functools.partial(_mean, s))(state)


@functools.lru_cache(maxsize=32)
def make_evaluate(cfg: Config, num_episodes: int):
    """Jitted `evaluate(flat [seeds, d], key) -> returns [seeds, episodes]`.

    Deterministic episodes from fresh initial states, not counted, not stored.
    """
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


@functools.lru_cache(maxsize=32)
def _jit_finite(cfg: Config):
    return jax.jit(jax.vmap(functools.partial(_finite_parts, build(cfg))))


def nonfinite_parts(cfg: Config, state: TrainState) -> list[tuple[int, str]]:
    """(seed index, part) for every part of a batched state holding a NaN or an inf."""
    ok = jax.device_get(_jit_finite(cfg)(state))  # [seeds, 3]
    return [(i, FINITE_PARTS[j]) for i, j in zip(*(~ok).nonzero())]


def var_mean(cfg: Config, state: TrainState) -> jax.Array:
    """Mean of the ES variance per seed ([seeds]; zeros for td3, which has no ES)."""
    s = build(cfg)
    if s.strategy is None:
        return jnp.zeros(state.counters.ticks.shape)
    return jax.vmap(lambda es: jnp.mean(s.strategy.var(es)))(state.es)
