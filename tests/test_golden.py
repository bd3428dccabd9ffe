"""Golden files: metrics.csv and arrivals.csv of every algorithm on the probe env for a few
chunks (one row each) and of a two-setting sweep, committed, to be reproduced bit for bit on a
CPU. They guard refactors of the engine, not intended changes: a change meant to move results
regenerates them in a commit of its own that says why:

    AES_RL_WRITE_GOLDEN=1 python -m pytest tests/test_golden.py

Wall-clock columns are left out.
"""

import csv
import io
import os
from pathlib import Path

import pytest
from helpers import probe_cfg

from aes_rl import run
from aes_rl.config import ALGOS

GOLDEN = Path(__file__).parent / "golden"
WALL = ("wall_time",)
CASES = {algo: (algo, ()) for algo in ALGOS} | {
    "aes-rl-sweep": ("aes-rl", (("mean_rule", ("fixed-linear", "baseline-relative")),)),
}


def _without_wall(path: Path) -> str:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        fields = [k for k in reader.fieldnames if k not in WALL]
        out = io.StringIO()
        writer = csv.DictWriter(out, fields, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(reader)
    return out.getvalue()


@pytest.mark.parametrize("name", list(CASES))
def test_logs_equal_the_golden_files(tmp_path, name):
    algo, grid = CASES[name]
    cfg = probe_cfg(algo, num_slots=1 if algo == "cem-rl" else 3)
    settings = run.RunSettings(
        str(tmp_path), steps=500, seeds=(0,), grid=grid, eval_episodes=2, progress=False
    )
    run.train(cfg, settings)
    for log in ("metrics.csv", "arrivals.csv"):
        got = _without_wall(tmp_path / log)
        path = GOLDEN / f"{name}_{log}"
        if os.environ.get("AES_RL_WRITE_GOLDEN"):
            GOLDEN.mkdir(exist_ok=True)
            path.write_text(got)
        want = path.read_text()
        assert got.splitlines()[0] == want.splitlines()[0], f"{name} {log}: columns changed"
        for i, (g, w) in enumerate(zip(got.splitlines(), want.splitlines())):
            assert g == w, f"{name} {log} line {i + 1} differs:\n got  {g}\n want {w}"
        assert len(got.splitlines()) == len(want.splitlines()), f"{name} {log}: row count"
