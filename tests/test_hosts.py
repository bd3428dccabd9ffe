"""A run over several processes (`aes_rl.hosts`, `jax.distributed`): the same rows, split over
every process's devices, give the same results as one process; checkpoints move between
process counts; bad multi-process requests are refused in one line.

The processes run on this machine (CPU collectives over TCP), each with 2 forced host devices.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import probe_flags

from aes_rl import cli, hosts, run

CLI = "from aes_rl.cli import main; main()"
# 2 settings x 2 seeds = 4 rows: one per device of 2 processes x 2 devices.
TRAIN = ["train", *probe_flags(), "--eval-episodes", "2"]
SWEEP = ["sweep", *probe_flags(), "--rho", "0.3", "0.7", "--num-seeds", "2", "--eval-episodes", "2"]


def _launch(argv: list[str], processes: int, devices: int = 2) -> list[subprocess.CompletedProcess]:
    """`aes-rl ARGV` as `processes` processes of one run (plain, for 1), each with `devices`
    forced host devices; waits for all of them."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    if processes == 1:
        cmds = [argv]
    else:
        coordinator = hosts.local_coordinator()
        cmds = [
            [
                *argv,
                "--coordinator",
                coordinator,
                "--num-processes",
                str(processes),
                "--process-id",
                str(i),
            ]
            for i in range(processes)
        ]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLI, *cmd],
            env=env,
            cwd=Path(__file__).parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for cmd in cmds
    ]
    done = []
    for proc, cmd in zip(procs, cmds, strict=True):
        out, err = proc.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(cmd, proc.returncode, out, err))
    return done


def _same(a: list[dict], b: list[dict], tol: float = 0.0) -> None:
    """Same metric rows: counts equal, measured values equal (`tol` 0) or within `tol`
    relative (batched kernels of other sizes may round differently); wall time and empty
    (NaN) values are not compared."""
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key, u in x.items():
            v = y[key]
            if key == "wall_time" or (u != u and v != v):  # noqa: PLR0124 (both NaN: no value)
                continue
            if isinstance(u, float) and tol:
                assert abs(u - v) <= tol * (1 + abs(v)), (key, u, v)
            else:
                assert u == v, (key, u, v)


def test_two_processes_equal_one_process_and_checkpoints_cross_process_counts(tmp_path):
    """4 rows (2 settings x 2 seeds) on 2 processes x 2 devices against 1 process x 1 device;
    then each run's checkpoint continues on the other layout (the 2-process run on 1 process
    with 4 devices, the 1-device run on 2 processes), and they still agree row for row."""
    two, one = tmp_path / "two", tmp_path / "one"
    first = ["--steps", "300"]
    results = _launch([*SWEEP, "--run-dir", str(two), *first], processes=2)
    for res in results:
        assert res.returncode == 0, res.stderr[-3000:]
    assert "(4 rows over 4 devices, 2 processes)" in results[0].stdout
    (res,) = _launch([*SWEEP, "--run-dir", str(one), *first], processes=1, devices=1)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "devices" not in res.stdout.splitlines()[0]  # one device: no split to report
    # Process 0 wrote the files (4 rows, both seeds of both settings).
    assert sorted(p.name for p in two.glob("policy_row*.npz")) == [
        f"policy_row{i}.npz" for i in range(4)
    ]
    _same(run.read_metrics(two), run.read_metrics(one))
    assert {r["rho"] for r in run.read_metrics(two)} == {0.3, 0.7}
    again = ["--steps", "500", "--quiet"]
    (res,) = _launch(["resume", str(two), *again], processes=1, devices=4)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "(4 rows over 4 devices, 1 processes)" in res.stdout
    results = _launch(["resume", str(one), *again], processes=2)
    for res in results:
        assert res.returncode == 0, res.stderr[-3000:]
    assert "(4 rows over 4 devices, 2 processes)" in results[0].stdout
    assert "finished" not in results[1].stdout  # only process 0 reports
    rows_two, rows_one = run.read_metrics(two), run.read_metrics(one)
    assert min(r["total_steps"] for r in rows_two if r["chunk"] == rows_two[-1]["chunk"]) >= 500
    _same(rows_two, rows_one)


