"""The paper's comparison (Lee et al. 2020, Table 1 / Fig. 3) on Brax environments.

Every algorithm on every env over seeds (vmapped in one program) for a step budget; writes
`comparison.md` (final return mean +- std, wall-clock) and one curve PNG per env to OUT_DIR.
CPU-sized defaults; the paper's scale is `--steps 1000000 --hidden 400 300` on a GPU.

    python -m experiments.paper_comparison --envs hopper walker2d --seeds 3 --steps 100000
"""

from __future__ import annotations

import argparse
from pathlib import Path

from aes_rl import plot
from aes_rl.config import ALGOS, preset
from experiments.common import add_common_args, run_one, table, write_report


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.paper_comparison", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--envs", nargs="+", default=["hopper"])
    parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    parser.add_argument("--out-dir", type=Path, default=Path("runs/paper_comparison"))
    add_common_args(parser, steps=100_000, seeds=3)
    args = parser.parse_args(argv)
    hidden = tuple(args.hidden)
    try:
        cfgs = {
            (env, algo): preset(
                env,
                algo,
                actor_hidden=hidden,
                critic_hidden=hidden,
                backend=args.backend if env != "swimmer" else "generalized",
                **({} if algo in ("cem-rl", "td3") else {"num_slots": args.slots}),
            )
            for env in args.envs
            for algo in args.algos
        }
    except ValueError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    report = [
        f"# Paper comparison: {args.steps} counted steps, {args.seeds} seeds, "
        f"hidden {hidden}, backend {args.backend}\n"
    ]
    for env in args.envs:
        results, dirs = [], []
        for algo in args.algos:
            run_dir = args.out_dir / f"{env}-{algo}"
            results.append((algo, run_one(cfgs[env, algo], run_dir, args)))
            dirs.append(run_dir)
        report += [f"## {env}\n", table(results), f"\n![{env}]({env}.png)\n"]
        plot.plot_runs(dirs, args.out_dir / f"{env}.png", title=f"{env}: return of the mean policy")
    return write_report(args.out_dir / "comparison.md", report)


if __name__ == "__main__":
    main()
