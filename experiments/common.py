"""What the experiment modules share: CPU-sized defaults, a grid runner, a results table.

Every experiment takes `aes-rl train`'s flags (`aes_rl.flags`: `RunFlags` and the Config
overrides, spelled the same way) plus its own, and reports argument errors as one line.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from aes_rl import hosts, run
from aes_rl.config import Config
from aes_rl.flags import RunFlags, fail

# CPU-sized networks; a GPU user passes --actor-hidden 400 300 --critic-hidden 400 300.
SMALL_NETS = (64, 64)
CPU_NETS = dict(actor_hidden=SMALL_NETS, critic_hidden=SMALL_NETS)


def check_before_runs(runs: list[tuple[Config, run.RunSettings]], out_dir: Path) -> None:
    """Every run's settings, and that the output directory can be written, before any work
    (one-line `ValueError`s naming the field)."""
    for cfg, settings in runs:
        run.check_settings(cfg, settings)
        run.check_run_dir(Path(settings.run_dir))
    run.check_writable(out_dir, "out_dir")


def guarded(prog: str, fn: Callable, *args):
    """`fn(*args)`; a refused run (a run directory that is not this run's, a budget, a
    checkpoint that cannot be restored) ends the experiment with one line, exit status 2."""
    from aes_rl.checkpoint import CheckpointError

    try:
        return fn(*args)
    except (run.RunError, CheckpointError) as err:
        fail(prog, str(err).splitlines()[0])


def run_grid(cfg: Config, grid, run_dir: Path, flags: RunFlags) -> list[dict]:
    """Every setting of `grid` (() for none) x the flags' seeds as rows of one program (as
    `aes-rl sweep` runs them); returns the final evaluated metrics row of each row."""
    settings = flags.settings(run_dir, grid)
    run.check_settings(cfg, settings)
    run.enable_compilation_cache()
    out = run.train(cfg, settings)
    final: dict[int, dict] = {}
    for row in run.read_metrics(run_dir):
        if not math.isnan(row["eval_mean"]):
            final[row["row"]] = row
    return list(final.values()) or out.rows


def write_report(path: Path, report: list[str]) -> Path:
    """Write the markdown report and echo it (on a multi-process run: process 0 only)."""
    if not hosts.is_main():
        return path
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
