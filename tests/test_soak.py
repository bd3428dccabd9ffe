"""Soak test: a run cut 10 times at random points by SIGINT, SIGTERM or SIGKILL (also in the
middle of its first checkpoint save, when no complete checkpoint exists, and in the middle of a
later one), each time continued with `aes-rl resume`, ends with exactly the metrics and
arrivals of an uninterrupted run."""

import csv
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import probe_flags, wait_for

from aes_rl import cli

# a big buffer makes every save take a while, so a kill can land inside one
# about 70 chunks: room for the ten cuts (1 to 3 chunks each, plus the chunk a SIGINT or
# SIGTERM finishes) and a final resume that still has chunks to run
FLAGS = probe_flags(warmup_steps=300, num_slots=3, buffer_size=400_000, steps=4_000)
CLI = [sys.executable, "-c", "from aes_rl.cli import main; main()"]


def rows(path: Path, name: str) -> list[dict]:
    with (path / name).open(newline="") as f:
        return [{k: v for k, v in r.items() if k != "wall_time"} for r in csv.DictReader(f)]


def chunks_logged(path: Path) -> int:
    try:
        return len((path / "metrics.csv").read_text().splitlines()) - 1
    except FileNotFoundError:
        return 0


def saving(path: Path) -> bool:
    ckdir = path / "checkpoints"
    return ckdir.exists() and any("tmp" in p.name for p in ckdir.iterdir())


def complete(path: Path) -> int:
    """Complete checkpoints (orbax renames a step's directory to its number when done)."""
    ckdir = path / "checkpoints"
    return sum(p.name.isdigit() for p in ckdir.iterdir()) if ckdir.exists() else 0


@pytest.mark.slow
def test_ten_random_cuts_then_resume_equal_an_uninterrupted_run(tmp_path, capsys):
    whole = tmp_path / "whole"
    cli.main(["train", *FLAGS, "--run-dir", str(whole)])
    capsys.readouterr()
    path = tmp_path / "cut"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    rng = random.Random(0)
    kinds = ["SIGINT", "SIGTERM", "SIGKILL", "SIGKILL-in-save"] * 3
    rng.shuffle(kinds)
    kinds = ["SIGKILL-in-first-save"] + kinds[:9]  # the first cut: inside the first save
    cuts = []
    for i, kind in enumerate(kinds):
        args = ["train", *FLAGS, "--run-dir", str(path)] if i == 0 else ["resume", str(path)]
        proc = subprocess.Popen(
            CLI + args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        start = chunks_logged(path)
        wait = rng.randint(1, 3)  # chunks this process runs before the cut
        if kind == "SIGKILL-in-first-save":  # metrics.csv holds chunk 1, no checkpoint yet
            first = wait_for(lambda: saving(path) and not complete(path), proc, 180)
            assert first, "the first save was not caught in progress"
        else:
            assert wait_for(lambda s=start, n=wait: chunks_logged(path) >= s + n, proc, 180)
        if kind == "SIGKILL-in-save":  # an older checkpoint exists
            caught = wait_for(lambda: saving(path) and complete(path) > 0, proc, 180)
            assert caught, "no save caught in progress"
        proc.send_signal(signal.SIGKILL if kind.startswith("SIGKILL") else getattr(signal, kind))
        _, err = proc.communicate(timeout=180)
        if kind in ("SIGINT", "SIGTERM"):  # the chunk finishes, is saved, exit 0
            assert proc.returncode == 0, err
            assert "interrupt: finishing this chunk" in err
        else:
            assert proc.returncode == -signal.SIGKILL
        if kind == "SIGKILL-in-first-save":
            assert complete(path) == 0 and chunks_logged(path) >= 1
        cuts.append((kind, chunks_logged(path)))
    assert {k for k, _ in cuts} == {
        "SIGINT",
        "SIGTERM",
        "SIGKILL",
        "SIGKILL-in-save",
        "SIGKILL-in-first-save",
    }
    final = subprocess.run(CLI + ["resume", str(path)], env=env, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    assert cuts[-1][1] < len(rows(whole, "metrics.csv"))  # the cuts fell inside the run
    assert rows(path, "metrics.csv") == rows(whole, "metrics.csv")
    assert rows(path, "arrivals.csv") == rows(whole, "arrivals.csv")
