"""The AES-RL ablation (Lee et al. 2020, Table 2): 4 mean rules x 2 variance rules on one env.

python -m experiments.ablation --env hopper --seeds 3 --steps 100000
"""

from __future__ import annotations

import argparse
from pathlib import Path

from aes_rl import plot
from aes_rl.config import MEAN_RULES, VAR_RULES, preset
from experiments.common import add_common_args, run_one, table, write_report


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.ablation", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--env", default="hopper")
    parser.add_argument("--mean-rules", nargs="+", default=list(MEAN_RULES), choices=MEAN_RULES)
    parser.add_argument("--var-rules", nargs="+", default=list(VAR_RULES), choices=VAR_RULES)
    parser.add_argument("--out-dir", type=Path, default=Path("runs/ablation"))
    add_common_args(parser, steps=100_000, seeds=3)
    args = parser.parse_args(argv)
    hidden = tuple(args.hidden)
    grid = [(m, v) for m in args.mean_rules for v in args.var_rules]
    try:
        cfgs = {
            mv: preset(
                args.env,
                "aes-rl",
                mean_rule=mv[0],
                var_rule=mv[1],
                actor_hidden=hidden,
                critic_hidden=hidden,
                backend=args.backend,
                num_slots=args.slots,
            )
            for mv in grid
        }
    except ValueError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    results, dirs = [], []
    for mean_rule, var_rule in grid:
        run_dir = args.out_dir / f"{args.env}-{mean_rule}-{var_rule}"
        results.append(
            (f"{mean_rule} + {var_rule}", run_one(cfgs[mean_rule, var_rule], run_dir, args))
        )
        dirs.append(run_dir)
    report = [
        f"# AES-RL ablation on {args.env}: {args.steps} counted steps, {args.seeds} seeds, "
        f"hidden {hidden}, backend {args.backend}\n",
        table(results),
        f"\n![ablation]({args.env}.png)\n",
    ]
    plot.plot_runs(dirs, args.out_dir / f"{args.env}.png", title=f"{args.env}: AES-RL rules")
    return write_report(args.out_dir / "ablation.md", report)


if __name__ == "__main__":
    main()
