"""Learning curves of run directories: mean across seeds with a min-max band, as a PNG."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from aes_rl import run

METRICS = (
    "eval_mean",
    "f_mu",
    "individual_mean",
    "individual_max",
    "utilisation",
    "var_mean",
    "rl_share",
    "p_mean",
)
X_AXES = ("total_steps", "wall_time", "ticks")
LABELS = {
    "eval_mean": "return of the mean policy (deterministic eval)",
    "f_mu": "f_mu (mean fitness seen by the ES)",
    "total_steps": "counted env steps",
    "wall_time": "wall-clock (s)",
    "ticks": "ticks",
}


def curves(run_dir: Path, metric: str = "eval_mean", x: str = "total_steps"):
    """(x [chunks], per-seed values [seeds, chunks]) of one run (of a sweep's settings: see
    `setting_curves`), chunks where all seeds have it."""
    return _curves(run.read_metrics(run_dir), metric, x)


def _curves(rows, metric: str, x: str):
    by_chunk: dict[int, dict[int, tuple[float, float]]] = defaultdict(dict)
    for row in rows:
        if not np.isnan(row[metric]):
            by_chunk[row["chunk"]][row["seed"]] = (row[x], row[metric])
    seeds = sorted({s for rows in by_chunk.values() for s in rows})
    chunks = [c for c in sorted(by_chunk) if len(by_chunk[c]) == len(seeds)]
    xs = np.array([np.mean([by_chunk[c][s][0] for s in seeds]) for c in chunks])
    ys = np.array([[by_chunk[c][s][1] for c in chunks] for s in seeds])
    return xs, ys


def setting_curves(run_dir: Path, metric: str = "eval_mean", x: str = "total_steps"):
    """[(setting label, xs, ys [seeds, chunks])]: one entry per setting of a sweep (its
    swept columns), one entry labelled '' for an ordinary run."""
    rows = run.read_metrics(run_dir)
    swept = [k for k in (rows[0] if rows else {}) if k not in run.METRICS_FIELDS]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[k] for k in swept)].append(row)
    return [
        (" ".join(f"{k}={v}" for k, v in zip(swept, key)), *_curves(group, metric, x))
        for key, group in groups.items()
    ] or [("", *_curves([], metric, x))]


def run_label(run_dir: Path) -> str:
    try:
        cfg, settings = run.read_run(run_dir)
        return f"{cfg.algo} {cfg.env} ({len(settings.seeds)} seeds) [{Path(run_dir).name}]"
    except run.RunError:
        return Path(run_dir).name


def plot_runs(
    run_dirs, out: Path, metric: str = "eval_mean", x: str = "total_steps", title: str | None = None
) -> Path:
    """Write a PNG with one curve per run directory, or per setting of a sweep directory (mean
    across seeds, min-max band)."""
    if metric not in METRICS:
        raise ValueError(f"metric: unknown {metric!r}; allowed: {', '.join(METRICS)}")
    if x not in X_AXES:
        raise ValueError(f"x: unknown {x!r}; allowed: {', '.join(X_AXES)}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run_dir in run_dirs:
        for setting, xs, ys in setting_curves(Path(run_dir), metric, x):
            if xs.size == 0:
                raise ValueError(f"run_dirs: {run_dir} has no {metric} values to plot yet")
            label = run_label(Path(run_dir))
            if setting:
                label = setting if len(run_dirs) == 1 else f"{label} {setting}"
            (line,) = ax.plot(xs, ys.mean(axis=0), label=label)
            if ys.shape[0] > 1:
                ax.fill_between(
                    xs, ys.min(axis=0), ys.max(axis=0), alpha=0.2, color=line.get_color()
                )
    ax.set_xlabel(LABELS.get(x, x))
    ax.set_ylabel(LABELS.get(metric, metric))
    ax.set_title(title or f"{metric} (mean over seeds, band: min-max)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
