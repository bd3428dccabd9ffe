"""The AES-RL ablation (Lee et al. 2020, Table 2): 4 mean rules x 2 variance rules on one env.

python -m experiments.ablation --env hopper --seeds 3 --steps 100000
"""

from __future__ import annotations

import argparse
from pathlib import Path

from aes_rl import plot
from aes_rl.config import MEAN_RULES, VAR_RULES, preset
from experiments.common import add_common_args, run_grid, table, write_report


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
    grid = (("mean_rule", tuple(args.mean_rules)), ("var_rule", tuple(args.var_rules)))
    try:
        cfg = preset(
            args.env,
            "aes-rl",
            actor_hidden=hidden,
            critic_hidden=hidden,
            backend=args.backend,
            num_slots=args.slots,
        )
    except ValueError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    # Every (mean rule, variance rule, seed) is a row of ONE compiled program.
    run_dir = args.out_dir / f"{args.env}-sweep"
    rows = run_grid(cfg, grid, run_dir, args)
    results = [
        (f"{m} + {v}", [r for r in rows if (r["mean_rule"], r["var_rule"]) == (m, v)])
        for m in args.mean_rules
        for v in args.var_rules
    ]
    n = len(args.mean_rules) * len(args.var_rules)
    report = [
        f"# AES-RL ablation on {args.env}: {args.steps} counted steps, {args.seeds} seeds, "
        f"hidden {hidden}, backend {args.backend}\n",
        f"All {n} settings x {args.seeds} seeds ran as {n * args.seeds} rows of one compiled "
        f"program (`{run_dir}`).\n",
        table(results),
        f"\n![ablation]({args.env}.png)\n",
    ]
    plot.plot_runs([run_dir], args.out_dir / f"{args.env}.png", title=f"{args.env}: AES-RL rules")
    return write_report(args.out_dir / "ablation.md", report)


if __name__ == "__main__":
    main()
