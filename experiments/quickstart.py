"""The README's main job: a small AES-RL run that finishes in a few minutes on a 2-core CPU.

Writes a run directory (config, metrics CSV, checkpoints, exported policy) and a learning-curve
PNG. Defaults: Brax hopper (spring backend), AES-RL with the paper's final rules
(baseline-relative mean, adaptive variance), W = 5 slots, 64-64 networks, 30k counted steps.

    python -m experiments.quickstart [--steps N] [--run-dir DIR] [--env hopper]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aes_rl import plot, run
from aes_rl.config import preset


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.quickstart", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--env", default="hopper", help="environment (default hopper)")
    parser.add_argument("--backend", default="spring", help="Brax backend (default spring)")
    parser.add_argument("--steps", type=int, default=30_000, help="counted steps (default 30000)")
    parser.add_argument(
        "--warmup-steps",
        type=int,
        default=None,
        help="random-action warm-up (default: 10000; probe envs: 500)",
    )
    parser.add_argument("--run-dir", type=Path, default=Path("runs/quickstart"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    overrides = dict(
        actor_hidden=(64, 64),
        critic_hidden=(64, 64),
        ticks_per_chunk=500,
        buffer_size=100_000,
        backend=args.backend,
    )
    if args.warmup_steps is not None:
        overrides["warmup_steps"] = args.warmup_steps
    try:
        cfg = preset(args.env, "aes-rl", **overrides)
        settings = run.RunSettings(
            str(args.run_dir), steps=args.steps, seeds=(args.seed,), progress=not args.quiet
        )
        run.check_settings(cfg, settings)
    except ValueError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    run.enable_compilation_cache()
    out = run.train(cfg, settings)
    png = plot.plot_runs(
        [args.run_dir],
        args.run_dir / "curve.png",
        title=f"AES-RL on {args.env} ({args.backend}), quickstart",
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
    main()
