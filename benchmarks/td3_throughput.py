"""TD3 throughput: env steps/s and gradient updates/s of the compiled loop, and raw env steps/s.

Two measurements per (env, backend):

- raw physics: `jit(vmap(env.step))` on N envs (N = 1 and 64 by default), called back to back
  (per-call: includes Python dispatch), and the same step inside one `lax.scan` of K steps
  (scanned: no dispatch). The env is the loop's own (`aes_rl.envs.make_env`, with its
  time-limit wrapper); actions are fixed uniform-random, states are never reset (a fallen
  hopper keeps simulating, which costs the same).
- TD3 through the loop (`algo="td3"`, one slot): after the warm-up every tick is one env step
  plus one `td3_step` (a critic update; the actor and targets every `policy_delay` updates).

Compile time is measured apart from the steady state (`jitted.lower(...).compile()`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import jax

from aes_rl import program
from aes_rl.config import preset
from aes_rl.envs import make_env
from aes_rl.flags import BackendName, EnvName
from benchmarks import common

NAME = "td3_throughput"


@common.config_flags(warmup_steps="The timed chunks come after it.")
@dataclass
class Args(common.BenchFlags):
    MEASURES_COMPILE: ClassVar[bool] = True

    envs: tuple[EnvName, ...] = ("hopper", "halfcheetah")
    """Environments."""
    backends: tuple[BackendName, ...] = ("spring", "generalized")
    """Brax physics backends."""
    sizes: tuple[int, ...] = (1, 64)
    """Numbers of envs for the raw jit(vmap(env.step)) rate."""
    raw_calls: int = 300
    """Back-to-back calls per timing."""
    scan_steps: int = 1000
    """Steps of the scanned raw env loop (0: skip it)."""
    actor_hidden: tuple[int, ...] = (256, 256)
    critic_hidden: tuple[int, ...] = (256, 256)
    ticks: int = 1000
    """Ticks per timed loop chunk."""
    warmup_steps: int = 1000
    repeats: int = 5
    """Timed calls (median reported)."""


def parse_args(argv=None) -> Args:
    args = common.parse(Args, argv, f"benchmarks.{NAME}", __doc__)
    common.quick(args, envs=args.envs[:1], backends=args.backends[:1], raw_calls=50,
                 scan_steps=0, repeats=2, ticks=200, warmup_steps=200, actor_hidden=(64, 64),
                 critic_hidden=(64, 64))
    return args


def raw_env_rates(name: str, backend: str, n: int, args) -> dict:
    """Per-call and scanned steps/s of `jit(vmap(env.step))` on `n` envs."""
    env = make_env(name, backend, 1000)
    k_reset, k_act = jax.random.split(jax.random.key(0))
    states = jax.jit(jax.vmap(env.reset))(jax.random.split(k_reset, n))
    actions = jax.random.uniform(k_act, (n, env.action_size), minval=-1.0, maxval=1.0)
    step = jax.jit(jax.vmap(env.step))
    compiled, compile_s = common.compile_jitted(step, states, actions)
    states, _ = common.timed(compiled, states, actions)  # first call: allocation, warm caches

    def calls(s):
        for _ in range(args.raw_calls):
            s = compiled(s, actions)
        return s

    states, times = common.time_repeats(calls, states, max(args.repeats, 2))
    per_call = common.Stats.of(times).median / args.raw_calls
    out = dict(compile_s=compile_s, per_call_us=per_call * 1e6, per_call_rate=n / per_call,
               scan_compile_s=float("nan"), scan_rate=float("nan"))
    if args.scan_steps > 0:
        def body(s, _):
            return jax.vmap(env.step)(s, actions), None

        scan = jax.jit(lambda s: jax.lax.scan(body, s, None, length=args.scan_steps)[0])
        compiled_scan, out["scan_compile_s"] = common.compile_jitted(scan, states)
        states, _ = common.timed(compiled_scan, states)
        _, times = common.time_repeats(compiled_scan, states, max(args.repeats, 2))
        out["scan_rate"] = n * args.scan_steps / common.Stats.of(times).median
    return out


def td3_loop_rates(name: str, backend: str, args) -> dict:
    """Env steps/s and updates/s of the TD3 loop after its warm-up; compile time apart."""
    cfg = preset(name, "td3", backend=backend, **args.net_overrides,
                 warmup_steps=args.warmup_steps,
                 ticks_per_chunk=args.ticks)
    state = program.init_batch(cfg, (0,))
    compiled, compile_s = common.compile_jitted(program.make_train_chunk(cfg, 1, args.ticks), state)
    while common.counters(state)["total_steps"] < cfg.warmup_steps + cfg.batch_size:
        state, _ = compiled(state)
    (state, _), _ = common.timed(compiled, state)  # one untimed steady-state chunk
    state, times, before, after = common.timed_chunks(compiled, state, args.repeats)
    total = sum(times)
    updates = after["critic_steps"] - before["critic_steps"]
    steps = after["total_steps"] - before["total_steps"]
    return dict(compile_s=compile_s, env_rate=steps / total, update_rate=updates / total,
                actor_rate=updates / cfg.policy_delay / total,
                ms_per_tick=1e3 * common.Stats.of(times).median / args.ticks)


def main(argv=None) -> None:
    args = parse_args(argv)
    session = common.Session.start(NAME, args)
    raw_rows, loop_rows = [], []
    for name in args.envs:
        for backend in args.backends:
            for n in args.sizes:
                common.log(f"[{NAME}] raw env step: {name}/{backend}, {n} envs")
                r = raw_env_rates(name, backend, n, args)
                raw_rows.append([name, backend, n, r["compile_s"], r["per_call_us"],
                                 r["per_call_rate"], r["scan_compile_s"], r["scan_rate"]])
            common.log(f"[{NAME}] TD3 loop: {name}/{backend}")
            t = td3_loop_rates(name, backend, args)
            loop_rows.append([name, backend, args.nets, t["compile_s"],
                              t["ms_per_tick"], t["env_rate"], t["update_rate"],
                              t["actor_rate"]])
    headers = ["env", "backend", "envs N", "compile s", "per call us", "per-call steps/s",
               "scan compile s", f"scanned steps/s (K={args.scan_steps})"]
    if args.scan_steps <= 0:  # no scanned measurement: drop its columns
        headers, raw_rows = headers[:6], [row[:6] for row in raw_rows]
    raw = common.md_table(headers, raw_rows)
    td3 = common.md_table(
        ["env", "backend", "nets", "compile s", "ms/tick", "env steps/s", "critic updates/s",
         "actor updates/s"], loop_rows)
    notes = [
        "Raw env: `jit(vmap(env.step))` of the loop's env (time-limit wrapper, no resets), "
        f"fixed random actions; per-call = {args.raw_calls} back-to-back calls (includes "
        "dispatch), scanned = the step inside one `lax.scan` (no dispatch). Median of "
        f"{max(args.repeats, 2)} timings.",
        f"TD3 loop: `algo=td3`, 1 slot, nets {args.nets} (actor and twin critic), batch 256, "
        f"chunks of {args.ticks} ticks timed after the {args.warmup_steps}-step random warm-up; "
        "each tick is one env step and one critic update, the actor and targets update every "
        f"2nd tick. Rates over {args.repeats} chunks; compile time of the chunk measured "
        "apart with `lower().compile()`.",
    ]
    session.finish("TD3 throughput", ["### Raw env step\n\n" + raw, "### TD3 through the loop\n\n"
                                      + td3], notes)


if __name__ == "__main__":
    main()
