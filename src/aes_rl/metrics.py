"""Metrics of a run: per-chunk rows (`metrics.csv`), arrivals (`arrivals.csv`), reading them.

Host side, between chunks: the compiled loop hands back its counters and per-tick metrics and
these functions turn them into one row per chunk and row of the run.
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import numpy as np

from aes_rl import hosts, program, sweep
from aes_rl.config import Config
from aes_rl.engine import TickMetrics, TrainState
from aes_rl.rundir import RunError
from aes_rl.sweep import Row

METRICS_FIELDS = (
    "chunk",
    "seed",
    "row",
    "total_steps",
    "ticks",
    "time",
    "wall_time",
    "arrivals",
    "chunk_arrivals",
    "individual_mean",
    "individual_max",
    "p_mean",
    "f_mu",
    "eval_mean",
    "eval_std",
    "eval_nonfinite",
    "rl_share",
    "critic_steps",
    "critic_per_step",
    "actor_steps",
    "var_mean",
    "utilisation",
    "nonfinite_arrivals",
    "nonfinite_transitions",
)
ARRIVAL_FIELDS = (
    "chunk",
    "seed",
    "row",
    "tick",
    "total_steps",  # counted steps at the end of the arrival's tick
    "slot",
    "return",
    "length",
    "p",
    "is_rl",
    "told",
)
# What the arrival was told against (`families.diagnostics`; read by `aes-rl analyze`).
ARRIVAL_INFO = ("f_mu", "var_before", "var_after", "mu_shift", "tells_during")
ARRIVAL_FIELDS += ARRIVAL_INFO


def metrics_fields(grid: sweep.Grid) -> tuple[str, ...]:
    """metrics.csv's columns: a sweep adds its swept fields after `row`."""
    i = METRICS_FIELDS.index("row") + 1
    return METRICS_FIELDS[:i] + tuple(name for name, _ in grid) + METRICS_FIELDS[i:]


def chunk_rows(
    cfg: Config,
    state: TrainState,
    m: TickMetrics,
    chunk: int,
    wall: float,
    rows_of_run: list[Row],
    evals: list | np.ndarray | None,  # per row: its episode returns, None when not due
    ticks_before: np.ndarray,
    var_mean=None,  # [rows] mean ES variance (None: computed here, `program.var_mean`)
):
    """Per-row summary rows and per-arrival rows of one chunk (host side)."""
    if var_mean is None:
        var_mean = program.var_mean(cfg, state)
    c, m, var_mean = hosts.fetch((state.counters, m, var_mean))
    has_f_mu = cfg.algo != "td3" and cfg.n_mean_evals > 0
    rows, arrivals = [], []
    for i, row in enumerate(rows_of_run):
        seed = row.seed
        arrived = m.arrived[i]
        finite = arrived & np.isfinite(m.ret[i])  # non-finite returns are counted apart
        rets, ps = m.ret[i][finite], m.p[i][arrived]
        n_rl, n_es = int(c.n_rl[i]) - 1, int(c.n_es[i]) - 1
        ticks = int(c.ticks[i])
        rows.append(
            dict(
                chunk=chunk,
                seed=seed,
                row=row.index,
                **dict(row.setting),
                total_steps=int(c.total_steps[i]),
                ticks=ticks,
                time=round(ticks * program.tick_cost(cfg), 3),
                wall_time=round(wall, 3),
                arrivals=int(c.arrivals[i]),
                chunk_arrivals=int(arrived.sum()),
                individual_mean=float(rets.mean()) if rets.size else math.nan,
                individual_max=float(rets.max()) if rets.size else math.nan,
                p_mean=float(ps.mean()) if ps.size else math.nan,
                f_mu=float(c.f_mu[i]) if has_f_mu else math.nan,
                **eval_summary(evals[i] if evals is not None else None),  # None: not due
                rl_share=n_rl / (n_rl + n_es) if n_rl + n_es > 0 else 0.0,
                critic_steps=int(c.critic_steps[i]),
                critic_per_step=critic_per_step(
                    row.cfg, int(c.critic_steps[i]), int(c.total_steps[i])
                ),
                actor_steps=int(c.actor_steps[i]),
                var_mean=float(var_mean[i]),
                utilisation=int(c.busy[i]) / max(1, cfg.num_slots * ticks),
                nonfinite_arrivals=int(c.nonfinite_arrivals[i]),
                nonfinite_transitions=int(c.nonfinite_transitions[i]),
            )
        )
        for t, w in zip(*np.nonzero(arrived)):
            arrivals.append(
                dict(
                    chunk=chunk,
                    seed=seed,
                    row=row.index,
                    tick=int(ticks_before[i]) + int(t),
                    total_steps=int(m.total_steps[i][t]),
                    slot=int(w),
                    **{"return": float(m.ret[i][t, w])},
                    length=int(m.length[i][t, w]),
                    p=float(m.p[i][t, w]),
                    is_rl=int(m.is_rl[i][t, w]),
                    told=int(m.told[i][t, w]),
                    **{k: getattr(m.info, k)[i][t, w].item() for k in ARRIVAL_INFO},
                )
            )
    return rows, arrivals


