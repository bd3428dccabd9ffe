"""One front-end convention: the CLI, the experiments and the benchmarks spell settings alike."""

import dataclasses
import importlib
import typing

import pytest

from aes_rl import cli, flags
from aes_rl.config import FIELDS, MEAN_RULES, VAR_RULES, whole_number
from experiments import ablation, paper_comparison, quickstart

BENCHMARKS = (
    "suite",
    "td3_throughput",
    "loop_overhead",
    "slots_scaling",
    "sweep_rows",
    "time_efficiency",
    "td3_curve",
    "learning_comparison",
)
# Spellings the front ends used before they shared their flags; none may come back.
OLD = {"--hidden", "--slots", "--seeds", "--mean-rules", "--var-rules", "--budget", "--modes"}
OLD |= {"--chunk-ticks", "--sweep-budget", "--rows-modes"}


def _benchmark(name):
    return importlib.import_module(f"benchmarks.{name}")


TRAIN = flags.flag_names(cli.train)
FRONT_ENDS = {
    "aes-rl sweep": cli.sweep,
    "quickstart": quickstart.Args,
    "ablation": ablation.Args,
    "paper_comparison": paper_comparison.Args,
    **{f"benchmarks.{b}": _benchmark(b).Args for b in BENCHMARKS},
}


@pytest.mark.parametrize("name", sorted(FRONT_ENDS))
def test_no_front_end_uses_an_old_spelling(name):
    names = flags.flag_names(FRONT_ENDS[name])
    assert len(names) > 5  # the help was read
    assert not names & OLD, f"{name}: {sorted(names & OLD)}"


@pytest.mark.parametrize("name", ["aes-rl sweep", "quickstart", "ablation", "paper_comparison"])
def test_runs_take_every_train_flag(name):
    names = flags.flag_names(FRONT_ENDS[name])
    own = {"--algo", "--run-dir", "--env"}  # fixed algorithm, own output, --envs for several
    missing = TRAIN - own - names
    assert not missing, f"{name} lacks {sorted(missing)}"
    assert "--env" in names or "--envs" in names


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_settings_are_spelled_as_train_spells_them(name):
    names = flags.flag_names(FRONT_ENDS[f"benchmarks.{name}"])
    for flag in ("--quick", "--cache", "--results", "--no-write", "--note"):
        assert flag in names
    shared = names & TRAIN
    if "--actor-hidden" in shared:
        assert "--critic-hidden" in shared  # never one width list for both
    if "--seed" in names and name != "td3_curve":
        assert "--num-seeds" in names
    args = _benchmark(name).parse_args(["--quick", "--no-write"])  # quick budgets apply
    assert args.quick and args.no_write


def test_quick_shrinks_only_the_settings_left_at_their_defaults():
    mod = _benchmark("sweep_rows")
    full = mod.parse_args(["--no-write"])
    quick = mod.parse_args(["--quick", "--no-write"])
    default = mod.Args(results=full.results, no_write=True)
    assert (full.ticks, full.num_rows, full.devices) == (
        default.ticks,
        default.num_rows,
        default.devices,
    )
    assert quick.ticks < full.ticks and max(quick.num_rows) < max(full.num_rows)
    assert len(quick.devices) < len(full.devices)
    given = mod.parse_args(["--quick", "--no-write", "--num-rows", "1", "8", "--devices"])
    assert (given.ticks, given.num_rows, given.devices) == (quick.ticks, (1, 8), ())
    envs = _benchmark("time_efficiency").parse_args(["--quick", "--no-write"]).envs
    assert len(envs) == 1  # one env on quick budgets


def test_run_flags_become_run_settings():
    f = flags.RunFlags(steps=700, seed=3, num_seeds=2, no_buffer=True, quiet=True, rows="map")
    s = f.settings("runs/x", grid=(("rho", (0.2, 0.4)),))
    got = (s.steps, s.seeds, s.save_buffer, s.progress, s.rows)
    assert got == (700, (3, 4), False, False, "map")
    assert s.grid == (("rho", (0.2, 0.4)),)
    with pytest.raises(flags.UsageError, match="num_seeds"):
        _ = flags.RunFlags(num_seeds=0).seeds


