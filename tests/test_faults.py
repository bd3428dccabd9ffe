"""Faults a long run meets: a second process on its directory, an OS-level write error (a full
disk, a quota, a read-only filesystem, a permission), a torn checkpoint, a NaN in an
evaluation. (Kills inside a save: test_checkpoint.py and test_soak.py.)"""

import csv
import errno
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from helpers import probe_cfg, probe_flags, wait_for

from aes_rl import checkpoint, cli, faults, metrics, run

HERE = Path(__file__).parent
CLI = [sys.executable, "-c", "from aes_rl.cli import main; main()"]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def settings(path, **kw):
    base = dict(steps=900, seeds=(0,), progress=False, eval_episodes=2)
    base.update(kw)
    return run.RunSettings(str(path), **base)


def call(capsys, *argv):
    """Run the CLI in-process: (exit code, stdout, stderr)."""
    try:
        cli.main([str(a) for a in argv])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def csv_rows(path: Path, name: str) -> list[dict]:
    with (path / name).open(newline="") as f:
        return [{k: v for k, v in r.items() if k != "wall_time"} for r in csv.DictReader(f)]


def same_logs(a: Path, b: Path) -> None:
    for name in ("metrics.csv", "arrivals.csv"):
        assert csv_rows(a, name) == csv_rows(b, name), name


NOISE = ("Traceback", "Exception ignored", "Event loop is closed", "never retrieved")


# ------------------------------------------------------------------ one writer per run directory


def test_a_second_process_on_a_live_run_is_refused_and_a_kill_frees_the_directory(tmp_path, capsys):
    path = tmp_path / "r"
    proc = subprocess.Popen(
        CLI + ["train", *probe_flags(), "--steps", "1e6", "--run-dir", str(path)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        logged = path / "metrics.csv"
        assert wait_for(lambda: logged.exists() and len(logged.read_text().splitlines()) > 1, proc)
        for argv in (["resume", path], ["train", *probe_flags(), "--run-dir", path]):
            code, _, err = call(capsys, *argv)
            lines = err.strip().splitlines()
            assert code == faults.EXIT_BUSY == 4, err
            assert len(lines) == 1 and lines[0].startswith(
                f"aes-rl: error: run_dir: {path} has a run in progress (process {proc.pid} holds "
            ), lines
        assert proc.poll() is None  # the live run goes on
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # the kernel dropped the killed process's lock: the next resume is not refused
    out = run.resume(path, max_chunks=1)
    chunks = [r["chunk"] for r in run.read_metrics(path)]
    assert chunks == list(range(1, out.chunks + 1))  # no chunk logged twice


def test_the_lock_is_held_by_one_holder_and_released(tmp_path):
    lock = faults.RunLock.acquire(tmp_path)
    assert (tmp_path / faults.LOCK_NAME).read_text().strip() == str(os.getpid())
    with pytest.raises(faults.RunBusy, match=f"process {os.getpid()} holds"):
        faults.RunLock.acquire(tmp_path)  # another descriptor: refused, even in one process
    lock.release()
    faults.RunLock.acquire(tmp_path).release()
    # a lock file left by a killed run is no foreign file: a new run may start there
    assert run.check_run_dir(tmp_path) is None


# ------------------------------------------------------------------ OS-level write errors


@pytest.mark.parametrize(
    "code,status,todo",
    [
        (errno.ENOSPC, 5, "free space on its filesystem"),
        (errno.EDQUOT, 6, "quota"),
        (errno.EROFS, 7, "remount the filesystem read-write"),
        (errno.EACCES, 8, "write permission"),
        (errno.EPERM, 8, "write permission"),
        (errno.EIO, 9, "fix the cause"),
    ],
)
def test_each_os_error_is_one_line_with_path_cause_what_to_do_and_its_status(
    tmp_path, code, status, todo
):
    (tmp_path / "checkpoints" / "4").mkdir(parents=True)
    (tmp_path / "checkpoints" / "5.orbax-checkpoint-tmp").mkdir()
    target = "/data/run/checkpoints/5.orbax-checkpoint-tmp/state/_sharding"
    raised = [  # as Python raises it, and as orbax's tensorstore writer does
        OSError(code, os.strerror(code), target),
        ValueError(
            f'RESOURCE_EXHAUSTED: Error writing local file "{target}": Failed writing: '
            f"\"{target}\": {os.strerror(code)} [os_error_code='{code}']"
        ),
    ]
    for cause in raised:
        try:
            try:
                raise cause
            except Exception as inner:
                raise RuntimeError("an orbax wrapper") from inner
        except RuntimeError as err:
            wrapped = faults.storage_error(err, tmp_path)
        # behind a wrapper, only the causes outside the run count (EIO there may be a bug's)
        assert (wrapped is not None) == (code != errno.EIO)
        found = faults.storage_error(cause, tmp_path)
        assert found is not None and found.status == status
        assert wrapped is None or str(wrapped) == str(found)
        line = str(found)
        assert "\n" not in line
        assert f"{os.strerror(code).lower()} [{errno.errorcode[code]}] at {target}" in line
        assert "the last checkpoint (chunk 4) is intact" in line and todo in line
        assert f"`aes-rl resume {tmp_path}` continues from it" in line
    assert faults.storage_error(ValueError("a bad value"), tmp_path) is None
    assert faults.is_environment_error(raised[0]) == (code != errno.EIO)
    # no complete checkpoint yet: resume starts over
    shutil.rmtree(tmp_path / "checkpoints" / "4")
    line = str(faults.storage_error(raised[0], tmp_path))
    assert "no checkpoint was complete yet" in line and "starts the run from its beginning" in line


def _full_checkpoint_writer(self, step, *args, **kwargs):
    """orbax's save on a full disk: a temporary directory, then tensorstore's error."""
    tmp = Path(self.directory) / f"{step}.orbax-checkpoint-tmp"
    (tmp / "state").mkdir(parents=True)
    raise ValueError(
        f'RESOURCE_EXHAUSTED: Error writing local file "{tmp}/state/_sharding": Failed '
        f'writing: "{tmp}/state/_sharding.__lock": Failed to write 9310 bytes to file 7: '
        "No space left on device [os_error_code='28']"
    )


def _full_log_writer(self, rows):
    """A CSV append on a full disk: part of a line, then ENOSPC."""
    with self.path.open("a") as f:
        f.write("3,0,0,33")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))


