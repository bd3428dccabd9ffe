"""`aes-rl analyze` and the arrival columns it reads (`families.diagnostics`)."""

import csv

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import probe_cfg, probe_flags

from aes_rl import analyze, cli, program
from aes_rl.es import aes

FIELDS = "chunk,seed,row,tick,slot,return,length,p,is_rl,told"
INFO = ",f_mu,var_before,var_after,mu_shift,tells_during"
METRICS = "chunk,seed,row{swept},total_steps,f_mu\n"

# One row, two slots. Slot 0 arrives at ticks 1, 5 (RL), 8, 10, 12 (RL); slot 1 at 2, 6, 9, 11,
# so a slot's members are drawn at its previous arrival: slot 0's at -1, 1, 5, 8, 10, slot 1's
# at -1, 2, 6, 9. Columns: tick, slot, return, p, is_rl, f_mu, var_before, var_after, mu_shift,
# tells_during.
HAND = [
    (1, 0, 1.0, 0.0, 0, 2.0, 1, 1.0, 0.0, 0),  # ES, below f_mu, p 0
    (2, 1, 3.0, 0.5, 0, 2.0, 1, 2.0, 0.1, 1),  # ES, above
    (5, 0, 4.0, 0.6, 1, 2.5, 2, 4.0, 0.5, 3),  # RL, above
    (6, 1, 1.5, 0.4, 0, 3.0, 1, 2.0, 0.3, 1),  # ES drawn at 2 (before the RL one): other
    (8, 0, 5.0, 0.9, 0, 3.0, 1, 2.0, 0.2, 2),  # ES drawn at 5: 1st after RL
    (9, 1, 2.0, 0.2, 0, 3.0, 1, 0.5, 0.2, 1),  # ES drawn at 6: 2nd after RL, below, p 0.2
    (10, 0, 6.0, 0.55, 0, 3.0, 1, 2.0, 0.4, 2),  # ES drawn at 8: 3rd after RL
    (11, 1, 0.0, 0.45, 0, 3.0, 1, 1.0, 0.1, 1),  # ES drawn at 9: 4th, other; below, p 0.45
    (12, 0, 7.0, 0.3, 1, 4.0, 4, 2.0, 1.5, 5),  # RL, above
]


def write_run(path, arrivals, info=True, swept=(), seeds=(0,)):
    """A run directory with arrivals.csv (rows given as (row, *HAND-like)) and metrics.csv."""
    path.mkdir(parents=True, exist_ok=True)
    lines = [FIELDS + (INFO if info else "")]
    for row, (tick, slot, ret, p, rl, *rest) in arrivals:
        seed = seeds[row % len(seeds)]
        cells = [1, seed, row, tick, slot, ret, 10, p, rl, 1] + (list(rest) if info else [])
        lines.append(",".join(str(c) for c in cells))
    (path / "arrivals.csv").write_text("\n".join(lines) + "\n")
    names = "".join("," + name for name, _ in swept)
    rows = sorted({row for row, _ in arrivals})
    body = ""
    for row in rows:
        values = "".join(f",{vals[row // len(seeds)]}" for _, vals in swept)
        body += f"1,{seeds[row % len(seeds)]},{row}{values},100,0.0\n"
    (path / "metrics.csv").write_text(METRICS.format(swept=names) + body)


def record(records, kind, seed="all", setting=""):
    (r,) = [r for r in records if (r["kind"], r["seed"], r["setting"]) == (kind, seed, setting)]
    return r


