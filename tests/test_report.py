"""experiments.report: settings across run directories, scores by hand, diagnostics joined."""

import csv
import json

import numpy as np
import pytest

from aes_rl import stats
from experiments import report


def _run_dir(path, config, rows, arrivals, swept=()):
    """A run directory as `aes-rl sweep` leaves it: config.json, metrics.csv, arrivals.csv."""
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"config": config}))
    fields = ["chunk", "seed", "row", *swept, "total_steps", "eval_mean", "p_mean"]
    with (path / "metrics.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        w.writerows(rows)
    afields = [
        "chunk",
        "seed",
        "row",
        "tick",
        "slot",
        "return",
        "length",
        "p",
        "is_rl",
        "told",
        "f_mu",
    ]
    with (path / "arrivals.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, afields)
        w.writeheader()
        w.writerows(arrivals)
    return path


def _arrival(row, tick, slot, ret, p, is_rl, f_mu):
    return dict(
        chunk=1,
        seed=row,
        row=row,
        tick=tick,
        slot=slot,
        length=10,
        told=1,
        is_rl=is_rl,
        p=p,
        f_mu=f_mu,
        **{"return": ret},
    )


def test_settings_scores_and_labels_by_hand(tmp_path):
    # A sweep over mean_param (rows 0, 1: P=50 seeds 0, 1; rows 2, 3: P=800 seeds 0, 1) and
    # a one-setting run with W=10 (rows 0, 1): the second differs from the first in num_slots.
    rows = []
    for row, (p_val, seed) in enumerate([(50, 0), (50, 1), (800, 0), (800, 1)]):
        for chunk, (steps, ev) in enumerate(
            [(10_000, 1.0), (25_000, 10.0 * (row + 1)), (40_000, 100.0 * (row + 1))], 1
        ):
            rows.append(
                dict(
                    chunk=chunk,
                    seed=seed,
                    row=row,
                    mean_param=p_val,
                    total_steps=steps,
                    eval_mean=ev,
                    p_mean=0.5,
                )
            )
    arr = [
        _arrival(0, 1, 0, 5.0, 0.5, 0, 10.0),
        _arrival(0, 2, 1, 5.0, 0.2, 1, 10.0),
        _arrival(2, 1, 0, 20.0, 0.45, 1, 10.0),
        _arrival(2, 2, 0, 1.0, 0.35, 0, 10.0),
    ]
    sweep = _run_dir(
        tmp_path / "sweep",
        {"env": "walker2d", "num_slots": 5, "weight_init": "flax"},
        rows,
        arr,
        swept=("mean_param",),
    )
    one = [
        dict(chunk=1, seed=s, row=s, total_steps=30_000, eval_mean=7.0 + s, p_mean=0.5)
        for s in (0, 1)
    ]
    w10 = _run_dir(  # written by older code: a field since cut, none of weight_init
        tmp_path / "w10",
        {"env": "walker2d", "num_slots": 10, "mean_eval": "sequential"},
        one,
        [_arrival(0, 1, 0, 3.0, 0.5, 0, 2.0)],
    )
    found = report.settings([sweep, w10], past=20_000)
    assert [s.label for s in found] == [
        "num_slots=5 mean_param=50",
        "num_slots=5 mean_param=800",
        "num_slots=10",
    ]
    s50, s800, s10 = found
    assert s50.finals == {0: 100.0, 1: 200.0} and s800.finals == {0: 300.0, 1: 400.0}
    # past 20k: chunks 2 and 3 -> (10 + 100) / 2 and (20 + 200) / 2
    assert s50.pasts == {0: 55.0, 1: 110.0}
    assert s10.finals == {0: 7.0, 1: 8.0} and s10.steps == 30_000
    d50, d800 = report.diagnostics(s50), report.diagnostics(s800)
    # P=50's arrivals: ES p 0.5 (in [0.4, 0.6]), RL p 0.2 (not); both below f_mu = 10,
    # told with p > 0.3: one of two
    assert (d50["p_mid_es"], d50["p_mid_rl"], d50["below_p_gt_0.3"]) == (1.0, 0.0, 0.5)
    # P=800's: the RL arrival is above f_mu; the ES one below with p 0.35 > 0.3
    assert (d800["p_mid_rl"], d800["below_p_gt_0.3"]) == (1.0, 1.0)
    assert np.isnan(d50["rl_var_ratio"])  # not recorded in these files


def test_report_table_uses_rliable_iqm_and_writes_its_files(tmp_path):
    rows = [
        dict(chunk=1, seed=s, row=s, total_steps=30_000, eval_mean=float(v), p_mean=0.5)
        for s, v in enumerate([10, 20, 30, 40])
    ]
    run = _run_dir(tmp_path / "r", {"env": "hopper"}, rows, [_arrival(0, 1, 0, 1.0, 0.5, 0, 2)])
    out = tmp_path / "out" / "rep"
    report.main([str(run), "--out", str(out), "--reps", "200"])
    text = out.with_suffix(".md").read_text()
    iqm = stats.aggregates({"r": np.array([10.0, 20, 30, 40])}, reps=200)["r"]["iqm"]
    assert iqm[0] == 25.0  # trims 10 and 40
    assert f"| r | 4 | 30000 | {stats.fmt(iqm)} |" in text  # one directory: labelled by name
    assert out.with_suffix(".png").stat().st_size > 0 and out.with_suffix(".csv").exists()


def test_a_directory_without_a_run_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as e:
        report.main([str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "config.json" in err


def test_directories_of_one_setting_pool_their_seeds(tmp_path):
    # Seeds 0-1 of a setting in one directory, seed 2 of it in another (`--seed 2` run later),
    # and a third directory that differs in algo: two settings, the first with three seeds.
    def metrics(seeds, value):
        return [
            dict(chunk=1, seed=s, row=i, total_steps=30_000 + s, eval_mean=value + s, p_mean=0.5)
            for i, s in enumerate(seeds)
        ]

    cfg = {"env": "walker2d", "algo": "aes-rl"}
    first = _run_dir(
        tmp_path / "a", cfg, metrics((0, 1), 10.0),
        [_arrival(0, 1, 0, 5.0, 0.5, 0, 10.0), _arrival(1, 1, 0, 5.0, 0.2, 0, 10.0)],
    )
    more = _run_dir(
        tmp_path / "b", cfg, metrics((2,), 10.0), [_arrival(0, 1, 0, 20.0, 0.5, 1, 9.0)]
    )
    other = _run_dir(
        tmp_path / "c", {"env": "walker2d", "algo": "one-plus-one"}, metrics((0,), 50.0),
        [_arrival(0, 1, 0, 1.0, 0.0, 0, 2.0)],
    )
    pooled, alone = report.settings([first, other, more], past=20_000)
    assert (pooled.label, alone.label) == ("algo=aes-rl", "algo=one-plus-one")
    assert pooled.finals == {0: 10.0, 1: 11.0, 2: 12.0} and pooled.steps == 30_001.0
    assert pooled.run_dirs == "a, b" and alone.finals == {0: 50.0}
    d = report.diagnostics(pooled)
    # ES arrivals: p 0.5 and 0.2 -> one of two in [0.4, 0.6]; the RL one (from b): p 0.5
    assert (d["p_mid_es"], d["p_mid_rl"]) == (0.5, 1.0)
    # below f_mu: the two ES arrivals (5 < 10), one told with p > 0.3
    assert d["below_p_gt_0.3"] == 0.5
    # directories that differ in nothing are one setting, labelled by their names
    (both,) = report.settings([first, more], past=20_000)
    assert both.label == "a, b" and sorted(both.finals) == [0, 1, 2]
    # the same seed twice is refused
    with pytest.raises(report.RunError, match=r"seed\(s\) \[0, 1\] in both a and a2"):
        twin = tmp_path / "a2"
        twin.mkdir()
        for name in ("config.json", "metrics.csv", "arrivals.csv"):
            (twin / name).write_text((first / name).read_text())
        report.settings([first, twin], past=20_000)
