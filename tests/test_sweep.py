"""Sweeps: traced hyper-parameters, many settings as rows of ONE compiled program."""

import csv
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_equal, probe_cfg, probe_flags, sub_jaxprs

from aes_rl import cli, loop, run, sweep
from aes_rl.config import HYPER, STRUCTURAL


def one_row(state, i):
    return jax.tree.map(lambda x: x[i : i + 1], state)


def assert_row_equals_alone(state, metrics, i, alone, alone_metrics, exact: bool):
    """Row i of a batched run equals the same setting run alone (one row, un-batched):
    bit for bit when rows run one after another (`map`); to rounding side by side (`vmap`,
    `select`: batched kernels may round differently)."""
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
        (
            "aes-rl",
            dict(mean_rule=["fixed-sigmoid", "baseline-absolute"], warmup_steps=[20, 40]),
            "select",
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
    chunk = loop.make_train_chunk(cfgs[0], n, 60, rows=rows)
    assert all(loop.make_train_chunk(c, n, 60, rows=rows) is chunk for c in cfgs)
    state, metrics = chunk(loop.init_batch(cfgs, seeds))
    assert chunk._cache_size() == 1  # every setting: one trace, one compile
    for name, values in grid.items():  # each row carries its own traced values
        got = np.asarray(getattr(state.hp, name))
        want = [getattr(loop.HParams.of(r.cfg), name) for r in expanded]
        np.testing.assert_allclose(got, np.asarray(want))
        assert len(set(got.tolist())) == len(values)
    for i in (0, n - 1):  # the first and the last row, each run alone
        r = expanded[i]
        alone, alone_m = loop.make_train_chunk(r.cfg, 1, 60)(loop.init_batch(r.cfg, [r.seed]))
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


def _conds(jaxpr, branches: int) -> int:
    """`cond`s with this many branches anywhere in a jaxpr (`lax.cond` has two)."""
    n = 0
    for eqn in jaxpr.eqns:
        n += eqn.primitive.name == "cond" and len(eqn.params["branches"]) == branches
        n += sum(_conds(sub, branches) for sub in sub_jaxprs(eqn))
    return n


# One algorithm per family: the tick's branches are the family's and the loop's.
@pytest.mark.parametrize("algo", ["aes-rl", "p-cem-rl", "td3"])
def test_rows_side_by_side_keep_every_branch_of_the_tick(algo):
    """Under `vmap` a cond on a row's predicate becomes a select: every row would pay every
    branch (job assignment, tell, env resets, barriers) every tick. Side-by-side rows keep each
    branch a branch, entered for the batch when some row needs it (`loop.row_cond`): a cond,
    or a three-way switch where the branch has its own copy for ticks every row takes it (a
    branch nested in such a one is then counted twice)."""
    cfg = probe_cfg(algo, num_slots=1 if algo == "td3" else 4, warmup_steps=20)
    one_state = loop.init_batch(cfg, [0])
    state = loop.init_batch(cfg, [0, 1])
    alone = jax.make_jaxpr(loop.make_train_chunk(cfg, 1, 3))(one_state)
    rows = jax.make_jaxpr(loop.make_train_chunk(cfg, 2, 3, rows="vmap"))(state)
    assert _conds(alone.jaxpr, 3) == 0
    assert _conds(rows.jaxpr, 2) + _conds(rows.jaxpr, 3) >= _conds(alone.jaxpr, 2) > 0
    assert _conds(rows.jaxpr, 3) > 0  # the critic's steps: every row's branch (all_rows)
    # What a plain vmap of the tick (`select`) does instead (the checks above can fail):
    plain = jax.make_jaxpr(loop.make_train_chunk(cfg, 2, 3, rows="select"))(state)
    assert _conds(plain.jaxpr, 2) == _conds(plain.jaxpr, 3) == 0


def test_row_cond_enters_its_branch_only_when_some_row_needs_it():
    s = dataclasses.replace(loop.build(probe_cfg()), row_axis=loop.ROW_AXIS)
    entered = []

    def double(x):
        jax.debug.callback(lambda: entered.append(1))
        return 2.0 * x

    def rows(pred, x):
        return loop.row_cond(s, pred, double, lambda v: v, x)

    f = jax.jit(jax.vmap(rows, axis_name=loop.ROW_AXIS))
    x = jnp.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(f(jnp.array([False, False, False]), x), x)
    jax.effects_barrier()
    assert not entered  # no row needed it: not run
    np.testing.assert_array_equal(f(jnp.array([False, True, False]), x), [1.0, 4.0, 3.0])
    jax.effects_barrier()
    assert entered  # one row needed it: run for the batch, the others keep their own

    # A branch every row takes most ticks (all_rows) has a third way, without the select:
    def every(pred, x):
        return loop.row_cond(s, pred, double, lambda v: v, x, all_rows=True)

    g = jax.jit(jax.vmap(every, axis_name=loop.ROW_AXIS))
    for pred in ([False, False, False], [True, False, True], [True, True, True]):
        expect = np.where(pred, 2.0 * np.asarray(x), x)
        np.testing.assert_array_equal(g(jnp.array(pred), x), expect)
    switch = [
        e
        for e in jax.make_jaxpr(jax.vmap(every, axis_name=loop.ROW_AXIS))(
            jnp.array([True, True, True]), x
        ).eqns
        if e.primitive.name == "cond"
    ]
    assert len(switch) == 1 and len(switch[0].params["branches"]) == 3
    prims = [{e.primitive.name for e in b.jaxpr.eqns} for b in switch[0].params["branches"]]
    assert "select_n" in prims[1] and "select_n" not in prims[2]  # some rows / all rows

    # A masked branch (it masks its own writes per slot) runs for the batch without a select:
    def masked(pred, x):
        return loop.row_cond(
            s, pred, lambda v: jnp.where(pred, 2.0 * v, v), lambda v: v, x, masked=True
        )

    h = jax.vmap(masked, axis_name=loop.ROW_AXIS)
    for pred in ([False, False, False], [True, False, True]):
        expect = np.where(pred, 2.0 * np.asarray(x), x)
        np.testing.assert_array_equal(jax.jit(h)(jnp.array(pred), x), expect)
    (cond,) = [
        e
        for e in jax.make_jaxpr(h)(jnp.array([True, False, True]), x).eqns
        if e.primitive.name == "cond"
    ]
    prims = [{e.primitive.name for e in b.jaxpr.eqns} for b in cond.params["branches"]]
    assert len(prims) == 2 and "cond" not in prims[1]  # no per-row cond (a select) inside
    plain = dataclasses.replace(s, row_axis=None)  # one row: a plain cond
    assert (
        float(jax.jit(lambda p, v: loop.row_cond(plain, p, double, lambda u: u, v))(True, 3.0))
        == 6.0
    )


def _bits_equal(a, b) -> jax.Array:
    """Whether two pytrees hold the same bits (NaNs and signed zeros included)."""

    def leaf(x, y):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        if jnp.issubdtype(x.dtype, jnp.floating):
            kind = {2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint64}[x.dtype.itemsize]
            x, y = jax.lax.bitcast_convert_type(x, kind), jax.lax.bitcast_convert_type(y, kind)
        return jnp.array_equal(x, y)

    return jnp.all(jnp.stack([leaf(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]))


# The masked branches of the tick (`row_cond(..., masked=True)`): the tells, job assignment,
# env and side-episode resets, side-episode steps, actor steps and the member/mean copies of
# advance_phases. Both families that use them, sequential and parallel mean evaluations.
@pytest.mark.parametrize(
    "algo,kw",
    [
        ("aes-rl", {}),
        ("aes-rl", dict(mean_eval="parallel")),
        ("p-cem-rl", dict(pop_size=4, rl_members=2)),
    ],
)
def test_every_masked_branch_leaves_a_row_untouched_where_its_predicate_is_false(
    monkeypatch, algo, kw
):
    """Side by side, a masked branch runs for every row without the per-row select, so a row
    that did not need it keeps what the branch computed for it. That is right only if the
    branch changes nothing (bit for bit) where the row's predicate is False; here every masked
    branch of real ticks is run both ways on its operand whenever its predicate is False."""
    seen = []
    real = loop.row_cond

    def checked(s, pred, true_fn, false_fn, operand, all_rows=False, masked=False):
        if masked:
            same = _bits_equal(true_fn(operand), false_fn(operand))
            jax.debug.callback(lambda p, ok: seen.append((bool(p), bool(ok))), pred, same)
        return real(s, pred, true_fn, false_fn, operand, all_rows=all_rows, masked=masked)

    s = loop.build(probe_cfg())
    bad = checked(s, jnp.array(False), lambda v: v + 1.0, lambda v: v, jnp.ones(3), masked=True)
    jax.effects_barrier()
    assert seen == [(False, False)] and float(bad[0]) == 1.0  # the check can fail
    seen.clear()
    monkeypatch.setattr(loop, "row_cond", checked)
    # A buffer size no other test uses: the programs are traced here, with the checked
    # row_cond, and no other test's cached programs are dropped or reused.
    cfg = probe_cfg(algo, num_slots=4, warmup_steps=20, buffer_size=3_999, **kw)
    jax.block_until_ready(loop.make_train_chunk(cfg, 1, 80)(loop.init_batch(cfg, [0])))
    jax.effects_barrier()
    monkeypatch.undo()
    skipped = [ok for pred, ok in seen if not pred]
    assert len(skipped) > 50 and any(pred for pred, _ in seen)
    assert all(skipped)


def test_auto_rows_run_one_after_another_on_a_cpu():
    assert loop.row_mode("auto") == ("map" if jax.default_backend() == "cpu" else "vmap")
    with pytest.raises(ValueError, match="rows: unknown 'both'; allowed: auto, map, vmap, select"):
        loop.row_mode("both")


def test_a_structural_difference_is_refused_by_init_batch():
    with pytest.raises(ValueError, match="differ in structure"):
        loop.init_batch([probe_cfg(), probe_cfg(batch_size=32)], [0, 0])


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