def test_a_hand_built_run_gives_the_hand_computed_table(tmp_path):
    write_run(tmp_path, [(0, a) for a in HAND])
    text, paths = analyze.analyze(tmp_path)
    assert [p.name for p in paths] == ["analysis.md", "analysis.csv", "analysis.png"]
    assert all(p.stat().st_size > 0 for p in paths)
    records = analyze.table(analyze.read_arrivals(tmp_path), analyze.settings_of(tmp_path), 3)
    es, rl = record(records, "ES"), record(records, "RL")
    assert dict(record(records, "ES", seed=0), seed="all") == es  # one seed: pooled = per seed
    # (a) ES p sorted: 0, .2, .4, .45, .5, .55, .9 (numpy's linear quantiles: position q * 6)
    assert es["told"] == 7
    assert es["p_q05"] == pytest.approx(0.06)  # 0 + 0.3 * 0.2
    assert es["p_q25"] == pytest.approx(0.3)  # (0.2 + 0.4) / 2
    assert es["p_q50"] == pytest.approx(0.45)
    assert es["p_q75"] == pytest.approx(0.525)  # (0.5 + 0.55) / 2
    assert es["p_q95"] == pytest.approx(0.795)  # 0.55 + 0.7 * 0.35
    assert es["p_in_0.4_0.6"] == pytest.approx(4 / 7)  # .4, .45, .5, .55
    assert rl["told"] == 2 and rl["p_in_0.4_0.6"] == pytest.approx(0.5)  # .6 in, .3 out
    # (b) ES below f_mu: ticks 1 (p 0), 6 (p .4), 9 (p .2), 11 (p .45): 2 of 4 with p > 0.3
    assert es["below_f_mu"] == 4 and es["below_f_mu_p_gt_0.3"] == pytest.approx(0.5)
    assert rl["below_f_mu"] == 0 and np.isnan(rl["below_f_mu_p_gt_0.3"])
    # (c) ES: before all 1, after 1, 2, 2, 2, 2, .5, 1 -> mean 10.5 / 7, median ratio 2
    assert es["var_before"] == pytest.approx(1.0)
    assert es["var_after"] == pytest.approx(1.5)
    assert es["var_ratio_median"] == pytest.approx(2.0)
    assert (rl["var_before"], rl["var_after"]) == pytest.approx((3.0, 3.0))
    assert rl["var_ratio_median"] == pytest.approx(1.25)  # median of 2 and 0.5
    # (d) ES shifts 0, .1, .3, .2, .2, .4, .1; tells 0, 1, 1, 2, 1, 2, 1
    assert es["mu_shift_mean"] == pytest.approx(1.3 / 7)
    assert es["mu_shift_median"] == pytest.approx(0.2)
    assert es["tells_during_mean"] == pytest.approx(8 / 7)
    assert (rl["mu_shift_mean"], rl["tells_during_mean"]) == pytest.approx((1.0, 4.0))
    # (e) after the RL arrival at tick 5: ES drawn at >= 5, first 3 by tick: returns 5, 2, 6;
    # the one at 12 has none after it. Others past tick 5: ticks 6 and 11, returns 1.5 and 0.
    assert (es["es_after_rl"], es["es_other"]) == (3, 2)
    assert es["es_after_rl_return"] == pytest.approx(13 / 3)
    assert es["es_other_return"] == pytest.approx(0.75)
    assert es["es_after_rl_minus_other"] == pytest.approx(13 / 3 - 0.75)
    assert "| - | ES | 7 | 0.06 | 0.3 | 0.45 | 0.525 | 0.795 | 0.5714 |" in text
    with paths[1].open() as f:
        assert len(list(csv.DictReader(f))) == 4  # (all, seed 0) x (ES, RL)


def test_after_counts_the_first_k_members_drawn_after_each_rl_arrival(tmp_path):
    write_run(tmp_path, [(0, a) for a in HAND])
    a = analyze.read_arrivals(tmp_path)
    np.testing.assert_array_equal(analyze.draw_ticks(a), [-1, -1, 1, 2, 5, 6, 8, 9, 10])
    near, other = analyze.after_rl(a, 1)
    assert list(a["tick"][near]) == [8] and list(a["tick"][other]) == [6, 9, 10, 11]


