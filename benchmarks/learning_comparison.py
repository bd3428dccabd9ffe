"""Learning comparison: AES-RL, P-CEM-RL and TD3 on Brax hopper, several seeds in one program.

Each algorithm runs through `run.train` with all seeds vmapped in one compiled program
(`RunSettings(seeds=(0, 1, 2))`) to the same counted-step budget, with the same nets. Reported:
the final policy's return (ES mean; TD3's actor) on fresh deterministic episodes, as mean,
std, min and max over seeds, the best per-chunk evaluation, and the wall-clock. A full run
writes the curves to `benchmarks/learning_comparison.png` (and `.csv`).
"""

from __future__ import annotations

import csv
import math
import statistics
import tempfile
from pathlib import Path

from aes_rl.config import preset
from benchmarks import common

NAME = "learning_comparison"
# Rough counted steps per tick (hopper, W=5), only to size chunks to about `--chunks` of them.
STEPS_PER_TICK = {"td3": 1.0, "aes-rl": 0.8, "acem-rl": 0.8, "one-plus-one": 0.8,
                  "p-cem-rl": 2.5, "cem-rl": 0.6}


def parse_args(argv=None):
    p = common.parser(__doc__.splitlines()[0], measures_compile=False)
    p.add_argument("--env", default="hopper")
    p.add_argument("--backend", default="spring")
    p.add_argument("--algos", nargs="+", default=["aes-rl", "p-cem-rl", "td3"])
    p.add_argument("--steps", type=int, default=100_000, help="counted env steps per seed")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--slots", type=int, default=5, help="W of AES-RL and P-CEM-RL")
    p.add_argument("--hidden", type=common.hidden_arg, default=(64, 64),
                   help="actor and critic hidden widths, the same for every algorithm")
    p.add_argument("--actor-steps-per-tick", type=int, default=None,
                   help="override the loop's actor steps per tick (default: the config's)")
    p.add_argument("--warmup-steps", type=int, default=10_000)
    p.add_argument("--chunks", type=int, default=20, help="about this many evaluation points")
    p.add_argument("--eval-episodes", type=int, default=5, help="episodes per chunk evaluation")
    p.add_argument("--final-episodes", type=int, default=10,
                   help="episodes of the final evaluation of each seed's final policy")
    p.add_argument("--run-root", default=None, help="where run directories go (default /tmp)")
    p.add_argument("--out", default=None,
                   help="output stem for .png/.csv (default benchmarks/learning_comparison; "
                        "a /tmp path with --quick)")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.seeds, args.chunks = 600, [0, 1], 1
        args.eval_episodes, args.final_episodes, args.warmup_steps = 2, 2, 500
    if args.out is None:
        base = Path(tempfile.gettempdir()) if args.quick else common.BENCH_DIR
        args.out = str(base / f"learning_comparison{'_quick' if args.quick else ''}")
    return args


def make_config(algo: str, args):
    overrides = dict(backend=args.backend, actor_hidden=args.hidden, critic_hidden=args.hidden,
                     warmup_steps=args.warmup_steps)
    if algo not in ("td3", "cem-rl"):
        overrides["num_slots"] = args.slots
    if args.actor_steps_per_tick is not None:
        overrides["actor_steps_per_tick"] = args.actor_steps_per_tick
    guess = STEPS_PER_TICK.get(algo, 1.0) * (args.slots / 5 if algo != "td3" else 1.0)
    overrides["ticks_per_chunk"] = max(1, math.ceil(args.steps / args.chunks / guess))
    return preset(args.env, algo, **overrides)


def mean_curve(run: common.LearningRun):
    """Per chunk: mean counted steps, and mean / min / max over seeds of the evaluation."""
    seeds = run.seeds()
    curves = [run.curve(s) for s in seeds]
    n = min(len(c[0]) for c in curves)
    steps = [statistics.mean(c[0][i] for c in curves) for i in range(n)]
    vals = [[c[1][i] for c in curves] for i in range(n)]
    return steps, [statistics.mean(v) for v in vals], [min(v) for v in vals], \
        [max(v) for v in vals]


