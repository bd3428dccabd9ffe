"""Time efficiency (the paper's claim): ticks and wall-clock to spend a counted-step budget.

AES-RL (asynchronous, W slots) against P-CEM-RL (the same W slots with a generation barrier)
and CEM-RL (one slot), on the same envs, nets and budget. The loop measures the idle slot-ticks
of synchrony as slot utilisation = busy slot-ticks / (W * ticks) (ALGORITHM.md section 6).

The budget is checked between chunks, so the ticks reported are those at the end of the first
chunk that reaches it (resolution: `--chunk-ticks`); the per-1000-step columns normalise by the
counted steps actually reached. Wall-clock excludes compilation (measured apart).
"""

from __future__ import annotations

from aes_rl import loop
from aes_rl.config import preset
from benchmarks import common

NAME = "time_efficiency"


def parse_args(argv=None):
    p = common.parser(__doc__.splitlines()[0], measures_compile=True)
    p.add_argument("--envs", nargs="+", default=["hopper", "walker2d"])
    p.add_argument("--backend", default="spring")
    p.add_argument("--algos", nargs="+", default=["aes-rl", "p-cem-rl", "cem-rl"])
    p.add_argument("--slots", type=int, default=5, help="W of the multi-slot algorithms")
    p.add_argument("--budget", type=int, default=30_000, help="counted env steps to reach")
    p.add_argument("--warmup-steps", type=int, default=10_000)
    p.add_argument("--hidden", type=common.hidden_arg, default=(64, 64),
                   help="actor and critic hidden widths")
    p.add_argument("--chunk-ticks", type=int, default=500, help="ticks per compiled chunk")
    p.add_argument("--seeds", nargs="+", type=int, default=[0],
                   help="seeds, run one after another with the same compiled chunk")
    args = p.parse_args(argv)
    if args.quick:
        args.envs, args.budget, args.warmup_steps = args.envs[:1], 2_000, 1_000
        args.chunk_ticks = 250
    return args


def run_to_budget(cfg, compiled, seed: int, budget: int) -> dict:
    """Chunks until the seed's counted steps reach `budget`; wall-clock of the chunk calls."""
    state = loop.init_batch(cfg, (seed,))
    wall, chunks = 0.0, 0
    while common.counters(state)["total_steps"] < budget:
        (state, _), dt = common.timed(compiled, state)
        wall += dt
        chunks += 1
    c = common.counters(state)
    w = cfg.num_slots
    return dict(ticks=c["ticks"], steps=c["total_steps"], wall_s=wall, chunks=chunks,
                utilisation=c["busy"] / (w * c["ticks"]), arrivals=c["arrivals"],
                actor_steps=c["actor_steps"], critic_steps=c["critic_steps"])


def main(argv=None) -> None:
    args = parse_args(argv)
    session = common.Session.start(NAME, args)
    rows = []
    for env in args.envs:
        refs: dict[int, dict] = {}  # per seed: the first algorithm's figures
        for algo in args.algos:
            w = 1 if algo in ("cem-rl", "td3") else args.slots
            cfg = preset(env, algo, backend=args.backend, num_slots=w,
                         actor_hidden=args.hidden, critic_hidden=args.hidden,
                         warmup_steps=args.warmup_steps, ticks_per_chunk=args.chunk_ticks)
            common.log(f"[{NAME}] {env}/{args.backend} {algo} W={w}: compiling")
            state = loop.init_batch(cfg, (args.seeds[0],))
            compiled, compile_s = common.compile_jitted(
                loop.make_train_chunk(cfg, 1, args.chunk_ticks), state)
            del state
            for seed in args.seeds:
                common.log(f"[{NAME}] {env} {algo} seed {seed}: running to {args.budget} steps")
                r = run_to_budget(cfg, compiled, seed, args.budget)
                ref = refs.setdefault(seed, r)
                rows.append([env, algo, w, seed, r["steps"], r["ticks"],
                             r["ticks"] / ref["ticks"], 1000 * r["ticks"] / r["steps"],
                             r["wall_s"], r["wall_s"] / ref["wall_s"],
                             1000 * r["wall_s"] / r["steps"], 1e3 * r["wall_s"] / r["ticks"],
                             r["utilisation"], r["arrivals"], r["actor_steps"],
                             r["critic_steps"], compile_s])
    table = common.md_table(
        ["env", "algo", "W", "seed", "counted steps", "ticks", "ticks vs first",
         "ticks / 1k steps", "wall s", "wall vs first", "wall s / 1k steps", "ms / tick",
         "utilisation", "individuals told", "actor steps", "critic steps", "compile s"], rows)
    notes = [
        f"Budget {args.budget} counted env steps (rollouts of individuals; mean evaluations "
        f"are not counted), {args.warmup_steps} of them random-action warm-up. Nets "
        f"{args.hidden} for actor and critic (small nets for CPU), backend {args.backend}, "
        "paper hyper-parameters otherwise (AES-RL: 5 mean-evaluation episodes per "
        "individual, B_a = sum of the last 10 episode lengths; CEM-RL: population 10, 5 RL "
        "members, batch 100).",
        f"'vs first' columns divide by the first algorithm of the same env and seed "
        f"({args.algos[0]}); one tick advances every slot by one unit of its phase, so ticks "
        "measure time as the emulated workers see it, wall-clock measures it on this machine.",
        f"Budget checked every {args.chunk_ticks} ticks (the resolution of the ticks column). "
        "Wall-clock is the sum of the compiled chunk calls; compile time apart.",
        "Utilisation = busy slot-ticks / (W * ticks): below 1 only when slots wait at a "
        "generation barrier.",
    ]
    session.finish("Time efficiency: AES-RL vs P-CEM-RL vs CEM-RL", [table], notes)


if __name__ == "__main__":
    main()