def test_a_full_disk_is_one_line_with_its_own_status_and_the_run_resumes_exactly(
    tmp_path, capsys, monkeypatch
):
    cfg = probe_cfg()
    run.train(cfg, settings(tmp_path / "whole", steps=700))
    for where, writer in (
        ("checkpoint", (checkpoint.ocp.CheckpointManager, "save", _full_checkpoint_writer)),
        ("log", (metrics.CsvLog, "append", _full_log_writer)),
    ):
        path = tmp_path / where
        run.train(cfg, settings(path, steps=700, max_chunks=2))
        capsys.readouterr()
        with monkeypatch.context() as patch:
            patch.setattr(*writer)
            code, _, err = call(capsys, "resume", path, "--quiet")
        lines = err.strip().splitlines()
        assert code == faults.EXIT_NO_SPACE == 5, err
        assert not any(noise in err for noise in NOISE), err
        assert len(lines) == 2 and lines[0].startswith(f"resumed {path} at chunk 2 ("), lines
        at = (
            f"{path / 'checkpoints' / '3.orbax-checkpoint-tmp'}/state/_sharding.__lock"
            if where == "checkpoint"
            else f"{path / 'metrics.csv'}"
        )
        assert lines[-1] == (
            f"aes-rl: error: run_dir: no space left on device [ENOSPC] at {at}; the last "
            f"checkpoint (chunk 2) is intact; free space on its filesystem, then "
            f"`aes-rl resume {path}` continues from it"
        )
        run.resume(path)  # the space is back
        same_logs(path, tmp_path / "whole")
        assert not [p for p in (path / "checkpoints").iterdir() if "tmp" in p.name]


def _tmpfs_works(where: Path) -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    where.mkdir(exist_ok=True)
    probe = f"mount -t tmpfs -o size=1m tmpfs {where} && umount {where}"
    return subprocess.run(["unshare", "-m", "sh", "-c", probe], capture_output=True).returncode == 0


def test_a_real_full_disk_stops_in_one_line_and_resume_continues_once_space_is_freed(
    tmp_path, capsys
):
    """On a small tmpfs (a private mount namespace; root only): a run fills the disk at a save,
    stops with one line and status 5; once the disk is larger, resume finishes it exactly."""
    disk = tmp_path / "disk"
    if not _tmpfs_works(disk):
        pytest.skip("needs root and `unshare -m` to mount a small tmpfs")
    flags = probe_flags()
    code, _, err = call(capsys, "train", *flags, "--steps", "700", "--run-dir", tmp_path / "whole")
    assert code == 0, err
    command, train = " ".join(f"'{a}'" for a in CLI), " ".join(flags)
    script = f"""
        set -u
        mount -t tmpfs -o size=64m tmpfs {disk} || exit 99
        {command} train {train} --steps 250 --run-dir {disk}/r 2> {tmp_path}/first.err
        echo $? > {tmp_path}/first.rc
        used=$(df -k --output=used {disk} | tail -1)
        mount -o remount,size=$((used + 120))k {disk}  # room for logs, not for a checkpoint
        {command} resume {disk}/r --steps 700 --quiet 2> {tmp_path}/full.err
        echo $? > {tmp_path}/full.rc
        mount -o remount,size=64m {disk}
        {command} resume {disk}/r --steps 700 --quiet 2> {tmp_path}/again.err
        echo $? > {tmp_path}/again.rc
        mkdir {tmp_path}/copy && cp {disk}/r/metrics.csv {disk}/r/arrivals.csv {tmp_path}/copy/
    """
    subprocess.run(["unshare", "-m", "sh", "-c", script], env=ENV, cwd=HERE, timeout=500)
    rc = {name: (tmp_path / f"{name}.rc").read_text().strip() for name in ("first", "full")}
    assert rc == {"first": "0", "full": "5"}, (tmp_path / "full.err").read_text()[-3000:]
    err = (tmp_path / "full.err").read_text()
    lines = [line for line in err.splitlines() if line.startswith("aes-rl: ")]
    assert not any(noise in err for noise in NOISE), err[-3000:]
    assert lines[-1].startswith("aes-rl: error: run_dir: no space left on device [ENOSPC] at ")
    assert "; the last checkpoint (chunk 2) is intact; free space on its filesystem" in lines[-1]
    again = (tmp_path / "again.err").read_text()
    assert (tmp_path / "again.rc").read_text().strip() == "0", again[-3000:]
    same_logs(tmp_path / "copy", tmp_path / "whole")


