"""Sweeps: traced hyper-parameters, many settings as rows of ONE compiled program."""

import csv

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_equal, probe_cfg, probe_flags

from aes_rl import cli, engine, program, run, sweep
from aes_rl.config import HYPER, STRUCTURAL


def one_row(state, i):
    return jax.tree.map(lambda x: x[i : i + 1], state)


def assert_row_equals_alone(state, metrics, i, alone, alone_metrics, exact: bool):
    """Row i of a batched run equals the same setting run alone (one row, un-batched):
    bit for bit when rows run one after another (`map`); to rounding side by side (`vmap`:
    batched kernels may round differently)."""
    row = one_row(state, i)
    if exact:
        assert_trees_equal(row, alone)
        assert_trees_equal(jax.tree.map(lambda x: x[i : i + 1], metrics), alone_metrics)
        return
    for a, b in zip(jax.tree.leaves(row.es), jax.tree.leaves(alone.es)):
        np.testing.assert_allclose(a, b, rtol=1e-2, atol=5e-4)
    for a, b in zip(jax.tree.leaves(row.learner), jax.tree.leaves(alone.learner)):
        if jnp.issubdtype(a.dtype, jnp.floating):  # many Adam steps: compare as vectors
            assert np.linalg.norm(a - b) <= 1e-2 * (np.linalg.norm(b) + 1e-6)
    for name in ("total_steps", "critic_steps", "actor_steps", "arrivals", "n_rl", "n_es"):
        np.testing.assert_array_equal(getattr(row.counters, name), getattr(alone.counters, name))
    np.testing.assert_array_equal(metrics.arrived[i], alone_metrics.arrived[0])
    # each row reports the env steps it needed, whatever path the batch took
    np.testing.assert_array_equal(metrics.env_path[i], alone_metrics.env_path[0])
    np.testing.assert_allclose(metrics.ret[i], alone_metrics.ret[0], rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize(
    "algo,grid,rows",
    [
        (
            "aes-rl",
            dict(mean_rule=["fixed-linear", "baseline-relative"], var_rule=["fixed"]),
            "map",
        ),
        (
            "aes-rl",
            dict(mean_rule=["fixed-sigmoid", "baseline-absolute"], warmup_steps=[20, 40]),
            "vmap",
        ),
        ("p-cem-rl", dict(rl_members=[1, 2], warmup_steps=[100, 200]), "map"),
        ("p-cem-rl", dict(rl_members=[1, 2], warmup_steps=[100, 200]), "vmap"),
        ("td3", dict(critic_lr=[1e-3, 3e-3], policy_delay=[2, 3]), "map"),
        ("td3", dict(critic_lr=[1e-3, 3e-3], policy_delay=[2, 3]), "vmap"),
    ],
)
def test_rows_of_a_sweep_share_one_compile_and_each_equals_its_separate_run(algo, grid, rows):
    base = probe_cfg(algo, num_slots=1 if algo == "td3" else 4, warmup_steps=20)
    expanded = sweep.expand(base, tuple((k, tuple(v)) for k, v in grid.items()), (0, 1))
    cfgs, seeds = [r.cfg for r in expanded], [r.seed for r in expanded]
    n = len(expanded)
    chunk = program.make_train_chunk(cfgs[0], n, 60, rows=rows)
    assert all(program.make_train_chunk(c, n, 60, rows=rows) is chunk for c in cfgs)
    state, metrics = chunk(program.init_batch(cfgs, seeds))
    assert chunk._cache_size() == 1  # every setting: one trace, one compile
    for name, values in grid.items():  # each row carries its own traced values
        got = np.asarray(getattr(state.hp, name))
        want = [getattr(engine.HParams.of(r.cfg), name) for r in expanded]
        np.testing.assert_allclose(got, np.asarray(want))
        assert len(set(got.tolist())) == len(values)
    for i in (0, n - 1):  # the first and the last row, each run alone
        r = expanded[i]
        alone, alone_m = program.make_train_chunk(r.cfg, 1, 60)(program.init_batch(r.cfg, [r.seed]))
        assert_row_equals_alone(state, metrics, i, alone, alone_m, exact=rows == "map")
    if rows != "map" and algo != "td3":
        # The rows' jobs differ, so branches ran for rows that did not need them (td3's rows
        # differ by construction: policy_delay 2 and 3 take the delayed update apart).
        jobs = np.concatenate(
            [
                np.asarray(metrics.arrived).reshape(n, -1),
                np.asarray(state.counters.actor_steps)[:, None],
            ],
            axis=1,
        )
        assert not (jobs == jobs[:1]).all()
    # The settings matter: seed 0 of the first and of the last setting differ.
    a, b = one_row(state, 0), one_row(state, n - 2)
    assert expanded[0].seed == expanded[-2].seed == 0
    leaves = zip(jax.tree.leaves(a.learner), jax.tree.leaves(b.learner))
    assert not all(np.array_equal(x, y) for x, y in leaves)


def test_auto_rows_run_one_after_another_on_a_cpu():
    assert program.row_mode("auto") == ("map" if jax.default_backend() == "cpu" else "vmap")
    with pytest.raises(ValueError, match="rows: unknown 'both'; allowed: auto, map, vmap"):
        program.row_mode("both")


def test_a_structural_difference_is_refused_by_init_batch():
    with pytest.raises(ValueError, match="differ in structure"):
        program.init_batch([probe_cfg(), probe_cfg(batch_size=32)], [0, 0])


def test_traced_fields_never_come_from_the_structure():
    cfg = probe_cfg()
    s = cfg.structure()
    assert all(getattr(s, name) is None for name in HYPER)
    assert all(getattr(s, name) == getattr(cfg, name) for name in STRUCTURAL)
    assert probe_cfg(rho=0.3, mean_rule="fixed-sigmoid").structure() == s
    assert probe_cfg(batch_size=32).structure() != s


@pytest.mark.parametrize(
    "grid,needle",
    [
        ((("batch_size", (32, 64)),), "batch_size fixes the program's shapes"),
        ((("bogus", (1, 2)),), "sweep: unknown field 'bogus'"),
        ((("rho", (0.5, 2.0)),), "rho: must be in [0, 1], got 2.0"),
        ((("rho", ()),), "rho: no values to sweep"),
        ((("rho", (0.5, 0.5)),), "rho: repeated values"),
        ((("rho", (0.1, 0.2)), ("rho", (0.3, 0.4))), "a field is given twice"),
    ],
)
def test_bad_grids_are_one_line_errors_naming_the_field(tmp_path, grid, needle):
    settings = run.RunSettings(str(tmp_path / "r"), steps=900, grid=grid, progress=False)
    with pytest.raises(run.RunError) as err:
        run.train(probe_cfg(), settings)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_a_sweep_run_writes_setting_columns_and_resumes_exactly(tmp_path):
    grid = (("mean_rule", ("fixed-linear", "baseline-relative")), ("rho", (0.3, 0.7)))

    def settings(path, **kw):
        return run.RunSettings(
            str(path), steps=700, seeds=(0, 1), grid=grid, progress=False, eval_episodes=2, **kw
        )

    cfg = probe_cfg()
    whole = run.train(cfg, settings(tmp_path / "whole"))
    part = run.train(cfg, settings(tmp_path / "part", max_chunks=2))
    assert part.interrupted
    rest = run.resume(tmp_path / "part")
    assert_trees_equal(rest.state, whole.state)
    with (tmp_path / "whole" / "metrics.csv").open() as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames[:5] == ["chunk", "seed", "row", "mean_rule", "rho"]
    last = {int(r["row"]): r for r in rows}
    assert len(last) == 8
    assert [(r["mean_rule"], float(r["rho"]), int(r["seed"])) for r in last.values()] == [
        (m, rho, s)
        for m in ("fixed-linear", "baseline-relative")
        for rho in (0.3, 0.7)
        for s in (0, 1)
    ]
    assert sorted(p.name for p in (tmp_path / "whole").glob("policy_row*.npz")) == [
        f"policy_row{i}.npz" for i in range(8)
    ]
    # A changed grid is a different structure of the run: refused in one line.
    with pytest.raises(run.RunError, match="grid"):
        run.train(
            cfg,
            run.RunSettings(
                str(tmp_path / "whole"), steps=700, seeds=(0, 1), grid=grid[:1], progress=False
            ),
        )


def test_the_sweep_command_sweeps_several_values_and_all(tmp_path, capsys):
    argv = [
        "sweep",
        *probe_flags(),
        "--steps",
        "300",
        "--quiet",
        "--run-dir",
        str(tmp_path / "s"),
        "--mean-rule",
        "all",
        "--rho",
        "0.25",
        "0.75",
    ]
    cli.main(argv)
    out = capsys.readouterr().out
    cfg, settings = run.read_run(tmp_path / "s")
    assert settings.grid == (
        ("rho", (0.25, 0.75)),
        ("mean_rule", ("fixed-linear", "fixed-sigmoid", "baseline-absolute", "baseline-relative")),
    ) or settings.grid == (
        ("mean_rule", ("fixed-linear", "fixed-sigmoid", "baseline-absolute", "baseline-relative")),
        ("rho", (0.25, 0.75)),
    )
    assert out.count("seed 0:") == 8 and "mean_rule=fixed-sigmoid" in out
    rows = run.read_metrics(tmp_path / "s")
    assert {(r["mean_rule"], r["rho"]) for r in rows} == {
        (m, rho)
        for m in ("fixed-linear", "fixed-sigmoid", "baseline-absolute", "baseline-relative")
        for rho in (0.25, 0.75)
    }


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--batch-size", "32", "64"], "batch_size fixes the program's shapes"),
        (["--rho", "0.5", "abc"], "rho: expected float values, got 'abc'"),
        (["--rho", "all"], "rho: 'all' is only for fields with choices"),
        (["--mean-rule", "best", "fixed-linear"], "mean_rule: unknown 'best'"),
    ],
)
def test_sweep_command_errors_are_one_line(tmp_path, capsys, argv, needle):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["sweep", *probe_flags(), "--run-dir", str(tmp_path / "s"), *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


# Rows sharded over several devices (and processes): tests/test_hosts.py.
