"""The AES-RL ablation (Lee et al. 2020, Table 2): 4 mean rules x 2 variance rules on one env.

`aes-rl sweep`'s flags with the ablation's defaults (every mean and variance rule, 3 seeds,
100k steps, 64-64 nets); every (setting, seed) is a row of ONE compiled program. Writes
`ablation.md` and a curve PNG (one curve per setting) to OUT_DIR.

    python -m experiments.ablation --env hopper --num-seeds 3 --steps 100000
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated

import tyro

from aes_rl import hosts, plot, sweep
from aes_rl.config import preset
from aes_rl.flags import Backend, EnvName, RunFlags, fail, overrides_class, parse, sweep_values
from experiments.common import (
    CPU_NETS,
    check_before_runs,
    guarded,
    run_grid,
    table,
    write_report,
)

PROG = "python -m experiments.ablation"
AblationOverrides = overrides_class(
    "AblationOverrides", sweep=True, mean_rule="all", var_rule="all", **CPU_NETS
)
AblationOverrides.__doc__ = "aes-rl sweep's overrides, sweeping every AES-RL rule by default."


@dataclasses.dataclass(frozen=True)
class Args:
    env: EnvName = "hopper"
    """Environment."""
    backend: Backend = None
    """Brax physics backend."""
    out_dir: Path = Path("runs/ablation")
    """Where the run directory, ablation.md and the PNG go."""
    flags: Annotated[RunFlags, tyro.conf.arg(name="")] = RunFlags(steps=100_000, num_seeds=3)
    overrides: Annotated[AblationOverrides, tyro.conf.arg(name="")] = AblationOverrides()  # type: ignore


def _label(cfg, setting) -> str:
    """'mean rule + variance rule', then any other swept value."""
    one = cfg.replace(**dict(setting))
    rest = ", ".join(f"{k}={v}" for k, v in setting if k not in ("mean_rule", "var_rule"))
    return f"{one.mean_rule} + {one.var_rule}" + (f" ({rest})" if rest else "")


def main(argv: list[str] | None = None) -> Path:
    args = parse(Args, argv, PROG, __doc__.splitlines()[0])
    try:
        values, grid = sweep_values(args.overrides)
        if args.backend is not None:
            values["backend"] = args.backend
        cfg = preset(args.env, "aes-rl", **values)
        sweep.check_grid(cfg, grid)
        seeds = args.flags.seeds
        run_dir = args.out_dir / f"{args.env}-sweep"
        check_before_runs([(cfg, args.flags.settings(run_dir, grid))], args.out_dir)
    except ValueError as err:
        fail(PROG, str(err))
    rows = guarded(PROG, run_grid, cfg, grid, run_dir, args.flags)
    settings = sweep.settings_of(grid)
    results = [
        (_label(cfg, setting), [r for r in rows if all(r[k] == v for k, v in setting)])
        for setting in settings
    ]
    report = [
        f"# AES-RL ablation on {args.env}: {args.flags.steps} counted steps, {len(seeds)} seeds, "
        f"actor {cfg.actor_hidden}, critic {cfg.critic_hidden}, backend {cfg.backend}\n",
        f"All {len(settings)} settings x {len(seeds)} seeds ran as "
        f"{len(settings) * len(seeds)} rows of one compiled program (`{run_dir}`); swept: "
        f"{', '.join(name for name, _ in grid) or 'nothing'}.\n",
        table(results),
        f"\n![ablation]({args.env}.png)\n",
    ]
    if hosts.is_main():  # on a multi-process run, process 0 writes the outputs
        plot.plot_runs(
            [run_dir], args.out_dir / f"{args.env}.png", title=f"{args.env}: AES-RL rules"
        )
    return write_report(args.out_dir / "ablation.md", report)


if __name__ == "__main__":
    main(sys.argv[1:])