# ------------------------------------------------------------------ a torn checkpoint


def test_a_truncated_checkpoint_falls_back_without_orbax_tracebacks(tmp_path):
    run.train(probe_cfg(), settings(tmp_path, steps=400, max_chunks=3, keep=3))
    newest = tmp_path / "checkpoints" / "3"
    torn = [p for p in newest.rglob("*") if p.is_file() and p.parent.name == "d"]
    assert torn
    for f in torn:  # every data file of the newest checkpoint cut to a third
        with f.open("r+b") as handle:
            handle.truncate(f.stat().st_size // 3)
    done = subprocess.run(
        CLI + ["resume", str(tmp_path), "--quiet"], env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "aes-rl: warning: checkpoint 3 is corrupt or incomplete" in done.stderr
    assert f"resumed {tmp_path} at chunk 2" in done.stderr
    assert not any(noise in done.stderr for noise in NOISE), done.stderr[-3000:]


def test_orbax_noise_is_dropped_and_everything_else_passes(monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_value))
    checkpoint.quiet_orbax()

    async def mine():
        return None

    coro = mine()
    coro.close()
    noise, other = RuntimeError("Event loop is closed"), RuntimeError("mine")
    for exc, obj in ((noise, None), (other, coro)):
        sys.unraisablehook(types.SimpleNamespace(exc_value=exc, object=obj))
    assert seen == [other]
    absl = logging.getLogger("absl")
    orbax_file = f"{os.sep}site-packages{os.sep}orbax{os.sep}checkpoint{os.sep}future.py"
    record = logging.LogRecord("absl", logging.ERROR, orbax_file, 1, "raised", None, None)
    assert not bool(absl.filter(record))
    record = logging.LogRecord("absl", logging.ERROR, __file__, 1, "mine", None, None)
    assert bool(absl.filter(record))
    # tensorstore's error of an orbax write, logged by asyncio as a future never retrieved
    full = ValueError('RESOURCE_EXHAUSTED: Error writing "x" in OCDBT database at local file')
    aio = logging.getLogger("asyncio")
    msg = "Future exception was never retrieved"
    record = logging.LogRecord("asyncio", logging.ERROR, "base_events.py", 1, msg, None,
                               (ValueError, full, None))
    assert not bool(aio.filter(record))
    mine = (ValueError, ValueError("mine"), None)
    record = logging.LogRecord("asyncio", logging.ERROR, "base_events.py", 1, msg, None, mine)
    assert bool(aio.filter(record))


# ------------------------------------------------------------------ a NaN in an evaluation


def test_nonfinite_evaluation_episodes_are_counted_and_left_out_of_the_mean(tmp_path):
    returns = np.array([1.0, np.nan, 3.0, np.inf], np.float32)
    assert metrics.eval_summary(returns) == dict(eval_mean=2.0, eval_std=1.0, eval_nonfinite=2)
    empty = metrics.eval_summary(np.full(3, np.nan, np.float32))
    assert math.isnan(empty["eval_mean"]) and math.isnan(empty["eval_std"])
    assert empty["eval_nonfinite"] == 3
    finite = np.array([0.1, 0.7, -0.3], np.float32)
    assert metrics.eval_summary(finite)["eval_mean"] == float(finite.mean())  # bit for bit
    # a run on an env whose episodes are NaN about 30% of the time
    cfg = probe_cfg(env_kwargs=(("nan_prob", 0.3),))
    run.train(cfg, settings(tmp_path, max_chunks=3, eval_episodes=8))
    rows = run.read_metrics(tmp_path)
    assert sum(r["eval_nonfinite"] for r in rows) > 0
    for r in rows:
        assert 0 <= r["eval_nonfinite"] <= 8
        assert math.isnan(r["eval_mean"]) == (r["eval_nonfinite"] == 8), r
