"""Settings compared across run directories: returns with rliable's intervals, next to the
arrival diagnostics of `aes-rl analyze`.

Each run directory is a run or a sweep (`aes-rl train` / `aes-rl sweep`); a *setting* is one
point of a sweep's grid in one directory, labelled by the swept values and by the fields in
which the directories' configs differ (W, nets, weight_init, ...). Directories that hold
the same setting pool their seeds (more seeds run later with `--seed 3 --num-seeds 2`);
a seed given twice is an error. Per setting and seed:

- final: the evaluation of the mean policy at the row's last evaluated chunk;
- past: the mean of its evaluations after `--past` counted steps (default 20,000, past the
  warm-up and the first RL jobs), which weighs the whole curve rather than its last point.

Per setting: IQM and mean over seeds with 95% stratified-bootstrap intervals (`aes_rl.stats`,
rliable), the seeds' finals, and from `aes_rl.analyze` the share of told arrivals with p in
[0.4, 0.6] (ES and RL), the share of below-f_mu arrivals told with p > 0.3, the median
variance ratio across RL arrivals' ticks and how far mu moved during RL jobs (the last three
need run directories recorded with those columns). Writes OUT.md, OUT.csv and OUT.png.

    python -m experiments.report runs/walker2d-P runs/walker2d-W10 --out reports/walker2d
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import math
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import tyro

from aes_rl import analyze, stats
from aes_rl.config import Config
from aes_rl.flags import fail, parse
from aes_rl.metrics import read_metrics
from aes_rl.rundir import RunError

PROG = "python -m experiments.report"
# Config fields never worth a label (they differ only by accident or never matter here).
UNLABELLED = ("ticks_per_chunk",)


@dataclasses.dataclass(frozen=True)
class Args:
    run_dirs: Annotated[tuple[Path, ...], tyro.conf.Positional]
    """Run directories (runs or sweeps) to compare."""
    out: Path = Path("report")
    """Output path without suffix: OUT.md, OUT.csv, OUT.png."""
    past: int = 20_000
    """The 'past' score averages the evaluations after this many counted steps."""
    reps: int = stats.REPS
    """Bootstrap replications of the intervals."""


@dataclasses.dataclass
class Setting:
    label: str
    parts: list[tuple[Path, list[int]]]  # (run directory, its rows of this setting)
    finals: dict[int, float]  # seed -> final evaluation
    pasts: dict[int, float]  # seed -> mean evaluation past `past` counted steps
    final_steps: dict[int, float]  # seed -> counted steps at the final evaluation

    @property
    def steps(self) -> float:
        """Mean counted steps at the final evaluation."""
        return float(np.mean(list(self.final_steps.values())))

    @property
    def run_dirs(self) -> str:
        return ", ".join(d.name for d, _ in self.parts)

    def merge(self, other: Setting) -> None:
        """Take the seeds of the same setting from another directory (more seeds of one
        configuration, e.g. `--seed 3 --num-seeds 2` run later); a seed in both is an error."""
        both = sorted(set(self.finals) & set(other.finals))
        if both:
            raise RunError(
                f"run_dirs: setting {self.label!r} has seed(s) {both} in both "
                f"{self.run_dirs} and {other.run_dirs}; give each seed once"
            )
        self.parts += other.parts
        self.finals = dict(sorted({**self.finals, **other.finals}.items()))
        self.pasts = dict(sorted({**self.pasts, **other.pasts}.items()))
        self.final_steps = dict(sorted({**self.final_steps, **other.final_steps}.items()))


def _stored(run_dir: Path) -> tuple[dict, list[str]]:
    """(the run's config, the fields its grid sweeps)."""
    try:
        stored = json.loads((run_dir / "config.json").read_text())
        grid = (stored.get("settings") or {}).get("grid") or []
        cfg = dict(stored["config"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise RunError(f"run_dirs: {run_dir} has no readable config.json ({err})") from None
    return _as_read(cfg), [name for name, _ in grid]


def _as_read(cfg: dict) -> dict:
    """A stored config as this code reads it (`Config.from_dict`): fields cut since are
    dropped and fields added since take the value the run had, so directories written by
    different versions differ only where their runs did."""
    try:
        return Config.from_dict(cfg).to_dict()
    except (ValueError, TypeError):  # not a config this code can read: compared as stored
        return cfg


def _differing(configs: list[dict], swept: list[list[str]]) -> list[str]:
    """Fields that label a setting beyond its own grid: those whose value differs between
    the directories, and those another directory sweeps."""
    anywhere = {k for grid in swept for k in grid}
    names = [k for k in configs[0] if k not in UNLABELLED]
    names += sorted(anywhere - set(names))
    return [k for k in names if k in anywhere or len({json.dumps(c.get(k)) for c in configs}) > 1]


def _value(v) -> str:
    return "-".join(str(x) for x in v) if isinstance(v, list) else str(v)


def settings(run_dirs: list[Path], past: int) -> list[Setting]:
    """Every setting of every run directory, in the order given; directories that hold the
    same setting (the same label) pool their seeds into one."""
    stored = [_stored(d) for d in run_dirs]
    configs, swept = [c for c, _ in stored], [g for _, g in stored]
    fixed = _differing(configs, swept)
    out: dict[str, Setting] = {}
    for run_dir, cfg, grid in zip(run_dirs, configs, swept):
        values = {k: _value(cfg[k]) for k in fixed if k not in grid}
        by_row = analyze.settings_of(run_dir)
        rows = [r for r in read_metrics(run_dir) if not math.isnan(r["eval_mean"])]
        if not rows:
            raise RunError(f"run_dirs: {run_dir} has no evaluated chunk yet")
        groups: dict[str, list[dict]] = {}
        for r in rows:
            swept = by_row.get(int(r["row"]), ("", 0))[0]
            groups.setdefault(swept, []).append(r)
        for swept, rs in groups.items():
            values.update(pair.split("=", 1) for pair in swept.split())
            order = fixed + [k for k in values if k not in fixed]  # columns of metrics.csv too
            key = " ".join(f"{k}={values[k]}" for k in order if k in values)
            found = _setting(key or run_dir.name, run_dir, rs, past)
            if key in out:
                out[key].merge(found)
                if not key:  # the directories differ in nothing: labelled by their names
                    out[key].label = out[key].run_dirs
            else:
                out[key] = found
    return list(out.values())


def _setting(label: str, run_dir: Path, rows: list[dict], past: int) -> Setting:
    finals, pasts, steps = {}, {}, {}
    for seed in sorted({int(r["seed"]) for r in rows}):
        mine = sorted((r for r in rows if int(r["seed"]) == seed), key=lambda r: r["chunk"])
        finals[seed] = float(mine[-1]["eval_mean"])
        steps[seed] = float(mine[-1]["total_steps"])
        late = [r["eval_mean"] for r in mine if r["total_steps"] > past]
        pasts[seed] = float(np.mean(late)) if late else math.nan
    rows_ = sorted({int(r["row"]) for r in rows})
    return Setting(label, [(run_dir, rows_)], finals, pasts, steps)


@functools.lru_cache(maxsize=16)
def _arrivals(run_dir: Path) -> analyze.Table:
    """arrivals.csv of a directory (callers only slice it, never write into it)."""
    return analyze.read_arrivals(run_dir)


def diagnostics(s: Setting) -> dict[str, float]:
    """The pooled `aes-rl analyze` figures of this setting's rows (NaN where not recorded)."""
    parts, offset = [], 0
    for run_dir, rows in s.parts:  # rows of later directories renumbered past the earlier
        a = _arrivals(run_dir)  # read once per directory, not once per setting
        mask = np.isin(a["row"], rows)
        part = {k: v[mask] for k, v in a.items()}
        part["row"] = part["row"] + offset
        parts.append(part)
        offset += max(rows) + 1
    common = set.intersection(*(set(p) for p in parts))
    a = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k in common}
    every = sorted({int(r) for r in np.unique(a["row"])})
    pooled = analyze.table(a, {r: ("", r) for r in every}, 3)  # one group: every row
    recs = {r["kind"]: r for r in pooled if r["seed"] == "all"}
    es, rl = recs.get("ES", {}), recs.get("RL", {})
    nan = math.nan
    return {
        "p_mid_es": es.get("p_in_0.4_0.6", nan),
        "p_mid_rl": rl.get("p_in_0.4_0.6", nan),
        "below_p_gt_0.3": _pooled_below(a),
        "rl_var_ratio": rl.get("var_ratio_median", nan),
        "rl_mu_shift": rl.get("mu_shift_median", nan),
        "es_after_rl_minus_other": es.get("es_after_rl_minus_other", nan),
    }


def _pooled_below(a: analyze.Table) -> float:
    """Share of below-f_mu told arrivals (ES and RL together) told with p > 0.3."""
    if "f_mu" not in a:
        return math.nan
    below = (a["told"] == 1) & (a["return"] < a["f_mu"])
    return float((a["p"][below] > 0.3).mean()) if below.any() else math.nan


def report(args: Args) -> tuple[str, list[dict]]:
    found = settings(list(args.run_dirs), args.past)
    finals = {s.label: np.array(list(s.finals.values())) for s in found}
    pasts = {s.label: np.array(list(s.pasts.values())) for s in found}
    agg_final = stats.aggregates(finals, reps=args.reps)
    ok_past = {k: v for k, v in pasts.items() if np.all(np.isfinite(v))}
    agg_past = stats.aggregates(ok_past, reps=args.reps) if ok_past else {}
    records, lines = [], []
    lines.append(
        "| setting | seeds | counted steps | final IQM [95%] | final mean [95%] | "
        f"mean past {args.past} IQM [95%] | finals by seed | p in [0.4,0.6] ES / RL | "
        "below f_mu told p>0.3 | RL var after/before | RL mu shift | ES after RL - other |"
    )
    lines.append("|---" * 12 + "|")
    for s in found:
        d = diagnostics(s)
        f, p = agg_final[s.label], agg_past.get(s.label)
        rec = dict(setting=s.label, run_dir=s.run_dirs, seeds=len(s.finals), steps=s.steps)
        rec.update({f"final_{k}": v[0] for k, v in f.items() if k in ("iqm", "mean")})
        rec.update(final_iqm_low=f["iqm"][1], final_iqm_high=f["iqm"][2])
        if p:
            rec.update(past_iqm=p["iqm"][0], past_iqm_low=p["iqm"][1], past_iqm_high=p["iqm"][2])
        rec.update({f"final_seed{k}": v for k, v in s.finals.items()}, **d)
        records.append(rec)
        lines.append(
            f"| {s.label} | {len(s.finals)} | {s.steps:.0f} | {stats.fmt(f['iqm'])} | "
            f"{stats.fmt(f['mean'])} | {stats.fmt(p['iqm']) if p else 'n/a'} | "
            f"{', '.join(f'{v:.0f}' for v in s.finals.values())} | "
            f"{_pct(d['p_mid_es'])} / {_pct(d['p_mid_rl'])} | {_pct(d['below_p_gt_0.3'])} | "
            f"{_num(d['rl_var_ratio'])} | {_num(d['rl_mu_shift'])} | "
            f"{_num(d['es_after_rl_minus_other'])} |"
        )
    return "\n".join(lines) + "\n", records


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.0f}%"


def _num(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.3g}"


def write_png(records: list[dict], path: Path) -> None:
    """IQM of the final return with its 95% interval, a bar per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.45 * len(records) + 1.2), dpi=110)
    for i, r in enumerate(records):
        iqm, lo, hi = r["final_iqm"], r["final_iqm_low"], r["final_iqm_high"]
        ax.errorbar(iqm, i, xerr=[[iqm - lo], [hi - iqm]], fmt="o", capsize=3, color="C0")
        seeds = [v for k, v in r.items() if k.startswith("final_seed")]
        ax.plot(seeds, [i] * len(seeds), "x", color="C1", ms=4)
    ax.set_yticks(range(len(records)), [r["setting"] for r in records], fontsize=7)
    ax.set_xlabel("final return: IQM, 95% interval (o); seeds (x)")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> Path:
    args = parse(Args, argv, PROG, __doc__.splitlines()[0])
    if not args.run_dirs:
        fail(PROG, "run_dirs: give at least one run directory")
    try:
        text, records = report(args)
    except (RunError, ValueError) as err:
        fail(PROG, str(err).splitlines()[0])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    md, csv_path = args.out.with_suffix(".md"), args.out.with_suffix(".csv")
    md.write_text(text)
    fields = list(dict.fromkeys(k for r in records for k in r))
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(records)
    write_png(records, args.out.with_suffix(".png"))
    print(text)
    return md


if __name__ == "__main__":
    main(sys.argv[1:])
