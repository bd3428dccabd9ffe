"""Slot scaling: throughput of the compiled loop as the number of worker slots W grows.

AES-RL on hopper (spring) with W = 5, 16, 64 slots: counted env steps/s, ticks/s and wall-clock
per tick, timed past the warm-up (compile time apart). Counted steps per tick grow with W (more
slots roll out at once); a tick's cost grows with W too (every slot's env step, every training
slot's actor steps are computed each tick), and this measures by how much.
"""

from __future__ import annotations

from dataclasses import dataclass

from aes_rl import program
from aes_rl.config import preset
from aes_rl.flags import Algo
from benchmarks import common

NAME = "slots_scaling"


@common.config_flags(num_slots="Each value given is measured.")
@dataclass
class Args(common.LoopFlags):
    algo: Algo = "aes-rl"
    num_slots: tuple[int, ...] = (5, 16, 64)
    ticks: int = 500
    """Ticks per timed chunk."""
    repeats: int = 5
    """Timed chunks."""
    warmup_steps: int = 5_000
    settle_steps: int = 5_000
    """Counted steps past the warm-up before timing starts."""


def parse_args(argv=None) -> Args:
    args = common.parse(Args, argv, f"benchmarks.{NAME}", __doc__)
    common.quick(args, num_slots=(5, 16), ticks=100, repeats=2, warmup_steps=500,
                 settle_steps=300)
    return args


def measure(w: int, args) -> dict:
    cfg = preset(args.env, args.algo, backend=args.backend, num_slots=w,
                 **args.net_overrides,
                 warmup_steps=args.warmup_steps, ticks_per_chunk=args.ticks,
                 env_steps_per_tick=1, actor_steps_per_tick=10, critic_steps_per_tick=2)
    state = program.init_batch(cfg, (0,))
    compiled, compile_s = common.compile_jitted(program.make_train_chunk(cfg, 1, args.ticks), state)
    while common.counters(state)["total_steps"] < cfg.warmup_steps + args.settle_steps:
        state, _ = compiled(state)
    state, times, before, after = common.timed_chunks(compiled, state, args.repeats)
    d = {k: after[k] - before[k] for k in after}
    wall = sum(times)
    return dict(compile_s=compile_s, steps_per_s=d["total_steps"] / wall,
                ticks_per_s=d["ticks"] / wall,
                ms_per_tick=1e3 * common.Stats.of(times).median / args.ticks,
                steps_per_tick=d["total_steps"] / d["ticks"],
                actor_per_s=d["actor_steps"] / wall, critic_per_s=d["critic_steps"] / wall,
                utilisation=d["busy"] / (w * d["ticks"]), start_steps=before["total_steps"])


def main(argv=None) -> None:
    args = parse_args(argv)
    session = common.Session.start(NAME, args)
    rows, base = [], None
    for w in args.num_slots:
        common.log(f"[{NAME}] W={w}")
        r = measure(w, args)
        base = base or r
        rows.append([w, r["compile_s"], r["ms_per_tick"], r["ticks_per_s"], r["steps_per_tick"],
                     r["steps_per_s"], r["steps_per_s"] / base["steps_per_s"],
                     r["actor_per_s"], r["critic_per_s"], r["utilisation"],
                     r["start_steps"]])
    table = common.md_table(
        ["W", "compile s", "ms / tick", "ticks / s", "counted steps / tick",
         "counted steps / s", f"steps/s vs W={args.num_slots[0]}", "actor steps / s",
         "critic steps / s", "utilisation", "timing from step"], rows)
    notes = [
        f"{args.algo} on {args.env} ({args.backend}), nets {args.nets} (small nets for CPU), "
        "paper hyper-parameters otherwise (5 mean-evaluation episodes per individual, "
        "a custom clock of 1 env step, 10 actor steps and 2 critic steps per tick, batch 256).",
        f"Timed over {args.repeats} chunks of {args.ticks} ticks, starting "
        f"{args.settle_steps} counted steps past a {args.warmup_steps}-step warm-up (so the "
        "phase mix of RL training, rollouts and mean evaluations is under way); ms / tick is "
        "the median chunk, the rates are totals over all timed chunks.",
        "The phase mix, and so the cost of a tick, drifts as episodes lengthen during "
        "learning: these are throughputs at the stated point of a run, not constants.",
        "Counted steps exclude mean-evaluation episodes (uncounted env steps, which every "
        "slot also runs) and the critic never takes more steps than counted env steps.",
    ]
    session.finish(f"Slot scaling ({args.algo}, {args.env} {args.backend})", [table], notes)


if __name__ == "__main__":
    main()
