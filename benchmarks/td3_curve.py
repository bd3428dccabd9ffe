"""A TD3 learning curve on Brax hopper (spring backend) through `run.train`.

Evaluates the actor after every chunk (deterministic episodes from fresh initial states, not
counted) and reports the final and the best evaluation return and the wall-clock. A full run
writes the curve to `benchmarks/td3_hopper_curve.csv` (steps, eval_mean) and
`benchmarks/td3_hopper_curve.png`; `--quick` writes them under /tmp instead.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from aes_rl.config import preset
from aes_rl.flags import BackendName, EnvName
from benchmarks import common

NAME = "td3_curve"


@common.config_flags(
    actor_hidden="TD3's standard is 256 256.",
    critic_hidden="TD3's standard is 256 256.",
)
@dataclass
class Args(common.BenchFlags):
    env: EnvName = "hopper"
    backend: BackendName = "spring"
    steps: int = 100_000
    """Budget in counted env steps."""
    actor_hidden: tuple[int, ...] = (256, 256)
    critic_hidden: tuple[int, ...] = (256, 256)
    seed: int = 0
    """Seed."""
    chunks: int = 25
    """Evaluation points (ticks per chunk = steps / chunks; TD3 ticks one step)."""
    eval_episodes: int = 10
    """Episodes per evaluation."""
    warmup_steps: int = 10_000
    run_root: str | None = None
    """Where run directories go (default: the temporary directory)."""
    out: str | None = None
    """Output stem for .csv/.png (default benchmarks/td3_<env>_curve; a temporary path with
    --quick or --no-write)."""


def parse_args(argv=None) -> Args:
    args = common.parse(Args, argv, f"benchmarks.{NAME}", __doc__)
    common.quick(args, steps=2_000, chunks=2, eval_episodes=2, warmup_steps=1_000,
                 actor_hidden=(64, 64), critic_hidden=(64, 64))
    if args.out is None:
        base = common.figures_dir(args)
        args.out = str(base / f"td3_{args.env}_curve{'_quick' if args.quick else ''}")
    return args


def write_curve(path: Path, steps, returns, stds) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["steps", "eval_mean", "eval_std"])
        for s, r, e in zip(steps, returns, stds):
            w.writerow([s, f"{r:.3f}", f"{e:.3f}"])


def plot_curve(path: Path, steps, returns, stds, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    lo = [r - s for r, s in zip(returns, stds)]
    hi = [r + s for r, s in zip(returns, stds)]
    ax.fill_between(steps, lo, hi, alpha=0.25, label="+-1 std over evaluation episodes")
    ax.plot(steps, returns, marker="o", markersize=3, label="evaluation return (mean)")
    ax.set_xlabel("counted environment steps")
    ax.set_ylabel("return (deterministic policy)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> None:
    args = parse_args(argv)
    session = common.Session.start(NAME, args)
    ticks = max(1, math.ceil(args.steps / args.chunks))
    cfg = preset(args.env, "td3", backend=args.backend, **args.net_overrides,
                 warmup_steps=args.warmup_steps,
                 ticks_per_chunk=ticks)
    run = common.train_run("td3", cfg, args.steps, (args.seed,), args.eval_episodes,
                           args.run_root)
    steps, returns = run.curve(args.seed)
    stds = [float(r["eval_std"]) for r in sorted(run.rows, key=lambda r: r["chunk"])]
    out = Path(args.out)
    write_curve(out.with_suffix(".csv"), steps, returns, stds)
    nets = args.nets
    plot_curve(out.with_suffix(".png"), steps, returns, stds,
               f"TD3 on Brax {args.env} ({args.backend}), nets {nets}, seed {args.seed}")
    best = max(range(len(returns)), key=lambda i: returns[i])
    table = common.md_table(
        ["env", "backend", "nets", "counted steps", "final eval return", "best eval return",
         "best at step", "run wall-clock s", "chunk time s", "critic updates"],
        [[args.env, args.backend, nets, steps[-1], returns[-1], returns[best], steps[best],
          run.wall_s, run.chunk_wall_s, int(run.final(args.seed)["critic_steps"])]])
    curve = common.md_table(["counted steps", "eval return (mean)", "eval std"],
                            list(zip(steps, returns, stds)))
    notes = [
        f"TD3 through `run.train` (`algo=td3`: 1 slot, one env step and one critic update per "
        f"tick, actor and targets every 2nd update, batch 256, lr 3e-4, exploration noise 0.1, "
        f"{args.warmup_steps} random warm-up steps, 1e6-transition buffer), actor and critic "
        f"nets {args.nets}, 1 seed ({args.seed}).",
        f"Evaluation after every chunk of {ticks} ticks: {args.eval_episodes} deterministic "
        "episodes (up to 1000 steps) from fresh initial states, not counted. 'final' is the "
        "last evaluation, 'best' the best of all evaluations (an optimistic figure).",
        "Run wall-clock includes init, all compiles, chunks and evaluations; chunk time is the "
        "sum of the chunk calls (the first includes its compile).",
        f"Curve: `{_rel(out.with_suffix('.csv'))}`, figure `{_rel(out.with_suffix('.png'))}`.",
    ]
    session.finish(f"TD3 learning curve ({args.env}, {args.backend})",
                   [table, "<details><summary>Curve</summary>\n\n" + curve + "\n\n</details>"],
                   notes, extra=dict(final=returns[-1], best=returns[best]))


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(common.BENCH_DIR.parent))
    except ValueError:
        return path.name + " (a temporary file)"


if __name__ == "__main__":
    main()