def eval_summary(returns: np.ndarray | None) -> dict:
    """`eval_mean` and `eval_std` of an evaluation's episodes with a finite return, and
    `eval_nonfinite`, how many were left out (NaN or inf); mean and std are NaN when every
    episode was left out, or when the chunk had no evaluation (`returns` None)."""
    if returns is None:
        return dict(eval_mean=math.nan, eval_std=math.nan, eval_nonfinite=0)
    returns = np.asarray(returns)
    finite = returns[np.isfinite(returns)]
    return dict(
        eval_mean=float(finite.mean()) if finite.size else math.nan,
        eval_std=float(finite.std()) if finite.size else math.nan,
        eval_nonfinite=int(returns.size - finite.size),
    )


def critic_per_step(cfg: Config, critic_steps: int, total_steps: int) -> float:
    """Critic steps per counted step after warm-up (the critic never trains before it)."""
    after = total_steps - cfg.warmup_steps
    return round(critic_steps / after, 4) if after > 0 else 0.0


class CsvLog:
    """Append-only CSV that, on resume, keeps only rows of chunks up to the checkpoint."""

    def __init__(self, path: Path, fields, keep_upto: int):
        self.path, self.fields = path, fields
        rows = []
        if path.exists() and keep_upto > 0:
            with path.open(newline="") as f:
                for row in csv.DictReader(f):
                    try:
                        if int(row["chunk"]) <= keep_upto and None not in row.values():
                            rows.append(row)
                    except (KeyError, TypeError, ValueError):
                        continue  # a torn last line from a kill mid-write
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fields)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(path)

    def append(self, rows) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.fields).writerows(rows)


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        raise RunError(f"run_dir: {run_dir} has no metrics.csv")
    with path.open(newline="") as f:
        return [{k: _cell(k, v) for k, v in row.items()} for row in csv.DictReader(f)]


def _cell(name: str, text: str):
    """A metrics.csv cell: ints for chunk/seed/row, floats, and a sweep's rule names as text."""
    if name in ("chunk", "seed", "row"):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def warn_untold(new_rows: list[dict], before: np.ndarray, rows: list[Row]) -> None:
    """One stderr line per chunk and row in which arrivals were not told (non-finite return
    or mean fitness); `before` [rows] holds the counts before the chunk."""
    for i, r in enumerate(new_rows):
        n = r["nonfinite_arrivals"] - int(before[i])
        if n > 0:
            print(
                f"warning: chunk {r['chunk']} {rows[i].label}: {n} arrival(s) with a non-finite "
                f"return or mean fitness were not told to the ES",
                file=sys.stderr,
            )
