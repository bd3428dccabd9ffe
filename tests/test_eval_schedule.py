"""Evaluation on a schedule of counted steps (`eval_every_steps`): every algorithm is
evaluated as its counted steps pass the same multiples, whatever a chunk covers."""

import math

import numpy as np
import pytest
from helpers import probe_cfg

from aes_rl import run
from aes_rl.rundir import RunError, RunSettings


def test_due_rows_by_hand():
    s = RunSettings("x", steps=10_000, eval_every_steps=1000)
    before = np.array([900, 1000, 1999, 9500])
    after = np.array([1000, 1999, 2500, 10_000])
    # 900->1000 passes 1000; 1000->1999 passes none; 1999->2500 passes 2000; the last ends
    assert run.eval_due(s, 7, before, after).tolist() == [True, False, True, True]
    by_chunks = RunSettings("x", eval_every=3)
    assert run.eval_due(by_chunks, 6, before, after).tolist() == [True] * 4
    assert not run.eval_due(by_chunks, 7, before, after).any()


def test_a_negative_schedule_is_one_line():
    with pytest.raises(RunError, match=r"eval_every_steps: must be an int in \[0"):
        run.check_settings(probe_cfg(), RunSettings("x", steps=1000, eval_every_steps=-5))


def test_rows_are_evaluated_exactly_when_they_pass_a_multiple(tmp_path):
    algo = "aes-rl"  # the schedule is the driver's, the same for every algorithm
    cfg = probe_cfg(algo)
    every, budget = 150, 800
    settings = RunSettings(
        str(tmp_path / algo), steps=budget, seeds=(0, 1), eval_every_steps=every, progress=False
    )
    run.train(cfg, settings)
    rows = run.read_metrics(tmp_path / algo)
    for seed in (0, 1):
        mine = sorted((r for r in rows if r["seed"] == seed), key=lambda r: r["chunk"])
        before = 0
        evaluated = 0
        for r in mine:
            due = r["total_steps"] // every > before // every or r["total_steps"] >= budget
            assert (not math.isnan(r["eval_mean"])) == due, (seed, r["chunk"])
            evaluated += due
            before = r["total_steps"]
        assert evaluated >= budget // every  # every multiple passed (a chunk may pass two)
        assert not math.isnan(mine[-1]["eval_mean"])  # the final evaluation
