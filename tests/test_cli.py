"""The `aes-rl` command line and the experiment modules, as a new user meets them."""

import csv
import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import probe_flags
from PIL import Image

from aes_rl import algorithms, cli

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROBE = probe_flags()


def call(capsys, *argv):
    """Run the CLI in-process: (exit code, stdout, stderr)."""
    try:
        cli.main(list(argv))
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["train", "--algo", "foo"], "invalid choice 'foo' for argument '--algo'"),
        (["train", "--env", "cartpole"], "'--env'"),
        (["train", "--num-slots", "-1"], "num_slots: must be in [1, 2^31-1], got -1"),
        (["train", "--num-slots", "abc"], "--num-slots"),
        (["train", "--steps", "100"], "steps: budget 100 is smaller than the warm-up"),
        (["train", "--mean-rule", "best"], "mean_rule: unknown 'best'; allowed: fixed-linear"),
        (["train", "--backend", "bullet"], "'--backend'"),
        (["train", "--bogus", "3"], "Unrecognized options: --bogus"),
        (["train", "--env", "swimmer", "--backend", "spring"], "backend: swimmer exists only on"),
        (["train", "--env", "probe", "--backend", "mjx"], "backend: probe is a pure-JAX test env"),
        (["train", "--negative-ratio", "2"], "negative_ratio: must be in [0, 1], got 2.0"),
        (["train", "--pop-control-k", "-1"], "pop_control_k: must be in [0, 1e+06]"),
        (["train", "--fixed-n", "0.5"], "fixed_n: must be in [1, 1e+12], got 0.5"),
        (["train", "--warmup-steps", "0"], "warmup_steps: must be in [1, 2^31-1], got 0"),
        (["train", "--n-mean-evals", "0"], "n_mean_evals: aes-rl compares each return"),
        (["train", "--algo", "p-cem-rl", "--es", "evosax:Foo"], "es: unknown 'evosax:Foo'"),
        (["train", "--critic-lr", "nan"], "critic_lr: must be finite and in (0, 1], got nan"),
        (["train", "--keep", "0"], "keep: must be an int in [1, 2^31-1], got 0"),
        (["train", "--cost-model", "gpu"], "cost_model: unknown 'gpu'; allowed: paper, device"),
        (["train", "--rows", "both"], "'--rows'"),
        (["train", "--parallel-critic"], "parallel_critic: only p-cem-rl has a parallel-critic"),
        (
            ["train", "--cost-model", "paper", "--actor-steps-per-tick", "2"],
            "cost_model: 'paper' fixes the rates at (10.0, 1.0, 1.0)",
        ),
        (["train", "--env-steps-per-tick", "0"], "env_steps_per_tick: must be in [0.001, 1000]"),
        (["resume", "NOWHERE"], "holds no run (no config.json)"),
        (["eval", "NOWHERE"], "neither a policy file nor a run directory"),
        (["eval", "NOWHERE", "--seed", "-1"], "seed: must be >= 0, got -1"),
        (["train", "--critic-job-steps", "0"], "critic_job_steps: must be in [1, 2^31-1], got 0"),
        (["sweep", "--env", "probe", "--rho"], "rho: give at least one value"),
        (["sweep", "--mean-rule", "all", "bogus"], "mean_rule: 'all' stands alone"),
        (["plot"], "run_dirs: give at least one run directory"),
        (["resume", "--run-dir", "NOWHERE"], "resume: the run directory is positional, not --"),
        (["plot", "--run-dirs=NOWHERE"], "plot: the run directory is positional, not --run-dirs"),
        # a directory that merely looks like the flag, after `--`, is a path like any other
        (["resume", "--", "--run-dir"], "holds no run (no config.json)"),
        (["plot", "NOWHERE", "--out", "/proc/none/x.png"], "out: no directory /proc/none"),
        (["render", "NOWHERE", "--out", "/proc/none/x.html"], "out: no directory /proc/none"),
    ],
)
def test_argument_errors_are_one_line_exit_2_and_write_nothing(
    capsys, tmp_path, monkeypatch, argv, needle
):
    monkeypatch.chdir(tmp_path)
    code, out, err = call(capsys, *[a.replace("NOWHERE", str(tmp_path / "none")) for a in argv])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aes-rl: error: "), err
    assert needle in lines[0]
    assert list(tmp_path.iterdir()) == []  # nothing written (no runs/ directory either)