def plot(path: Path, runs: list[common.LearningRun], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.4), dpi=120)
    for run in runs:
        steps, mean, lo, hi = mean_curve(run)
        line, = ax.plot(steps, mean, marker="o", markersize=3,
                        label=f"{run.label} (mean of {len(run.seeds())} seeds)")
        ax.fill_between(steps, lo, hi, alpha=0.2, color=line.get_color())
    ax.set_xlabel("counted environment steps (per seed)")
    ax.set_ylabel("evaluation return (deterministic, mean policy)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, title="shaded: min-max over seeds",
              title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_csv(path: Path, runs: list[common.LearningRun]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["algo", "seed", "chunk", "steps", "eval_mean", "eval_std", "wall_time"])
        for run in runs:
            for r in sorted(run.rows, key=lambda r: (r["seed"], r["chunk"])):
                w.writerow([run.label, r["seed"], r["chunk"], int(r["total_steps"]),
                            f"{r['eval_mean']:.3f}", f"{r['eval_std']:.3f}",
                            f"{r['wall_time']:.1f}"])


def summary_row(run: common.LearningRun, cfg, args) -> list:
    finals = [statistics.mean(x) for x in run.final_returns]
    best = [max(run.curve(s)[1]) for s in run.seeds()]
    last = [run.curve(s)[1][-1] for s in run.seeds()]
    steps = [int(run.final(s)["total_steps"]) for s in run.seeds()]
    std = statistics.pstdev(finals) if len(finals) > 1 else 0.0
    return [run.label, cfg.num_slots, "x".join(map(str, cfg.actor_hidden)), min(steps),
            statistics.mean(finals), std, min(finals), max(finals), statistics.mean(last),
            statistics.mean(best), run.wall_s, cfg.ticks_per_chunk]


def main(argv=None) -> None:
    args = parse_args(argv)
    session = common.Session.start(NAME, args)
    runs, rows, per_seed = [], [], []
    for algo in args.algos:
        cfg = make_config(algo, args)
        run = common.train_run(algo, cfg, args.steps, args.seeds, args.eval_episodes,
                               args.run_root, final_episodes=args.final_episodes)
        runs.append(run)
        rows.append(summary_row(run, cfg, args))
        for seed, rets in zip(run.seeds(), run.final_returns):
            per_seed.append([algo, seed, int(run.final(seed)["total_steps"]),
                             statistics.mean(rets), max(run.curve(seed)[1])])
    out = Path(args.out)
    write_csv(out.with_suffix(".csv"), runs)
    plot(out.with_suffix(".png"), runs,
         f"Brax {args.env} ({args.backend}), nets {'x'.join(map(str, args.hidden))}, "
         f"{len(args.seeds)} seeds")
    table = common.md_table(
        ["algo", "W", "nets", "counted steps (min over seeds)", "final return (mean)",
         "std", "min", "max", "last chunk eval (mean)", "best chunk eval (mean)",
         "run wall-clock s", "ticks / chunk"], rows)
    seeds_table = common.md_table(["algo", "seed", "counted steps", "final return",
                                   "best chunk eval"], per_seed)
    nets = args.hidden
    notes = [
        f"Brax {args.env}, backend {args.backend}; every algorithm with actor and critic nets "
        f"{nets} (small nets for CPU; the paper uses 400x300 for its ES methods and 256x256 "
        f"for TD3), budget {args.steps} counted env steps per seed ({args.warmup_steps} of "
        f"them random warm-up), seeds {args.seeds} vmapped in one compiled program per "
        "algorithm. Paper hyper-parameters otherwise: AES-RL baseline-relative mean and "
        f"adaptive variance, W={args.slots}, 5 mean-evaluation episodes per individual, "
        "buffer 2e5; P-CEM-RL population 10 with 5 RL members, batch 100, the same W slots "
        "with a generation barrier; TD3 lr 3e-4, policy delay 2, exploration noise 0.1, "
        "buffer 1e6."
        + (f" actor_steps_per_tick overridden to {args.actor_steps_per_tick}."
           if args.actor_steps_per_tick is not None else ""),
        f"Final return: each seed's final policy (the ES mean; TD3's actor) on "
        f"{args.final_episodes} fresh deterministic episodes; mean, std (population), min and "
        "max are over seeds. 'last/best chunk eval' are the per-chunk evaluations "
        f"({args.eval_episodes} episodes) at the last chunk and the best chunk of each seed, "
        "averaged over seeds (best is an optimistic figure).",
        "Run wall-clock: the whole `run.train` call (init, compiles, chunks, evaluations), "
        "all seeds together.",
        f"Curves: `{_rel(out.with_suffix('.png'))}` (data `{_rel(out.with_suffix('.csv'))}`); "
        "run directories " + ", ".join(f"`{r.run_dir}`" for r in runs) + ".",
    ]
    session.finish(f"Learning comparison ({args.env}, {args.backend})",
                   [table, "<details><summary>Per seed</summary>\n\n" + seeds_table
                    + "\n\n</details>"], notes,
                   extra={r[0]: dict(final_mean=r[4], final_std=r[5]) for r in rows})


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(common.BENCH_DIR.parent))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    main()