def test_a_sweep_gives_a_panel_row_per_setting_and_per_seed_records(tmp_path):
    # 2 settings (rho) x 2 seeds: rows 0, 1 (rho 0.3, seeds 0, 1) and 2, 3 (rho 0.7)
    arrivals = [(row, a) for row in range(4) for a in HAND]
    write_run(tmp_path, arrivals, swept=[("rho", (0.3, 0.7))], seeds=(0, 1))
    out = tmp_path / "sub" / "diag.png"
    out.parent.mkdir()
    text, paths = analyze.analyze(tmp_path, out)
    assert [p.name for p in paths] == ["diag.md", "diag.csv", "diag.png"]
    a, settings = analyze.read_arrivals(tmp_path), analyze.settings_of(tmp_path)
    groups = analyze.groups(a, settings)
    assert list(groups) == ["rho=0.3", "rho=0.7"]
    assert [sorted(seeds) for seeds in groups.values()] == [[0, 1], [0, 1]]
    records = analyze.table(a, settings, 3)
    assert len(records) == 2 * 3 * 2  # settings x (all, seed 0, seed 1) x kinds
    pooled, one = record(records, "ES", "all", "rho=0.7"), record(records, "ES", 1, "rho=0.7")
    assert pooled["told"] == 2 * one["told"] == 14
    assert pooled["p_q50"] == one["p_q50"] == pytest.approx(0.45)
    assert "| rho=0.3 | ES |" in text and "| rho=0.7 | RL |" in text
    import matplotlib.image

    height, width = matplotlib.image.imread(paths[2]).shape[:2]
    assert (height, width) == (640, 1260)  # 2 rows of 3.2 in, 3 panels of 4.2 in, at 100 dpi


def test_an_older_run_gets_the_p_distribution_and_the_returns_after_rl(tmp_path):
    write_run(tmp_path, [(0, a) for a in HAND], info=False)
    text, _ = analyze.analyze(tmp_path)
    assert "(b)-(d) need the arrivals.csv columns f_mu, var_before" in text
    assert "## (a)" in text and "## (e)" in text
    assert "## (b)" not in text and "## (c)" not in text and "## (d)" not in text


# Falls from a plateau (f): one row, 2 slots (W = 2); looks at f_mu >= 800, falls below 600.
# Columns as HAND's; var, shift and tells are not read by (f).
PLATEAU = [
    (1, 0, 900.0, 0.5, 0, 900.0, 1, 1, 0, 0),  # look, no RL tell before: ES; next 950, no fall
    (2, 1, 900.0, 0.4, 1, 950.0, 1, 1, 0, 0),  # look, RL told with p .4: RL; next 500, a fall
    (3, 0, 300.0, 0.5, 0, 500.0, 1, 1, 0, 0),  # not a look (500)
    (4, 1, 300.0, 0.0, 1, 850.0, 1, 1, 0, 0),  # look; the RL one got p 0: ES; next 820
    (5, 0, 700.0, 0.3, 0, 820.0, 1, 1, 0, 0),  # look, last 2 tells ES: ES; next 590, a fall
    (6, 1, 200.0, 0.2, 0, 590.0, 1, 1, 0, 0),  # not a look
    (7, 0, 990.0, 0.6, 1, 1000.0, 1, 1, 0, 0),  # a look with no next look: not counted
]


