"""Optional TensorBoard events of a run (the paper's tags test/mean, train/individuals, train/p)."""

from __future__ import annotations

import math
from pathlib import Path

from aes_rl.sweep import Row


def writers(run_dir: Path, rows: list[Row]) -> dict:
    from tensorboardX import SummaryWriter

    return {r.index: SummaryWriter(str(run_dir / "tb" / r.tb_name)) for r in rows}


def write(tb: dict, rows, arrivals) -> None:
    for row in rows:
        w, step = tb[row["row"]], row["total_steps"]
        if not math.isnan(row["eval_mean"]):
            w.add_scalar("test/mean", row["eval_mean"], step)
        w.add_scalar("train/f_mu", row["f_mu"], step)
        w.add_scalar("train/utilisation", row["utilisation"], step)
        w.add_scalar("train/var_mean", row["var_mean"], step)
    for a in arrivals:
        w = tb[a["row"]]
        # against counted steps, as the authors log them (they tag an arrival with the steps
        # at the end of its rollout; ours, at the end of the tick its tell is in)
        w.add_scalar("train/individuals", a["return"], a["total_steps"])
        w.add_scalar("train/p", a["p"], a["total_steps"])
    for w in tb.values():
        w.flush()
