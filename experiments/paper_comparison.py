"""The paper's comparison (Lee et al. 2020, Table 1 / Fig. 3) on Brax environments.

Every algorithm on every env over seeds (rows of one program per run) for a step budget;
writes `comparison.md` (final return mean +- std, wall-clock) and one curve PNG per env to
OUT_DIR. Takes `aes-rl train`'s flags (they apply to every algorithm; --num-slots only to the
multi-slot ones) with CPU-sized defaults; the paper's scale is
`--steps 1000000 --actor-hidden 400 300 --critic-hidden 400 300` on a GPU.

    python -m experiments.paper_comparison --envs hopper walker2d --num-seeds 3 --steps 100000
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated

import tyro

from aes_rl import hosts, plot
from aes_rl.config import ALGOS, preset
from aes_rl.flags import Algo, Backend, EnvName, RunFlags, chosen, fail, overrides_class, parse
from experiments.common import (
    CPU_NETS,
    check_before_runs,
    guarded,
    run_grid,
    table,
    write_report,
)

PROG = "python -m experiments.paper_comparison"
ONE_SLOT = ("cem-rl", "td3")  # their presets' W = 1 is what they are
ComparisonOverrides = overrides_class("ComparisonOverrides", **CPU_NETS)
ComparisonOverrides.__doc__ = "aes-rl train's overrides, applied to every algorithm."


@dataclasses.dataclass(frozen=True)
class Args:
    envs: tuple[EnvName, ...] = ("hopper",)
    """Environments."""
    algos: tuple[Algo, ...] = ALGOS
    """Algorithms."""
    backend: Backend = None
    """Brax physics backend."""
    out_dir: Path = Path("runs/paper_comparison")
    """Where the run directories, comparison.md and the PNGs go."""
    flags: Annotated[RunFlags, tyro.conf.arg(name="")] = RunFlags(steps=100_000, num_seeds=3)
    overrides: Annotated[ComparisonOverrides, tyro.conf.arg(name="")] = ComparisonOverrides()  # type: ignore


def configs(args: Args) -> dict:
    """(env, algo) -> Config; a bad setting is a one-line error before any run starts."""
    values = chosen(args.overrides)
    if args.backend is not None:
        values["backend"] = args.backend
    out = {}
    for env in args.envs:
        for algo in args.algos:
            mine = {k: v for k, v in values.items() if not (k == "num_slots" and algo in ONE_SLOT)}
            out[env, algo] = preset(env, algo, **mine)
    return out


def main(argv: list[str] | None = None) -> Path:
    args = parse(Args, argv, PROG, __doc__.splitlines()[0])
    try:
        for name in ("envs", "algos"):
            if not getattr(args, name):
                raise ValueError(f"{name}: give at least one")
        cfgs = configs(args)
        seeds = args.flags.seeds
        check_before_runs(
            [
                (cfg, args.flags.settings(args.out_dir / f"{env}-{algo}"))
                for (env, algo), cfg in cfgs.items()
            ],
            args.out_dir,
        )
    except ValueError as err:
        fail(PROG, str(err))
    nets = next(iter(cfgs.values()))
    report = [
        f"# Paper comparison: {args.flags.steps} counted steps, {len(seeds)} seeds, "
        f"actor {nets.actor_hidden}, critic {nets.critic_hidden} (td3's preset nets unless "
        "overridden), backend per env as configured\n"
    ]
    for env in args.envs:
        results, dirs = [], []
        for algo in args.algos:
            run_dir = args.out_dir / f"{env}-{algo}"
            results.append(
                (algo, guarded(PROG, run_grid, cfgs[env, algo], (), run_dir, args.flags))
            )
            dirs.append(run_dir)
        report += [f"## {env}\n", table(results), f"\n![{env}]({env}.png)\n"]
        if hosts.is_main():  # on a multi-process run, process 0 writes the outputs
            plot.plot_runs(
                dirs, args.out_dir / f"{env}.png", title=f"{env}: return of the mean policy"
            )
    return write_report(args.out_dir / "comparison.md", report)


if __name__ == "__main__":
    main(sys.argv[1:])
