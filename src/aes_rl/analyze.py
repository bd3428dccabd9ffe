"""Diagnostics of a run directory's arrivals (`aes-rl analyze RUN_DIR`).

From `arrivals.csv` (and `metrics.csv`, which says which rows share a setting), per setting
(seeds pooled; per-seed values in the CSV) and separately for ES and RL arrivals:

(a) the distribution of the mean-update ratio p of told arrivals (quantiles, share in
    [0.4, 0.6], a histogram);
(b) of the told arrivals whose return was below the f_mu they were told against, the share
    told with p > 0.3;
(c) the ES variance (mean over coordinates) before and after the tick's tells;
(d) how far the ES mean moved during the job (`mu_shift`) and the tells made meanwhile;
(e) the returns of the first K ES members drawn after each told RL arrival, against the other
    ES returns past the first RL arrival of their row;
(f) with `plateau = (HIGH, LOW)`: falls from a plateau. Each told arrival's f_mu is a look at
    the mean; a look at HIGH or above is followed by the row's next look, a fall when that is
    below LOW. The looks are split by what was told just before: kind RL when an RL arrival
    was told with p > 0 among the row's last W told arrivals up to the look (W: the row's
    slots, since the other slots' tells can land between a look, taken when a rollout ends,
    and its own tell), kind ES otherwise. On Brax hopper and walker2d the ~1000 survival
    plateau is the level to watch (HIGH 800, LOW 600).

(b)-(d) read the columns `families.diagnostics` records; older run directories lack them and
get (a) and (e). (e) dates a member's draw by its slot's previous arrival: in the asynchronous
families a slot draws its next job in the tick its arrival is told (after the tells), so it is
exact there; generation families draw members at the ask and it is only indicative.
Writes PATH.md, PATH.csv and PATH.png (default RUN_DIR/analysis).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from aes_rl.rundir import RunError

INFO = ("f_mu", "var_before", "var_after", "mu_shift", "tells_during")
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
KINDS = (("ES", 0), ("RL", 1))
Table = dict[str, np.ndarray]


def read_arrivals(run_dir: Path) -> Table:
    """arrivals.csv as float columns (empty cells: NaN)."""
    path = Path(run_dir) / "arrivals.csv"
    if not Path(run_dir).is_dir():
        raise RunError(f"run_dir: {run_dir} is not a directory")
    if not path.exists():
        raise RunError(f"run_dir: {run_dir} has no arrivals.csv")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if None not in r.values()]  # a torn last line
        fields = reader.fieldnames or []
    return {k: np.array([_number(r[k]) for r in rows], dtype=float) for k in fields}


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def settings_of(run_dir: Path) -> dict[int, tuple[str, int]]:
    """row -> (setting label, seed) from metrics.csv; swept columns follow `row`. {} if none."""
    from aes_rl.metrics import METRICS_FIELDS

    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        return {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        i = fields.index("row") + 1 if "row" in fields else len(fields)
        swept = []
        for name in fields[i:]:
            if name in METRICS_FIELDS:
                break
            swept.append(name)
        out = {}
        for r in reader:
            try:
                label = " ".join(f"{k}={r[k]}" for k in swept)
                out[int(r["row"])] = (label, int(r["seed"]))
            except (KeyError, TypeError, ValueError):
                continue
    return out


def draw_ticks(a: Table) -> np.ndarray:
    """Per arrival: the tick its member was drawn in, i.e. of its slot's previous arrival in
    its row (-1: the slot's first job, drawn at the start)."""
    out = np.full(a["tick"].shape, -1.0)
    last: dict[tuple[float, float], float] = {}
    for j in np.lexsort((a["slot"], a["tick"])):
        key = (a["row"][j], a["slot"][j])
        out[j] = last.get(key, -1.0)
        last[key] = a["tick"][j]
    return out


def after_rl(a: Table, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(e)'s two groups of told ES arrivals: (the first k drawn after each told RL arrival of
    their row, the others past that row's first RL arrival)."""
    drawn = draw_ticks(a)
    es = (a["is_rl"] == 0) & (a["told"] == 1)
    rl = (a["is_rl"] == 1) & (a["told"] == 1)
    near = np.zeros(es.shape, bool)
    later = np.zeros(es.shape, bool)
    for row in np.unique(a["row"]):
        mine = a["row"] == row
        rl_ticks = a["tick"][mine & rl]
        if rl_ticks.size == 0:
            continue
        later |= mine & es & (a["tick"] > rl_ticks.min())
        cand = np.flatnonzero(mine & es)
        cand = cand[np.lexsort((a["slot"][cand], a["tick"][cand]))]
        for t in rl_ticks:
            near[cand[drawn[cand] >= t][:k]] = True
    return near, later & ~near


def plateau_looks(a: Table, high: float, low: float) -> tuple[np.ndarray, ...]:
    """(f) per arrival: (a look at the plateau with a next look, that next look fell below
    `low`, an RL tell with p > 0 among the row's last W told arrivals up to this one)."""
    look = np.zeros(a["tick"].shape, bool)
    fell, after_rl_tell = look.copy(), look.copy()
    told = a["told"] == 1
    for row in np.unique(a["row"]):
        idx = np.flatnonzero((a["row"] == row) & told)
        idx = idx[np.lexsort((a["slot"][idx], a["tick"][idx]))]
        w = np.unique(a["slot"][idx]).size
        rl_tell = (a["is_rl"][idx] == 1) & (a["p"][idx] > 0)
        f_mu = a["f_mu"][idx]
        for j in range(idx.size - 1):
            if f_mu[j] >= high:
                look[idx[j]] = True
                fell[idx[j]] = f_mu[j + 1] < low
                after_rl_tell[idx[j]] = rl_tell[max(0, j - w + 1): j + 1].any()
    return look, fell, after_rl_tell


def _falls(sel: np.ndarray, looks: tuple[np.ndarray, ...], rl: bool) -> dict[str, float]:
    """(f) for the looks of `sel` after an RL tell (`rl`) or not."""
    look, fell, after_rl_tell = looks
    mine = sel & look & (after_rl_tell == rl)
    n, falls = int(mine.sum()), int((mine & fell).sum())
    return {"plateau_looks": n, "plateau_falls": falls,
            "plateau_fall_share": falls / n if n else math.nan}


def _stats(a: Table, sel: np.ndarray, has_info: bool) -> dict[str, float]:
    """(a)-(d) for the arrivals `sel`."""
    told = sel & (a["told"] == 1)
    p = a["p"][told]
    out: dict[str, float] = {"arrivals": int(sel.sum()), "told": int(told.sum())}
    for q in QUANTILES:
        out[f"p_q{round(q * 100):02d}"] = float(np.quantile(p, q)) if p.size else math.nan
    out["p_in_0.4_0.6"] = _share((p >= 0.4) & (p <= 0.6))
    if not has_info:
        return out
    below = told & (a["return"] < a["f_mu"])
    out["below_f_mu"] = int(below.sum())
    out["below_f_mu_p_gt_0.3"] = _share(a["p"][below] > 0.3)
    vb, va = a["var_before"][sel], a["var_after"][sel]
    out["var_before"], out["var_after"] = _mean(vb), _mean(va)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["var_ratio_median"] = _median(va / vb)
    shift = a["mu_shift"][sel]
    out["mu_shift_mean"], out["mu_shift_median"] = _mean(shift), _median(shift)
    out["tells_during_mean"] = _mean(a["tells_during"][sel])
    return out


def _share(mask: np.ndarray) -> float:
    return float(mask.mean()) if mask.size else math.nan


def _mean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else math.nan


def _median(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else math.nan


def _returns_after_rl(a: Table, sel: np.ndarray, near, other) -> dict[str, float]:
    """(e) for the ES arrivals of `sel`."""
    r_near, r_other = a["return"][sel & near], a["return"][sel & other]
    out = {"es_after_rl": int(r_near.size), "es_after_rl_return": _mean(r_near)}
    out.update(es_other=int(r_other.size), es_other_return=_mean(r_other))
    out["es_after_rl_minus_other"] = out["es_after_rl_return"] - out["es_other_return"]
    return out


def groups(a: Table, settings: dict[int, tuple[str, int]]) -> dict[str, dict[int, np.ndarray]]:
    """setting label -> seed -> mask of its arrivals (rows without a setting: their own)."""
    out: dict[str, dict[int, np.ndarray]] = {}
    for row in np.unique(a["row"]).astype(int):
        label, seed = settings.get(row, ("", int(a["seed"][a["row"] == row][0])))
        seeds = out.setdefault(label, {})
        mask = a["row"] == row
        seeds[seed] = seeds[seed] | mask if seed in seeds else mask
    return out


def table(a: Table, settings, k: int, plateau: tuple[float, float] | None = None) -> list[dict]:
    """The CSV's records: per setting, seed ('all': pooled) and kind."""
    has_info = all(name in a for name in INFO)
    near, other = after_rl(a, k)
    looks = plateau_looks(a, *plateau) if plateau is not None and has_info else None
    records = []
    for label, seeds in groups(a, settings).items():
        pooled = np.any(list(seeds.values()), axis=0)
        for seed, mask in [("all", pooled), *sorted(seeds.items())]:
            for kind, flag in KINDS:
                sel = mask & (a["is_rl"] == flag)
                rec = dict(setting=label, seed=seed, kind=kind, **_stats(a, sel, has_info))
                if kind == "ES":
                    rec.update(_returns_after_rl(a, sel, near, other))
                if looks is not None:  # looks of every kind, split by the tells before them
                    rec.update(_falls(mask, looks, rl=kind == "RL"))
                records.append(rec)
    return records


SECTIONS = (
    (
        "(a) p of told arrivals",
        ("told", "p_q05", "p_q25", "p_q50", "p_q75", "p_q95", "p_in_0.4_0.6"),
    ),
    ("(b) below f_mu, told with p > 0.3", ("below_f_mu", "below_f_mu_p_gt_0.3")),
    ("(c) ES variance around the tick's tells", ("var_before", "var_after", "var_ratio_median")),
    (
        "(d) ES mean moved during the job",
        ("mu_shift_mean", "mu_shift_median", "tells_during_mean"),
    ),
    (
        "(e) ES returns: first K drawn after an RL arrival vs the other ES past the first RL",
        ("es_after_rl", "es_after_rl_return", "es_other", "es_other_return"),
    ),
    (
        "(f) looks at a mean on the plateau, by the tells just before (RL: an RL tell with "
        "p > 0 among the last W), and the falls after them",
        ("plateau_looks", "plateau_falls", "plateau_fall_share"),
    ),
)


def markdown(records: list[dict], run_dir: Path, k: int, missing: list[str],
             plateau: tuple[float, float] | None = None) -> str:
    """The pooled records as one markdown table per diagnostic."""
    pooled = [r for r in records if r["seed"] == "all"]
    head = f"Seeds pooled per setting; K = {k}."
    if plateau is not None:
        head += f" Plateau: a look at {plateau[0]:g} or above, a fall below {plateau[1]:g}."
    lines = [f"# Arrival diagnostics of {run_dir}", "", head]
    if missing:
        lines.append(
            f"(b)-(d) need the arrivals.csv columns {', '.join(missing)}: "
            "rerun with a newer aes_rl."
        )
    for title, cols in SECTIONS:
        rows = [r for r in pooled if all(c in r for c in cols)]
        if not rows:
            continue
        lines += ["", f"## {title}", "", "| setting | kind | " + " | ".join(cols) + " |"]
        lines.append("|---" * (len(cols) + 2) + "|")
        for r in rows:
            cells = [r["setting"] or "-", r["kind"], *(_fmt(r[c]) for c in cols)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    if isinstance(v, int):
        return str(v)
    return "nan" if math.isnan(v) else f"{v + 0.0:.4g}"  # + 0.0: no "-0"


def write_csv(records: list[dict], path: Path) -> None:
    fields = list(dict.fromkeys(k for r in records for k in r))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(records)


def write_png(a: Table, settings, k: int, path: Path) -> None:
    """A row of panels per setting: p histograms, (e)'s returns, mu_shift (new runs only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_setting = groups(a, settings)
    cols = 3 if "mu_shift" in a else 2
    fig, axes = plt.subplots(
        len(by_setting), cols, figsize=(4.2 * cols, 3.2 * len(by_setting)), squeeze=False
    )
    near, other = after_rl(a, k)
    for ax_row, (label, seeds) in zip(axes, by_setting.items()):
        mask = np.any(list(seeds.values()), axis=0)
        _hist_kinds(ax_row[0], a, mask, "p", f"p (told) {label}")
        rets = {f"first {k} after RL": a["return"][mask & near]}
        rets["other ES"] = a["return"][mask & other]
        _hist(ax_row[1], rets, f"ES returns {label}")
        if cols == 3:
            _hist_kinds(ax_row[2], a, mask, "mu_shift", f"mu_shift {label}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _hist_kinds(ax, a: Table, mask: np.ndarray, col: str, title: str) -> None:
    told = mask & (a["told"] == 1)
    data = {kind: a[col][told & (a["is_rl"] == flag)] for kind, flag in KINDS}
    _hist(ax, data, title)


def _hist(ax, data: dict[str, np.ndarray], title: str) -> None:
    data = {name: x[np.isfinite(x)] for name, x in data.items()}
    every = np.concatenate(list(data.values()))
    if every.size:
        bins = np.linspace(every.min(), every.max() + 1e-12, 21)
        for name, x in data.items():
            if x.size:
                ax.hist(x, bins, density=True, histtype="step", label=f"{name} (n={x.size})")
        ax.legend(fontsize=7)
    ax.set_title(title, fontsize=8)


def analyze(run_dir: Path, out: Path | None = None, after: int = 3,
            plateau: tuple[float, float] | None = None) -> tuple[str, list[Path]]:
    """Write PATH.md, PATH.csv, PATH.png (PATH: `out` without suffix, default
    RUN_DIR/analysis). Returns (the markdown, the files written). `plateau`: (HIGH, LOW) of
    diagnostic (f), None to skip it."""
    run_dir = Path(run_dir)
    if plateau is not None and not plateau[1] <= plateau[0]:
        raise ValueError(f"plateau: LOW must not exceed HIGH, got HIGH {plateau[0]:g}, "
                         f"LOW {plateau[1]:g}")
    a = read_arrivals(run_dir)
    if a.get("tick", np.zeros(0)).size == 0:
        raise RunError(f"run_dir: {run_dir} has no arrivals yet")
    settings = settings_of(run_dir)
    stem = Path(out).with_suffix("") if out is not None else run_dir / "analysis"
    records = table(a, settings, after, plateau)
    text = markdown(records, run_dir, after, [c for c in INFO if c not in a], plateau)
    paths = [stem.with_suffix(".md"), stem.with_suffix(".csv"), stem.with_suffix(".png")]
    paths[0].write_text(text)
    write_csv(records, paths[1])
    write_png(a, settings, after, paths[2])
    return text, paths
