"""Checkpoint, exact resume and interruption safety (orbax)."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import assert_trees_equal, probe_cfg, wait_for

from aes_rl import checkpoint, program, run

HERE = Path(__file__).parent


def settings(path, **kw):
    base = dict(steps=900, seeds=(0,), progress=False, eval_episodes=2)
    base.update(kw)
    return run.RunSettings(str(path), **base)


def metric_rows(path):
    """Rows without the wall-clock; NaN (td3's f_mu) as a string, so equal rows compare equal."""
    return [
        {k: ("nan" if v != v else v) for k, v in r.items() if k != "wall_time"}
        for r in run.read_metrics(path)
    ]


@pytest.mark.parametrize("algo", ["aes-rl", "td3"])
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, algo):
    cfg = probe_cfg(algo)
    whole = run.train(cfg, settings(tmp_path / "whole"))
    part = run.train(cfg, settings(tmp_path / "part", max_chunks=3))
    assert part.interrupted and part.chunks == 3
    rest = run.resume(tmp_path / "part")
    assert rest.chunks == whole.chunks > 3
    assert_trees_equal(rest.state, whole.state)
    assert metric_rows(tmp_path / "part") == metric_rows(tmp_path / "whole")


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    cfg = probe_cfg()
    run.train(cfg, settings(tmp_path, max_chunks=3, keep=3))
    ckpt = checkpoint.Checkpointer(tmp_path / "checkpoints")
    assert ckpt.steps() == [1, 2, 3]
    for f in (tmp_path / "checkpoints" / "3" / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(b"garbage")  # every file of the newest state is destroyed
    template = program.init_batch(cfg, [0])
    with pytest.warns(UserWarning, match="checkpoint 3 is corrupt"):
        chunk, state, _ = ckpt.restore_latest(template)
    assert chunk == 2
    assert int(state.counters.ticks[0]) == 2 * cfg.ticks_per_chunk
    # the unreadable checkpoint is set aside (not deleted), so the chunk can be saved again
    assert ckpt.steps() == [1, 2]
    assert len(list((tmp_path / "corrupt_checkpoints").iterdir())) == 1
    # the run resumes from chunk 2 and its metrics keep no row of the lost chunk 3 twice
    out = run.resume(tmp_path, max_chunks=1)
    assert out.chunks == 3
    assert [r["chunk"] for r in run.read_metrics(tmp_path)] == [1, 2, 3]


def test_no_valid_checkpoint_is_a_clear_error(tmp_path):
    cfg = probe_cfg()
    run.train(cfg, settings(tmp_path, max_chunks=1))
    shutil.rmtree(tmp_path / "checkpoints" / "1" / "state")
    with pytest.raises(checkpoint.CheckpointError, match="none of the checkpoints"):
        with pytest.warns(UserWarning, match="checkpoint 1 is corrupt or incomplete"):
            run.resume(tmp_path)
    assert (tmp_path / "checkpoints" / "1").exists()  # nothing set aside when none restored


def test_structural_config_change_is_refused_naming_the_fields(tmp_path):
    run.train(probe_cfg(), settings(tmp_path, max_chunks=1))
    before = (tmp_path / "config.json").read_text()
    with pytest.raises(run.RunError, match=r"num_slots \(stored 5, requested 3\).*actor_hidden"):
        run.train(probe_cfg(num_slots=3, actor_hidden=(8,)), settings(tmp_path))
    assert (tmp_path / "config.json").read_text() == before  # nothing overwritten


def test_buffer_can_be_left_out_and_resume_says_so(tmp_path):
    cfg = probe_cfg()
    run.train(cfg, settings(tmp_path, max_chunks=2, save_buffer=False))
    assert not (tmp_path / "checkpoints" / "2" / "buffer").exists()
    with pytest.warns(UserWarning, match="replay buffer was not checkpointed"):
        out = run.resume(tmp_path, max_chunks=1)
    assert out.chunks == 3


def test_exported_policy_acts_like_the_mean_in_the_state(tmp_path):
    cfg = probe_cfg()
    out = run.train(cfg, settings(tmp_path, max_chunks=2))
    obs = jax.random.uniform(jax.random.key(0), (7, 3), minval=-1, maxval=1)
    mean = program.mean_params(cfg, out.state)[0]
    want = program.build(cfg).actor.apply(mean, obs)
    got = run.policy_actions(tmp_path / "policy_seed0.npz", obs)
    np.testing.assert_array_equal(got, want)
    assert (tmp_path / "policy_seed0.npz").stat().st_size < 20_000
    with pytest.raises(checkpoint.CheckpointError, match="cannot read"):
        checkpoint.load_policy(tmp_path / "config.json")


SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from helpers import probe_cfg
from aes_rl import run
cfg = probe_cfg(buffer_size={buffer})
run.train(cfg, run.RunSettings({path!r}, steps={steps}, progress=False, eval_episodes=2))
"""


def _spawn(path, steps, buffer=4000):
    code = SCRIPT.format(tests=str(HERE), path=str(path), steps=steps, buffer=buffer)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def csv_rows(path, name):
    """A CSV of a run directory without its wall-clock column."""
    import csv

    with (path / name).open(newline="") as f:
        return [{k: v for k, v in r.items() if k != "wall_time"} for r in csv.DictReader(f)]


def test_sigkill_during_a_save_leaves_a_resumable_run(tmp_path, capfd):
    """SIGKILL inside a save while older complete checkpoints exist, and inside the first save
    (only orbax's temporary directory exists, metrics.csv holds chunk 1): resume continues
    (from the beginning when there is no complete checkpoint, saying so) and the finished
    run's state, metrics.csv and arrivals.csv equal an uninterrupted run's."""
    steps = 900
    whole = run.train(probe_cfg(buffer_size=400_000), settings(tmp_path / "whole", steps=steps))
    for older in (2, 0):  # complete checkpoints when the kill lands
        path = tmp_path / f"killed{older}"
        proc = _spawn(path, steps, buffer=400_000)  # a big buffer makes each save take a while
        ckdir = path / "checkpoints"

        def saving(ckdir=ckdir):
            return ckdir.exists() and any("tmp" in p.name for p in ckdir.iterdir())

        def complete(ckdir=ckdir):
            return len([p for p in ckdir.glob("[0-9]*") if p.name.isdigit()])

        caught = wait_for(lambda: saving() and complete() == older, proc)  # noqa: B023
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert caught, f"the process was not caught in the middle of save {older + 1}"
        assert complete() == older and len(run.read_metrics(path)) == older + 1
        capfd.readouterr()
        rest = run.resume(path)
        err = capfd.readouterr().err
        fresh = "has no complete checkpoint yet (stopped before its first save finished); "
        assert (fresh in err) == (older == 0), err
        assert_trees_equal(rest.state, whole.state)
        for name in ("metrics.csv", "arrivals.csv"):
            assert csv_rows(path, name) == csv_rows(tmp_path / "whole", name)


def test_sigint_saves_and_exits_then_resume_is_exact(tmp_path):
    whole = run.train(probe_cfg(), settings(tmp_path / "whole", steps=1500))
    path = tmp_path / "stopped"
    proc = _spawn(path, 1500)
    metrics = path / "metrics.csv"
    assert wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 3, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "interrupt: finishing this chunk" in err
    stopped_at = max(r["chunk"] for r in run.read_metrics(path))
    assert stopped_at < whole.chunks
    assert checkpoint.Checkpointer(path / "checkpoints").steps()[-1] == stopped_at
    rest = run.resume(path)
    assert_trees_equal(rest.state, whole.state)


# ------------------------------------------------------------------ a run directory is never lost


def _files(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_a_failed_continuation_leaves_the_stored_run_as_it_was(tmp_path):
    run.train(probe_cfg(), settings(tmp_path, max_chunks=1))
    shutil.rmtree(tmp_path / "checkpoints" / "1" / "state")
    before = _files(tmp_path)
    with pytest.raises(checkpoint.CheckpointError, match="none of the checkpoints"):
        with pytest.warns(UserWarning, match="checkpoint 1 is corrupt"):
            run.train(probe_cfg(rho=0.2), settings(tmp_path, steps=2000))
    assert _files(tmp_path) == before  # config.json still says rho 0.5 and 900 steps


def test_a_directory_that_holds_no_run_is_never_written_over(tmp_path):
    (tmp_path / "metrics.csv").write_text("precious\n")
    with pytest.raises(run.RunError, match="run_dir: .* is not empty and holds no run"):
        run.train(probe_cfg(), settings(tmp_path))
    assert _files(tmp_path) == {Path("metrics.csv"): b"precious\n"}


def test_a_run_of_another_format_is_refused_before_any_work(tmp_path, monkeypatch):
    import json

    from aes_rl import clock

    run.train(probe_cfg(), settings(tmp_path, max_chunks=1))
    record = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(record, format_version=4)))
    before = _files(tmp_path)

    def no_work(*args, **kwargs):
        raise AssertionError("calibrated a clock before refusing the run")

    monkeypatch.setattr(clock, "calibrate", no_work)
    with pytest.raises(run.RunError, match="written in format 4 by another aes_rl version"):
        run.train(probe_cfg(cost_model="device"), settings(tmp_path))
    assert _files(tmp_path) == before


def test_changed_hyper_parameters_are_kept_in_the_records_history(tmp_path):
    import json

    run.train(probe_cfg(), settings(tmp_path, max_chunks=1))
    with pytest.warns(UserWarning, match="changed from the stored run after chunk 1: rho"):
        run.train(probe_cfg(rho=0.2), settings(tmp_path, max_chunks=1))
    run.train(probe_cfg(rho=0.2), settings(tmp_path, max_chunks=1))  # no change: no entry
    record = json.loads((tmp_path / "config.json").read_text())
    assert record["history"] == [{"changed": {"rho": [0.5, 0.2]}, "from_chunk": 1}]
    assert record["config"]["rho"] == 0.2


def test_a_budget_below_the_steps_taken_and_the_stored_one_is_refused(tmp_path):
    run.train(probe_cfg(), settings(tmp_path, max_chunks=2))
    before = _files(tmp_path)
    with pytest.raises(run.RunError, match="steps: the budget 300 is below the stored 900"):
        run.resume(tmp_path, steps=300)
    assert _files(tmp_path) == before
    finished = run.resume(tmp_path)  # a finished run that overshot its budget re-runs as is
    again = run.resume(tmp_path, steps=900)
    assert again.chunks == finished.chunks


def test_a_run_whose_checkpoints_are_gone_is_not_restarted_over_its_log(tmp_path):
    run.train(probe_cfg(), settings(tmp_path, max_chunks=1))
    shutil.rmtree(tmp_path / "checkpoints")
    before = _files(tmp_path)
    with pytest.raises(run.RunError, match="has logged chunks .* but no checkpoint"):
        run.resume(tmp_path)
    assert _files(tmp_path) == before