def test_falls_from_a_plateau_are_split_by_the_tells_before_them(tmp_path, capsys):
    write_run(tmp_path, [(0, a) for a in PLATEAU])
    a, settings = analyze.read_arrivals(tmp_path), analyze.settings_of(tmp_path)
    look, fell, after_rl = analyze.plateau_looks(a, 800, 600)
    assert list(a["tick"][look]) == [1, 2, 4, 5]
    assert list(a["tick"][fell]) == [2, 5] and list(a["tick"][after_rl & look]) == [2]
    records = analyze.table(a, settings, 3, plateau=(800, 600))
    es, rl = record(records, "ES"), record(records, "RL")
    assert (es["plateau_looks"], es["plateau_falls"]) == (3, 1)
    assert es["plateau_fall_share"] == pytest.approx(1 / 3)
    assert (rl["plateau_looks"], rl["plateau_falls"], rl["plateau_fall_share"]) == (1, 1, 1.0)
    text, _ = analyze.analyze(tmp_path, plateau=(800, 600))
    assert "a look at 800 or above, a fall below 600" in text and "| - | RL | 1 | 1 | 1 |" in text
    assert "## (f)" not in analyze.analyze(tmp_path)[0]  # only when asked for
    assert "plateau_looks" not in analyze.table(a, settings, 3)[0]
    with pytest.raises(SystemExit) as exit_:
        cli.main(["analyze", str(tmp_path), "--plateau", "600", "800"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "plateau" in err and "LOW" in err


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_a_missing_run_or_arrivals_file_is_a_one_line_error(tmp_path, capsys, make):
    target = tmp_path / "nowhere"
    if make == "empty":
        target.mkdir()
    with pytest.raises(SystemExit) as exit_:
        cli.main(["analyze", str(target)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(target) in err


# ------------------------------------------------------------------ the loop's columns


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny AES-RL run (baseline-relative, W = 3) and its arrivals."""
    run_dir = tmp_path_factory.mktemp("analyze") / "run"
    flags = probe_flags(num_slots=3, mean_rule="baseline-relative")
    cli.main(["train", "--algo", "aes-rl", *flags, "--steps", "600", "--run-dir", str(run_dir)])
    return run_dir, analyze.read_arrivals(run_dir)


def test_the_logged_p_is_the_rule_of_the_return_and_the_logged_f_mu(trained):
    run_dir, a = trained
    told = a["told"] == 1
    params = aes.AESParams(
        mean_rule="baseline-relative", var_rule="adaptive", mean_param=probe_cfg().mean_param
    )
    ratio = jax.jit(jax.vmap(lambda r, f: aes.update_ratio(params, r, f)))
    p = np.asarray(ratio(jnp.asarray(a["return"][told]), jnp.asarray(a["f_mu"][told])))
    np.testing.assert_allclose(p, a["p"][told], rtol=1e-6, atol=1e-7)
    assert np.all(np.isfinite(a["f_mu"])) and len(set(a["f_mu"])) > 3


def test_tells_during_counts_the_tells_between_draw_and_tell_and_the_mean_only_moves_then(
    trained,
):
    run_dir, a = trained
    drawn, told = analyze.draw_ticks(a), a["told"] == 1
    # drawn after the tells of its draw tick; measured before the tells of its own tick
    counted = [np.sum(told & (a["tick"] > d) & (a["tick"] < t)) for d, t in zip(drawn, a["tick"])]
    np.testing.assert_array_equal(a["tells_during"], counted)
    assert a["tells_during"].max() > 0
    still = a["tells_during"] == 0
    assert still.any() and np.all(a["mu_shift"][still] == 0)
    assert np.any(a["mu_shift"][~still] > 0)
    # the variance changes only at tells: a tick's "after" is the next arrival tick's "before"
    ticks, first = np.unique(a["tick"], return_index=True)
    np.testing.assert_array_equal(a["var_before"][first][1:], a["var_after"][first][:-1])
    assert np.any(a["var_after"] != a["var_before"])


def test_analyze_on_a_trained_run_writes_the_table_and_the_png(trained, capsys):
    run_dir, _ = trained
    cli.main(["analyze", str(run_dir)])
    out = capsys.readouterr().out
    assert "## (d) ES mean moved during the job" in out and "| - | RL |" in out
    for name in ("analysis.md", "analysis.csv", "analysis.png"):
        assert (run_dir / name).stat().st_size > 0


def test_a_generation_tells_nothing_during_its_members_jobs():
    cfg = probe_cfg("cem-rl", pop_size=4, rl_members=2, warmup_steps=40)
    state = program.init_batch(cfg, [0])
    _, m = program.make_train_chunk(cfg, 1, 300)(state)
    arrived, info = np.asarray(m.arrived[0]), jax.tree.map(lambda x: np.asarray(x[0]), m.info)
    assert arrived.sum() > 8
    assert np.all(info.mu_shift[arrived] == 0) and np.all(info.tells_during[arrived] == 0)
    assert np.all(np.isnan(info.f_mu[arrived]))
    vb, va = info.var_before[arrived], info.var_after[arrived]
    assert np.all(vb > 0) and np.sum(va != vb) >= 2  # the generation's last members tell it