def test_rows_side_by_side_over_two_devices_equal_one_device(tmp_path):
    """`--rows vmap` over 2 devices: each device runs its own rows side by side (a shard_map
    around the vmap, so a row branch's "some row needs it" stays on the device and no
    collective runs inside the chunk), and the rows agree with one device's."""
    two, one = tmp_path / "two", tmp_path / "one"
    out = {}
    for path, devices in ((two, 2), (one, 1)):
        argv = [*SWEEP, "--rows", "vmap", "--run-dir", str(path), "--steps", "300"]
        (res,) = _launch(argv, processes=1, devices=devices)
        assert res.returncode == 0, res.stderr[-3000:]
        out[devices] = res.stdout
    assert "(4 rows over 2 devices, 1 processes)" in out[2]
    _same(run.read_metrics(two), run.read_metrics(one), tol=1e-3)


def test_rows_that_do_not_split_over_the_processes_are_refused_by_every_process(tmp_path):
    results = _launch([*TRAIN, "--num-seeds", "3", "--run-dir", str(tmp_path / "r")], processes=2)
    for res in results:
        assert res.returncode == 2
        err = res.stderr.strip().splitlines()[-1]
        assert "num_seeds: 3 rows" in err and "multiple of 2" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--num-processes", "2"], "coordinator: --num-processes/--process-id need --coordinator"),
        (["--coordinator", "nohost"], "coordinator: expected HOST:PORT or auto, got 'nohost'"),
        (["--coordinator", "127.0.0.1:1", "--process-id", "0"], "num_processes: need an int >= 1"),
        (
            ["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"],
            "process_id: need an int in [0, 1]",
        ),
    ],
)
def test_bad_multi_process_flags_are_one_line(tmp_path, capsys, argv, needle):
    with pytest.raises(SystemExit) as exit_:
        cli.main([*TRAIN, "--run-dir", str(tmp_path / "r"), *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


ONE_PROCESS = """
from aes_rl import hosts
print([(len(got), {d.process_index for d in got})
       for got in map(hosts.process_devices, (1, 2, 3, 4, 6, 8))])
"""


def test_one_process_splits_rows_over_its_devices_as_before():
    """On one process with 4 devices `process_devices` is the local rule: the largest count of
    devices that divides the rows (by hand: 1, 2, 3, 4, 6, 8 rows -> 1, 2, 3, 4, 3, 4)."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    out = subprocess.run(
        [sys.executable, "-c", ONE_PROCESS], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == str([(k, {0}) for k in (1, 2, 3, 4, 3, 4)])


BRAX_ENV = """
import sys
import jax
from aes_rl import hosts
hosts.initialize(sys.argv[1], 2, int(sys.argv[2]))
from aes_rl.envs import make_env
env = make_env("hopper", "spring", 10)
arrays = [x for x in jax.tree.leaves(vars(env.env)) if isinstance(x, jax.Array)]
foreign = [x.shape for x in arrays if not x.is_fully_addressable]
restored = jax.devices is not jax.local_devices and len(jax.devices()) == 2
print("arrays", len(arrays), "foreign", foreign, "restored", restored)
"""


def test_a_brax_env_built_on_any_process_holds_only_its_own_arrays():
    """MJX places Brax's physics model on `jax.devices()[0]`, process 0's device: on process 1
    that copy is unreadable and a chunk that embeds it does not compile. `make_env` builds it
    on the process's own device (and leaves `jax.devices` as it was)."""
    coordinator = hosts.local_coordinator()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", BRAX_ENV, coordinator, str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        line = next(ln for ln in out.splitlines() if ln.startswith("arrays"))
        count = int(line.split()[1])
        assert count > 20 and "foreign [] restored True" in line, line