def test_the_ablation_sweeps_every_rule_by_default_and_a_flag_narrows_it():
    args = flags.parse(ablation.Args, [], "ablation")
    single, grid = flags.sweep_values(args.overrides)
    assert dict(grid) == {"mean_rule": MEAN_RULES, "var_rule": VAR_RULES}
    assert single["actor_hidden"] == (64, 64) and single["critic_hidden"] == (64, 64)
    args = flags.parse(ablation.Args, ["--var-rule", "fixed", "--rho", "0.2", "0.4"], "ablation")
    single, grid = flags.sweep_values(args.overrides)
    assert dict(grid) == {"mean_rule": MEAN_RULES, "rho": (0.2, 0.4)}
    assert single["var_rule"] == "fixed"


def test_experiment_defaults_are_their_own_and_overrides_reach_the_config():
    args = flags.parse(quickstart.Args, ["--num-slots", "3"], "quickstart")
    assert args.flags.steps == 30_000
    chosen = flags.chosen(args.overrides)
    assert chosen["num_slots"] == 3 and chosen["buffer_size"] == 100_000
    assert "mean_rule" not in chosen  # the preset decides
    args = flags.parse(paper_comparison.Args, ["--num-slots", "2", "--envs", "probe"], "cmp")
    cfgs = paper_comparison.configs(args)
    assert cfgs["probe", "aes-rl"].num_slots == 2
    assert cfgs["probe", "cem-rl"].num_slots == 1  # a one-slot algorithm keeps its W


def test_whole_numbers_may_be_written_as_researchers_write_budgets():
    args = flags.parse(quickstart.Args, ["--steps", "1e5", "--warmup-steps", "2_000",
                                         "--num-slots", "4"], "quickstart")
    assert args.flags.steps == 100_000 and isinstance(args.flags.steps, int)
    chosen = flags.chosen(args.overrides)
    assert chosen["warmup_steps"] == 2000 and chosen["num_slots"] == 4
    assert "buffer_size" in chosen and "mean_rule" not in chosen  # None still means the preset
    # (cli.sweep itself would run the sweep: its overrides class is parsed alone)
    sweep = flags.parse(flags.SweepOverrides, ["--critic-job-steps", "1e3", "1"], "sweep")
    assert dict(flags.sweep_values(sweep)[1]) == {"critic_job_steps": (1000, 1)}
    bench = _benchmark("time_efficiency").parse_args(["--steps", "2e4", "--actor-hidden", "32",
                                                      "3_2", "--no-write"])
    assert (bench.steps, bench.actor_hidden) == (20_000, (32, 32))
    for bad in ("2.5", "abc", "nan", "inf", "1e400"):
        with pytest.raises(ValueError, match="expected a whole number"):
            whole_number(bad)


@pytest.mark.parametrize(
    ("module", "argv", "message"),
    [
        (quickstart, ["--steps", "abc"], "--steps: expected a whole number, got 'abc'"),
        (quickstart, ["--num-slots", "2.5"], "--num-slots: expected a whole number, got '2.5'"),
        (quickstart, ["--num-seeds", "0"], "num_seeds/seed: need num_seeds >= 1"),
        (quickstart, ["--env", "cartpole"], "cartpole"),
        (ablation, ["--num-slots", "2", "3"], "num_slots"),
        (paper_comparison, ["--rho", "7"], "rho: must be in [0, 1], got 7.0"),
    ],
)
def test_experiment_errors_are_one_line_before_any_work(module, argv, message, capsys, tmp_path):
    out = ["--out-dir" if module is not quickstart else "--run-dir", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as exit_:
        module.main([*argv, *out])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{module.PROG}: error:") and message in err[0]
    assert not (tmp_path / "o").exists()  # nothing written


def _arg(overrides_cls, name):
    """The tyro.conf.arg of an overrides field (its help text)."""
    return typing.get_type_hints(overrides_cls, include_extras=True)[name].__metadata__[-1]


def test_help_and_sweep_eligibility_are_read_from_the_field_declarations():
    for f in dataclasses.fields(flags.Overrides):
        spec = FIELDS[f.name]
        assert _arg(flags.Overrides, f.name).help.startswith(spec.help)
        if f.name in ("actor_hidden", "critic_hidden") or f.type == "bool":
            continue  # no sweep form: widths are structure, booleans are flags
        swept = "Several values are swept" in _arg(flags.SweepOverrides, f.name).help
        assert swept == spec.traced, f.name
    assert {f.name for f in dataclasses.fields(flags.Overrides)} == set(FIELDS) - flags.OWN
