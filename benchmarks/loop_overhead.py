"""Loop overhead: a tick's time against the sum of its parts, each measured alone.

AES-RL on hopper (spring), W slots. The tick is timed inside the library's compiled chunk
(`program.make_train_chunk`, a `lax.scan` over ticks) from a state past the warm-up. Each part is
timed alone inside its own `lax.scan` of the same length, on inputs taken from that state:

- env: one env step of all W slots with their own policies' actions (`vmap(actor.apply)` then
  `vmap(env.step)`), as a tick does where more than `engine.acting_capacity(W)` slots act; and
  of that many slots, as a tick does where fewer act (a tick where none acts takes none);
- actor: `actor_steps_per_tick` actor-only TD3 steps vmapped over the W slots (the tick runs
  this block only when some slot is training; then all W slots compute, masked);
- critic: one shared-critic step with its soft target update (the tick takes up to
  `critic_steps_per_tick`, never more critic steps than counted env steps);
- buffer add: W transitions into the replay ring; buffer sample: the W x actor-step batches and
  the critic's batches of a tick.

The tick also does what no part covers: phase bookkeeping, episode resets, the ES tells and
draws, job assignment. `weighted` sums each part as often as the measured ticks actually ran
it (fraction of ticks with a training slot, of ticks whose env steps took each path, critic
steps per tick); `every tick` assumes every
part runs fully every tick. The target is a tick within 1.25x of the weighted sum.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from aes_rl import engine, program, replay, td3
from aes_rl.config import preset
from aes_rl.flags import Algo
from benchmarks import common

NAME = "loop_overhead"
TARGET = 1.25


@common.config_flags(warmup_steps="Timing starts past it, after --settle-steps more.")
@dataclass
class Args(common.LoopFlags):
    algo: Algo = "aes-rl"
    num_slots: int = 5
    ticks: int = 1000
    """Ticks per timed chunk (and scan)."""
    repeats: int = 5
    """Timed chunks (median reported)."""
    warmup_steps: int = 3_000
    settle_steps: int = 2_000
    """Counted steps after the warm-up before timing (RL jobs under way)."""


def parse_args(argv=None) -> Args:
    args = common.parse(Args, argv, f"benchmarks.{NAME}", __doc__)
    common.quick(args, ticks=200, repeats=2, warmup_steps=500, settle_steps=300)
    return args


# ------------------------------------------------------------------ the tick, instrumented


def _probe_tick(s: engine.Setup, state: engine.TrainState, _):
    """One library tick, plus what it ran: any training slot, critic steps taken, an arrival,
    and the path of its env steps (`TickMetrics.env_path`)."""
    any_train = jnp.any(state.slots.phase == engine.TRAIN)
    before = state.counters.critic_steps
    state, m = engine.tick(s, state)
    return state, (any_train, state.counters.critic_steps - before, jnp.any(m.arrived),
                   m.env_path)


def tick_mix(s: engine.Setup, one: engine.TrainState, ticks: int, repeats: int) -> dict:
    """Fractions of ticks that ran the actor block, critic steps per tick, arrival ticks, and
    fractions of ticks whose env steps stepped the few acting slots or all W."""
    run = jax.jit(lambda st: jax.lax.scan(functools.partial(_probe_tick, s), st, None,
                                          length=ticks), donate_argnums=0)
    trains, critic, arrivals, few, every = [], [], [], [], []
    for _ in range(repeats):
        one, (t, c, a, path) = run(one)
        trains.append(jnp.mean(t.astype(jnp.float32)))
        critic.append(jnp.mean(c.astype(jnp.float32)))
        arrivals.append(jnp.mean(a.astype(jnp.float32)))
        few.append(jnp.mean((path == 1).astype(jnp.float32)))
        every.append(jnp.mean((path == 2).astype(jnp.float32)))
    mean = lambda xs: float(jnp.mean(jnp.stack(xs)))  # noqa: E731
    return dict(train=mean(trains), critic=mean(critic), arrival=mean(arrivals),
                env_few=mean(few), env_all=mean(every))


# ------------------------------------------------------------------ the parts, alone


def _scan_timer(body, carry, inputs: tuple, ticks: int, repeats: int) -> tuple[float, float]:
    """(compile s, median s per iteration) of `carry = body(carry, *inputs)` scanned `ticks` times.

    The carry is a private copy, donated (as the library's chunk donates its state); `inputs`
    are arguments, not closed-over constants.
    """
    def run(c, *xs):
        return jax.lax.scan(lambda c, _: (body(c, *xs), None), c, None, length=ticks)[0]

    carry = jax.tree.map(lambda x: x.copy(), carry)
    compiled, compile_s = common.compile_jitted(jax.jit(run, donate_argnums=0), carry, *inputs)
    step = lambda c: compiled(c, *inputs)  # noqa: E731
    carry, _ = common.timed(step, carry)
    _, times = common.time_repeats(step, carry, repeats)
    return compile_s, common.Stats.of(times).median / ticks


def part_env(s, one, ticks, repeats, slots=None):
    """One env step of the first `slots` slots (all W by default) with their own actions."""
    k = slots or s.cfg.num_slots

    def body(env, params):
        action = jax.vmap(s.actor.apply)(params, env.obs)
        return jax.vmap(s.env.step)(env, action)

    env = jax.tree.map(lambda x: x[:k], one.slots.env)
    return _scan_timer(body, env, (one.slots.params[:k],), ticks, repeats)


def part_actor(s, one, obs, ticks, repeats):
    """`actor_steps_per_tick` vmapped actor steps over W slots on fixed [W, B, obs] batches."""
    def body(carry, critic_params, obs):
        def update(params, opt, o):
            return td3.actor_step(params, opt, critic_params, o, s.hp, s.actor, s.critic)[:2]

        for _ in range(int(s.cfg.actor_steps_per_tick)):
            carry = jax.vmap(update)(*carry, obs)
        return carry

    return _scan_timer(body, (one.slots.params, one.slots.opt), (one.learner.params, obs),
                       ticks, repeats)


def part_critic(s, one, batch, ticks, repeats):
    """One shared-critic step against the ES mean, with its soft target update."""
    def body(carry, batch, policy):
        learner, key = carry
        key, k = jax.random.split(key)
        learner, _ = td3.critic_step(learner, batch, policy, k, s.hp, s.actor, s.critic)
        return td3.soft_update_critic(learner, s.h.tau), key

    policy = program.mean_params(s.cfg, jax.tree.map(lambda x: x[None], one))[0]
    return _scan_timer(body, (one.learner, jax.random.key(1)), (batch, policy), ticks, repeats)


def part_add(s, one, trans, ticks, repeats):
    mask = jnp.ones((s.cfg.num_slots,), bool)
    return _scan_timer(lambda buf, tr, m: replay.add(buf, tr, m), one.buffer, (trans, mask),
                       ticks, repeats)


def part_sample(s, one, n_batches, ticks, repeats):
    """`n_batches` batches of `batch_size` (their sum feeds the carry so nothing is dropped)."""
    b = s.cfg.batch_size

    def body(carry, buffer):
        key, acc = carry
        key, k = jax.random.split(key)
        keys = jax.random.split(k, n_batches)
        obs = jax.vmap(lambda kk: replay.sample(buffer, kk, b).obs)(keys)
        return key, acc + jnp.sum(obs[:, 0, 0])

    return _scan_timer(body, (jax.random.key(2), jnp.zeros(())), (one.buffer,), ticks, repeats)


def part_reset(s, one, ticks, repeats):
    """Informative only: a fresh reset of all W envs (the tick resets when episodes end)."""
    w = s.cfg.num_slots

    def body(carry):
        env, key = carry
        key, k = jax.random.split(key)
        return jax.vmap(s.env.reset)(jax.random.split(k, w)), key

    return _scan_timer(body, (one.slots.env, jax.random.key(3)), (), ticks, repeats)


# ------------------------------------------------------------------ main

# The clock this benchmark's parts model: a tick is 1 env step, 10 actor steps, 2 critic steps.
CLOCK = dict(env_steps_per_tick=1, actor_steps_per_tick=10, critic_steps_per_tick=2)



def main(argv=None) -> None:
    args = parse_args(argv)
    session = common.Session.start(NAME, args)
    cfg = preset(args.env, args.algo, backend=args.backend, num_slots=args.num_slots,
                 **args.net_overrides,
                 warmup_steps=args.warmup_steps, ticks_per_chunk=args.ticks, **CLOCK)
    s = program.build(cfg)
    state = program.init_batch(cfg, (0,))
    common.log(f"[{NAME}] compiling the chunk ({args.ticks} ticks)")
    compiled, chunk_compile_s = common.compile_jitted(program.make_train_chunk(cfg, 1, args.ticks),
                                                      state)
    common.log(f"[{NAME}] running past the warm-up")
    while common.counters(state)["total_steps"] < cfg.warmup_steps + args.settle_steps:
        state, _ = compiled(state)
    one = jax.tree.map(lambda x: x[0].copy(), state)  # unbatched copy: inputs of the parts
    mix_state = jax.tree.map(lambda x: x.copy(), one)
    state, times, before, after = common.timed_chunks(compiled, state, args.repeats)
    tick_s = common.Stats.of(times).median / args.ticks
    common.log(f"[{NAME}] tick {1e3 * tick_s:.3f} ms; measuring the tick's mix")
    mix = tick_mix(s, mix_state, args.ticks, args.repeats)

    w, b = cfg.num_slots, cfg.batch_size
    key = jax.random.key(4)
    obs = jax.vmap(lambda k: replay.sample(one.buffer, k, b).obs)(jax.random.split(key, w))
    batch = replay.sample(one.buffer, jax.random.key(5), b)
    trans = jax.tree.map(lambda x: x[:w], one.buffer.data)
    n_actor_batches = int(cfg.actor_steps_per_tick) * w
    cap = engine.acting_capacity(w)
    parts = {}
    for label, fn, extra in (
            ("env step + policy actions (W)", part_env, ()),
            (f"env step + policy actions (the few: {cap})", part_env, (cap,)),
            (f"actor block ({cfg.actor_steps_per_tick} steps x W)", part_actor, (obs,)),
            ("critic step + target update (x1)", part_critic, (batch,)),
            ("buffer add (W rows)", part_add, (trans,)),
            (f"buffer sample, actor ({n_actor_batches} batches)", part_sample,
             (n_actor_batches,)),
            ("buffer sample, critic (x1 batch)", part_sample, (1,)),
            ("env reset (W), not a part", part_reset, ())):
        common.log(f"[{NAME}] part: {label}")
        parts[label] = fn(s, one, *extra, args.ticks, args.repeats)

    labels = list(parts)
    weight_every = [1.0, 0.0, 1.0, float(cfg.critic_steps_per_tick), 1.0, 1.0,
                    float(cfg.critic_steps_per_tick), 0.0]
    weight_mix = [mix["env_all"], mix["env_few"], mix["train"], mix["critic"], 1.0,
                  mix["train"], mix["critic"], 0.0]
    rows = []
    for label, we, wm in zip(labels, weight_every, weight_mix):
        compile_s, per = parts[label]
        rows.append([label, 1e3 * per, we, 1e3 * per * we, wm, 1e3 * per * wm, compile_s])
    sum_every = sum(parts[lb][1] * we for lb, we in zip(labels, weight_every))
    sum_mix = sum(parts[lb][1] * wm for lb, wm in zip(labels, weight_mix))
    rows.append(["sum of parts", float("nan"), float("nan"), 1e3 * sum_every, float("nan"),
                 1e3 * sum_mix, float("nan")])
    rows.append(["tick (library chunk)", 1e3 * tick_s, 1.0, 1e3 * tick_s, 1.0, 1e3 * tick_s,
                 chunk_compile_s])
    parts_table = common.md_table(
        ["piece", "ms alone", "runs/tick (every tick)", "ms (every tick)",
         "runs/tick (measured)", "ms (measured)", "compile s"], rows)
    ratio_mix, ratio_every = tick_s / sum_mix, tick_s / sum_every
    verdict = "meets" if ratio_mix <= TARGET else "does NOT meet"
    ticks = after["ticks"] - before["ticks"]
    summary = common.md_table(
        ["tick ms", "sum of parts ms (measured mix)", "ratio (measured mix)",
         "sum of parts ms (every tick)", "ratio (every tick)", f"target <= {TARGET}",
         "ticks with a training slot", "ticks stepping the few / all W",
         "critic steps / tick", "counted steps / tick", "ticks with an arrival"],
        [[1e3 * tick_s, 1e3 * sum_mix, ratio_mix, 1e3 * sum_every, ratio_every, verdict,
          mix["train"], f"{mix['env_few']:.3g} / {mix['env_all']:.3g}", mix["critic"],
          (after["total_steps"] - before["total_steps"]) / ticks, mix["arrival"]]])
    notes = [
        f"{args.algo} on {args.env} ({args.backend}), W={w}, nets {args.nets} (small nets "
        f"for CPU), batch {b}, actor_steps_per_tick {cfg.actor_steps_per_tick}, "
        f"critic_steps_per_tick {cfg.critic_steps_per_tick}; timing starts "
        f"{args.settle_steps} counted steps past a {cfg.warmup_steps}-step warm-up.",
        f"Every time is the median over {args.repeats} calls of a compiled `lax.scan` of "
        f"{args.ticks} iterations, divided by {args.ticks}; compile time apart.",
        "The measured mix comes from re-running the same ticks (same start state, same keys) "
        "in an instrumented scan; its ratio is the one the target refers to. A tick's env "
        "steps take one of three paths (none where no slot acts, the few acting slots where "
        f"at most {cap} act, all W otherwise), weighted by how often each ran. The env-reset "
        "row is shown for scale and is not counted in the sum (it is part of the loop's own "
        "work: the tick resets slots whose episode or job ended).",
        f"Verdict: the tick takes {ratio_mix:.2f}x the sum of its parts at the measured mix; "
        f"the target ({TARGET}x) is {'met' if ratio_mix <= TARGET else 'not met'}.",
    ]
    session.finish(f"Loop overhead ({args.algo}, {args.env} {args.backend}, W={w})",
                   [summary, parts_table], notes,
                   extra=dict(ratio=ratio_mix, ratio_every_tick=ratio_every))


if __name__ == "__main__":
    main()