def test_unwritable_run_directory_is_refused(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = call(
        capsys,
        "train",
        "--algo",
        "td3",
        *PROBE,
        "--steps",
        "300",
        "--run-dir",
        str(blocker / "run"),
    )
    assert code == 2 and err.startswith("aes-rl: error: run_dir: cannot write to")
    assert blocker.read_text() == "x"


def test_a_run_that_cannot_be_restored_says_so_in_a_few_lines_and_keeps_its_record(
    capsys, tmp_path
):
    import shutil

    run_dir = tmp_path / "r"
    code, _, _ = call(capsys, "train", *PROBE, "--steps", "300", "--run-dir", str(run_dir))
    assert code == 0
    for state in (run_dir / "checkpoints").glob("*/state"):
        shutil.rmtree(state)
    record = (run_dir / "config.json").read_text()
    code, _, err = call(capsys, "resume", str(run_dir), "--steps", "600")
    lines = err.strip().splitlines()
    assert code == 2 and lines[-1].startswith("aes-rl: error: resume: none of the checkpoints")
    assert all(line.startswith("aes-rl: warning: checkpoint ") for line in lines[:-1]), lines
    assert (run_dir / "config.json").read_text() == record  # the budget is still 300


def test_help_documents_every_option(capsys):
    code, out, _ = call(capsys, "train", "--help")
    assert code == 0
    for option in (
        "--algo",
        "--env",
        "--backend",
        "--steps",
        "--seed",
        "--num-seeds",
        "--run-dir",
        "--num-slots",
        "--mean-rule",
        "--var-rule",
        "--mean-param",
        "--actor-hidden",
        "--n-mean-evals",
        "--no-buffer",
        "--tensorboard",
    ):
        assert option in out, option
    assert "(default: None)" not in out and "None}" not in out
    assert "--backend {generalized,positional,spring,mjx}" in out
    assert "--mean-rule {fixed-linear,fixed-sigmoid,baseline-absolute,baseline-relative}" in out
    text = " ".join(out.replace("│", " ").split())
    # meaning, allowed range and the per-preset default of a hyper-parameter
    assert "Gain k of the population control" in text and "Allowed: in [0, 1e+06]" in text
    assert "(default: 200000; 1000000 for p-cem-rl, cem-rl, td3)" in text
    assert "(default: halfcheetah 500, hopper 50, walker2d 200" in text
    for command in ("resume", "eval", "render", "plot", "bench"):
        code, out, _ = call(capsys, command, "--help")
        assert code == 0 and "usage: aes-rl " + command in out


def test_algo_takes_a_newly_registered_algorithm_and_names_the_allowed_ones(capsys, monkeypatch):
    runs = []
    monkeypatch.setattr(cli, "_run", lambda algo, env, *rest: runs.append((algo, env)))
    algorithms.register(dataclasses.replace(algorithms.get("aes-rl"), name="my-aes"))
    try:
        code, out, _ = call(capsys, "train", "--algo", "my-aes", "--help")
        assert code == 0 and "one-plus-one,p-cem-rl,cem-rl,td3,my-aes}" in out
        assert call(capsys, "train", "--algo", "my-aes", "--env", "probe")[0] == 0
        assert runs == [("my-aes", "probe")]
        code, _, err = call(capsys, "train", "--algo", "nope")
        assert code == 2 and len(err.strip().splitlines()) == 1
        assert "invalid choice 'nope' for argument '--algo'" in err and "'my-aes'" in err
    finally:
        algorithms.unregister("my-aes")
    code, _, err = call(capsys, "train", "--algo", "my-aes")
    assert code == 2 and "invalid choice 'my-aes'" in err and "'td3'" in err
    assert runs == [("my-aes", "probe")]


def test_train_resume_eval_plot_end_to_end(capsys, tmp_path):
    run_dir = tmp_path / "run"
    code, out, err = call(
        capsys,
        "train",
        "--algo",
        "aes-rl",
        *PROBE,
        "--steps",
        "300",
        "--seed",
        "0",
        "--num-seeds",
        "2",
        "--run-dir",
        str(run_dir),
        "--tensorboard",
    )
    assert code == 0, err
    assert "finished" in out and "seed 1:" in out
    with (run_dir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["seed"] for r in rows} == {"0", "1"}
    assert int(rows[-1]["total_steps"]) >= 300
    events = b"".join(p.read_bytes() for p in (run_dir / "tb").rglob("events.*"))
    for tag in (b"test/mean", b"train/individuals", b"train/p"):
        assert tag in events
    # arrivals carry the counted steps of their tick: within the chunk's steps, in tick order
    with (run_dir / "arrivals.csv").open() as f:
        arrivals = list(csv.DictReader(f))
    end = {(r["chunk"], r["seed"]): int(r["total_steps"]) for r in rows}
    for seed in ("0", "1"):
        mine = sorted((a for a in arrivals if a["seed"] == seed), key=lambda a: int(a["tick"]))
        steps = [int(a["total_steps"]) for a in mine]
        assert steps == sorted(steps) and steps[-1] <= end[mine[-1]["chunk"], seed]
        first = [a for a in mine if a["chunk"] == "2"][0]
        assert int(first["total_steps"]) > end["1", seed]  # after chunk 1 ended
    code, out, err = call(capsys, "resume", str(run_dir), "--steps", "500", "--quiet")
    assert code == 0, err
    with (run_dir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert int(rows[-1]["total_steps"]) >= 500
    assert len({(r["chunk"], r["seed"]) for r in rows}) == len(rows)  # no duplicated rows
    code, out, err = call(capsys, "eval", str(run_dir), "--episodes", "3")
    assert code == 0, err
    assert out.count("return") == 2 and "over 3 episodes" in out
    png = tmp_path / "curves.png"
    code, out, err = call(capsys, "plot", str(run_dir), str(run_dir), "--out", str(png))
    assert code == 0, err
    with Image.open(png) as img:
        assert img.size[0] > 300 and len(np.unique(np.asarray(img.convert("L")))) > 10
    code, _, err = call(capsys, "plot", str(run_dir), "--metric", "nope", "--out", str(png))
    assert code == 2 and "metric: unknown 'nope'" in err


def test_progress_line_shows_steps_rate_f_mu_and_eta(capsys, tmp_path):
    code, _, err = call(
        capsys,
        "train",
        "--algo",
        "td3",
        *[a for a in PROBE if a != "--quiet"],
        "--steps",
        "300",
        "--run-dir",
        str(tmp_path / "r"),
    )
    assert code == 0
    lines = err.strip().splitlines()
    for part in ("steps 3", "/300", "ticks/s", "f_mu", "ETA"):
        assert part in lines[-1]
    assert "100.0%" in lines[-1]
    assert "ETA ? (measuring)" in lines[0]  # the first chunk (compile) gives no rate sample


def test_quickstart_end_to_end_on_a_tiny_budget(tmp_path, capsys):
    from experiments import quickstart

    run_dir = quickstart.main(
        ["--env", "probe", "--steps", "700", "--run-dir", str(tmp_path / "qs"), "--quiet"]
    )
    assert (run_dir / "curve.png").stat().st_size > 10_000
    assert any((run_dir / "checkpoints").iterdir())
    assert (run_dir / "policy_seed0.npz").exists()
    out = capsys.readouterr().out
    assert "mean-policy return" in out


@pytest.mark.parametrize(
    "module,argv,needle",
    [
        ("quickstart", ["--run-dir", "BLOCKED/run"], "run_dir: cannot write to"),
        ("ablation", ["--out-dir", "BLOCKED/out"], "out_dir: cannot write to"),
        ("ablation", ["--steps", "100"], "steps: budget 100 is smaller than the warm-up"),
        ("paper_comparison", ["--algos"], "algos: give at least one"),
        ("paper_comparison", ["--envs", "probe", "--steps", "100"], "steps: budget 100"),
    ],
)
def test_experiment_errors_are_one_line_before_any_work(
    tmp_path, capsys, monkeypatch, module, argv, needle
):
    import importlib

    monkeypatch.chdir(tmp_path)
    (tmp_path / "BLOCKED").write_text("x")
    mod = importlib.import_module(f"experiments.{module}")
    with pytest.raises(SystemExit) as exit_:
        mod.main([a.replace("BLOCKED", str(tmp_path / "BLOCKED")) for a in argv])
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["BLOCKED"]  # no runs/ directory


def test_an_experiment_refuses_a_directory_that_holds_no_run(tmp_path, capsys):
    from experiments import quickstart

    (tmp_path / "qs").mkdir()
    (tmp_path / "qs" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as exit_:
        quickstart.main(["--env", "probe", "--steps", "700", "--run-dir", str(tmp_path / "qs")])
    assert exit_.value.code == 2
    assert "is not empty and holds no run" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "qs").iterdir()] == ["notes.txt"]


def test_paper_comparison_and_ablation_write_tables(tmp_path, capsys):
    from experiments import ablation, paper_comparison

    common = [
        *("--steps", "600", "--num-seeds", "2", "--num-slots", "2", "--quiet"),
        *("--actor-hidden", "16", "16", "--critic-hidden", "16", "16"),
    ]
    path = paper_comparison.main(
        ["--envs", "probe", "--algos", "aes-rl", "td3", "--out-dir", str(tmp_path / "cmp"), *common]
    )
    text = path.read_text()
    assert "| aes-rl | 2 |" in text and "| td3 | 2 |" in text
    assert (tmp_path / "cmp" / "probe.png").exists()
    path = ablation.main(
        [
            "--env",
            "probe",
            "--mean-rule",
            "fixed-linear",
            "baseline-relative",
            "--var-rule",
            "adaptive",
            "--out-dir",
            str(tmp_path / "abl"),
            *common,
        ]
    )
    text = path.read_text()
    assert "| fixed-linear + adaptive | 2 |" in text
    assert "| baseline-relative + adaptive | 2 |" in text
    finals = [
        float(line.split("|")[4].split("+-")[0])
        for line in text.splitlines()
        if line.startswith("| fixed") or line.startswith("| baseline")
    ]
    assert len(finals) == 2 and all(np.isfinite(finals))


def test_a_policy_file_holding_pickles_is_refused_without_suggesting_to_load_them(capsys, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, params=np.array([{"a": 1}], dtype=object), meta=np.array("{}"))
    code, _, err = call(capsys, "eval", str(bad))
    assert code == 2
    assert err.strip() == (
        f"aes-rl: error: policy: cannot read {bad}: not a policy file (a plain .npz archive; "
        "pickled data is never loaded)"
    )


def test_tensorboard_tags_arrivals_with_counted_steps_as_the_authors_do():
    from aes_rl import tensorboard

    class Writer:
        def __init__(self):
            self.calls = []

        def add_scalar(self, tag, value, step):
            self.calls.append((tag, value, step))

        def flush(self):
            pass

    w = Writer()
    row = dict(row=0, total_steps=1200, eval_mean=5.0, f_mu=1.0, utilisation=1.0, var_mean=0.1)
    arrival = dict(row=0, tick=37, total_steps=1150, p=0.25, **{"return": 3.0})
    tensorboard.write({0: w}, [row], [arrival])
    assert ("train/individuals", 3.0, 1150) in w.calls and ("train/p", 0.25, 1150) in w.calls
    assert ("test/mean", 5.0, 1200) in w.calls
    assert all(step != 37 for _, _, step in w.calls)  # never the tick


def test_eval_leaves_nonfinite_episodes_out_and_counts_them(capsys, tmp_path):
    from helpers import probe_cfg

    from aes_rl import checkpoint, program

    cfg = probe_cfg(env_kwargs=(("nan_prob", 0.5),))
    flat = np.asarray(program.build(cfg).actor.init_flat(__import__("jax").random.key(0)))
    path = checkpoint.export_policy(tmp_path / "p.npz", cfg, flat, seed=0)
    code, out, err = call(capsys, "eval", str(path), "--episodes", "16")
    assert code == 0, err
    assert "with a non-finite return left out" in out  # about half of 16 episodes
    mean = float(out.split("return ")[1].split(" +-")[0])
    assert np.isfinite(mean) and mean < 0  # the probe's finite episodes score below 0
