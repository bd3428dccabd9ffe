"""What the experiment modules share: CPU-sized defaults, a grid runner, a results table."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from aes_rl import run
from aes_rl.config import Config

# CPU-sized networks; a GPU user passes --hidden 400 300 for the paper's sizes.
SMALL_NETS = (64, 64)


def add_common_args(parser: argparse.ArgumentParser, steps: int, seeds: int) -> None:
    parser.add_argument(
        "--steps",
        type=int,
        default=steps,
        help=f"counted env steps per seed (default {steps}; paper: 1000000)",
    )
    parser.add_argument("--seeds", type=int, default=seeds, help=f"seeds per run (default {seeds})")
    parser.add_argument("--backend", default="spring", help="Brax physics backend")
    parser.add_argument(
        "--hidden",
        type=int,
        nargs="+",
        default=list(SMALL_NETS),
        help="actor and critic hidden sizes (default 64 64; paper: 400 300)",
    )
    parser.add_argument("--slots", type=int, default=5, help="worker slots W of the loop")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run_one(cfg: Config, run_dir: Path, args) -> list[dict]:
    """Train one configuration over `args.seeds` seeds (rows of one program); returns the final
    evaluated metrics row of each seed."""
    return run_grid(cfg, (), run_dir, args)


def run_grid(cfg: Config, grid, run_dir: Path, args) -> list[dict]:
    """Every setting of `grid` x `args.seeds` seeds as rows of one program (`aes-rl sweep`);
    returns the final evaluated metrics row of each row."""
    settings = run.RunSettings(
        str(run_dir),
        steps=args.steps,
        seeds=tuple(range(args.seeds)),
        grid=grid,
        progress=not args.quiet,
    )
    out = run.train(cfg, settings)
    final: dict[int, dict] = {}
    for row in run.read_metrics(run_dir):
        if not math.isnan(row["eval_mean"]):
            final[row["row"]] = row
    return list(final.values()) or out.rows


def write_report(path: Path, report: list[str]) -> Path:
    """Write the markdown report and echo it."""
    path.write_text("\n".join(report))
    print("\n".join(report))
    return path


def table(results: list[tuple[str, list[dict]]]) -> str:
    """Markdown: final return of the mean policy (mean +- std over seeds), steps, wall-clock."""
    lines = [
        "| run | seeds | counted steps | final return (mean +- std) | min | max | "
        "utilisation | wall-clock (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, rows in results:
        finals = np.array([r["eval_mean"] for r in rows])
        lines.append(
            f"| {label} | {len(rows)} | {int(np.mean([r['total_steps'] for r in rows]))} | "
            f"{finals.mean():.1f} +- {finals.std():.1f} | "
            f"{finals.min():.1f} | {finals.max():.1f} | "
            f"{np.mean([r['utilisation'] for r in rows]):.3f} | "
            f"{max(r['wall_time'] for r in rows):.0f} |"
        )
    return "\n".join(lines)
