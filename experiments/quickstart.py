"""The README's main job: a small AES-RL run that finishes in a few minutes on a 2-core CPU.

Writes a run directory (config, metrics CSV, checkpoints, exported policy) and a learning-curve
PNG. `aes-rl train`'s flags with small defaults: Brax hopper (spring backend), AES-RL with the
paper's final rules (baseline-relative mean, adaptive variance), W = 5 slots, 64-64 networks,
a 100k buffer, 30k counted steps.

    python -m experiments.quickstart [--steps N] [--run-dir DIR] [--env hopper]
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated

import tyro

from aes_rl import hosts, plot, run
from aes_rl.config import preset
from aes_rl.flags import Backend, EnvName, RunFlags, chosen, fail, overrides_class, parse
from experiments.common import CPU_NETS, guarded

PROG = "python -m experiments.quickstart"
QuickOverrides = overrides_class(
    "QuickOverrides", ticks_per_chunk=500, buffer_size=100_000, **CPU_NETS
)
QuickOverrides.__doc__ = "aes-rl train's overrides, with the quickstart's small defaults."


@dataclasses.dataclass(frozen=True)
class Args:
    env: EnvName = "hopper"
    """Environment."""
    backend: Backend = None
    """Brax physics backend."""
    run_dir: Path = Path("runs/quickstart")
    """Run directory (an existing run continues)."""
    flags: Annotated[RunFlags, tyro.conf.arg(name="")] = RunFlags(steps=30_000)
    overrides: Annotated[QuickOverrides, tyro.conf.arg(name="")] = QuickOverrides()  # type: ignore


def main(argv: list[str] | None = None) -> Path:
    args = parse(Args, argv, PROG, __doc__.splitlines()[0])
    try:
        values = chosen(args.overrides)
        if args.backend is not None:
            values["backend"] = args.backend
        cfg = preset(args.env, "aes-rl", **values)
        settings = args.flags.settings(args.run_dir)
        run.check_settings(cfg, settings)
        run.check_run_dir(args.run_dir)
    except ValueError as err:
        fail(PROG, str(err))
    run.enable_compilation_cache()
    out = guarded(PROG, run.train, cfg, settings)
    if not hosts.is_main():  # on a multi-process run, process 0 writes the outputs
        return args.run_dir
    png = plot.plot_runs(
        [args.run_dir],
        args.run_dir / "curve.png",
        title=f"AES-RL on {args.env} ({cfg.backend}), quickstart",
    )
    last = out.rows[-1] if out.rows else {}
    print(
        f"run directory: {args.run_dir}\ncurve: {png}\n"
        f"checkpoints: {args.run_dir / 'checkpoints'}\n"
        f"final: {last.get('total_steps')} counted steps, mean-policy return "
        f"{last.get('eval_mean', float('nan')):.1f}"
    )
    print(
        f"next: aes-rl eval {args.run_dir}; aes-rl render {args.run_dir} --out replay.html",
        file=sys.stderr,
    )
    return args.run_dir


if __name__ == "__main__":
    main(sys.argv[1:])
