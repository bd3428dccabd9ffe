"""The `aes-rl` command line: train, resume, eval, render, plot, analyze, bench.

Built with tyro from typed functions, so `--help` documents every option from the code.
Argument errors print ONE line (`aes-rl: error: ...`) and exit with status 2, before anything
is written. Other exit statuses: 3 the non-finite guard stopped the run; 4 another process runs
in the run directory; 5 no space left on the device, 6 disk quota exceeded, 7 read-only
filesystem, 8 permission denied, 9 another OS error (`aes_rl.faults`; one line each, the last
checkpoint intact); 130 a second Ctrl-C.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Annotated

os.environ.setdefault("MUJOCO_GL", "egl")  # MuJoCo's headless GL, chosen before it is imported
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tyro

from aes_rl.config import preset
from aes_rl.flags import (
    REGISTRY,
    Algo,
    Backend,
    Coordinator,
    EnvName,
    Overrides,
    ProcessCount,
    RunFlags,
    SweepOverrides,
    UsageError,
    chosen,
    fail,
    one_line,
    sweep_values,
)

_fail = functools.partial(fail, "aes-rl")
_one_line = one_line
Flags = Annotated[RunFlags, tyro.conf.arg(name="")]


# ------------------------------------------------------------------ commands


def train(
    algo: Algo = "aes-rl",
    env: EnvName = "hopper",
    backend: Backend = None,
    run_dir: Annotated[
        Path | None,
        tyro.conf.arg(metavar="PATH", help_behavior_hint="(default: runs/ENV-ALGO-sSEED)"),
    ] = None,
    flags: Flags = RunFlags(),
    overrides: Annotated[Overrides, tyro.conf.arg(name="")] = Overrides(),  # type: ignore
) -> None:
    """Train ALGO on ENV for STEPS counted env steps per seed; writes a run directory.

    Args:
        algo: Algorithm.
        env: Environment (probe and countdown are tiny pure-JAX test envs).
        backend: Brax physics backend (each a different simulator: compare returns within one).
        run_dir: Run directory. An existing run continues.
    """
    _run(algo, env, backend, run_dir, flags, chosen(overrides), ())


def _run(algo, env, backend, run_dir, flags: RunFlags, values: dict, grid) -> None:
    """What train and sweep share: the config, the settings, the run, the summary."""
    from aes_rl import run

    flags.join_hosts()  # before any JAX computation
    if backend is not None:
        values["backend"] = backend
    cfg = preset(env, algo, **values)
    kind = "sweep" if grid else "s"
    run_dir = run_dir or Path("runs") / f"{env}-{algo}-{kind}{flags.seed}"
    settings = flags.settings(run_dir, grid)
    run.check_settings(cfg, settings)
    run.enable_compilation_cache()
    out = run.train(cfg, settings)
    _summary(out)


def sweep(
    algo: Algo = "aes-rl",
    env: EnvName = "hopper",
    backend: Backend = None,
    run_dir: Annotated[
        Path | None,
        tyro.conf.arg(metavar="PATH", help_behavior_hint="(default: runs/ENV-ALGO-sweepSEED)"),
    ] = None,
    flags: Flags = RunFlags(),
    overrides: Annotated[SweepOverrides, tyro.conf.arg(name="")] = SweepOverrides(),  # type: ignore
) -> None:
    """Train's flags, where a traced hyper-parameter may take several values: every setting of
    the grid (the product of the swept lists) times NUM_SEEDS seeds is one row, and all rows
    run in ONE compiled program. metrics.csv carries each row's swept values in columns named
    after the fields, and its seed. Shape-fixing fields (nets, W, buffer, env) take one value.

    Example: aes-rl sweep --env hopper --mean-rule all --var-rule fixed adaptive --num-seeds 2

    Args:
        algo: Algorithm.
        env: Environment (probe and countdown are tiny pure-JAX test envs).
        backend: Brax physics backend (each a different simulator: compare returns within one).
        run_dir: Run directory. An existing sweep continues.
    """
    values, grid = sweep_values(overrides)
    _run(algo, env, backend, run_dir, flags, values, grid)


def _summary(out) -> None:
    from aes_rl import hosts

    if not hosts.is_main():
        return
    last = {}
    for row in out.rows:
        last[row.get("row", row["seed"])] = row
    state = (
        "stopped (resume with `aes-rl resume " + str(out.run_dir) + "`)"
        if out.interrupted
        else "finished"
    )
    devices = len(out.state.counters.ticks.sharding.device_set)
    spread = f" ({len(last)} rows over {devices} devices, {hosts.count()} processes)"
    print(f"{state}: {out.run_dir}, chunk {out.chunks}" + (spread if devices > 1 else ""))
    for _, row in sorted(last.items()):
        swept = "".join(f"{k}={row[k]} " for k in _swept_columns(row))
        print(
            f"  {swept}seed {row['seed']}: {row['total_steps']} counted steps, eval return "
            f"{row['eval_mean']:.2f} +- {row['eval_std']:.2f}, f_mu {row['f_mu']:.2f}, "
            f"utilisation {row['utilisation']:.3f}, wall {row['wall_time']:.0f}s"
        )


def _swept_columns(row: dict) -> list[str]:
    from aes_rl.run import METRICS_FIELDS

    return [k for k in row if k not in METRICS_FIELDS]


def resume(
    run_dir: tyro.conf.Positional[Path],
    steps: Annotated[
        int | None, tyro.conf.arg(metavar="INT", help_behavior_hint="(default: the stored one)")
    ] = None,
    quiet: bool = False,
    debug_nans: bool = False,
    coordinator: Coordinator = None,
    num_processes: ProcessCount = None,
    process_id: ProcessCount = None,
) -> None:
    """Continue a run directory from its latest valid (and finite) checkpoint, with its
    stored config (on any number of devices or processes).

    Args:
        run_dir: The run directory.
        steps: A new (larger) budget in counted steps per seed.
        quiet: No progress bar.
        debug_nans: Turn on JAX's NaN checks (slow) to find the operation that makes a NaN.
        coordinator: HOST:PORT of process 0 to split the rows over several processes, or auto.
        num_processes: Processes of a --coordinator run.
        process_id: This process's index in [0, num_processes).
    """
    from aes_rl import run

    RunFlags(
        coordinator=coordinator, num_processes=num_processes, process_id=process_id
    ).join_hosts()
    run.read_run(run_dir)
    run.enable_compilation_cache()
    _summary(run.resume(run_dir, steps=steps, progress=not quiet, debug_nans=debug_nans))


def _policy_files(target: Path) -> list[Path]:
    if target.is_file():
        return [target]
    files = sorted(target.glob("policy_seed*.npz"))
    if not files:
        raise UsageError(
            f"target: {target} is neither a policy file nor a run directory with "
            "policy_seed*.npz files"
        )
    return files


def _check_out(path: Path, field: str) -> None:
    """An output file can be written (checked before any work)."""
    parent = path.parent
    if path.is_dir():
        raise UsageError(f"{field}: {path} is a directory; give a file name")
    if not parent.is_dir():
        raise UsageError(f"{field}: no directory {parent} to write {path.name} in")
    from aes_rl.rundir import check_writable

    check_writable(parent, field, make=False)


def _policy_env(meta: dict):
    from aes_rl.envs import make_env

    return make_env(
        meta["env"], meta["backend"], meta["episode_length"], **meta.get("env_kwargs", {})
    )


def _episodes(env, spec, flat, keys, max_steps: int):
    """(returns, lengths) of deterministic episodes of one policy, one per key."""
    import jax

    from aes_rl import evaluation

    run = jax.vmap(lambda k: evaluation.episode_return(env, spec, flat, k, max_steps))
    return jax.jit(run)(keys)


def eval(  # the command's name shadows the builtin on purpose
    target: tyro.conf.Positional[Path],
    episodes: int = 10,
    seed: int = 0,
) -> None:
    """Evaluate exported policies (a run directory's policy_seed*.npz, or one .npz file).

    Args:
        target: Run directory or exported policy file.
        episodes: Deterministic episodes per policy, each from a fresh initial state.
        seed: Seed of the episodes' initial states.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from aes_rl import checkpoint, run
    from aes_rl.metrics import eval_summary

    if episodes < 1:
        raise UsageError(f"episodes: must be >= 1, got {episodes}")
    if seed < 0:
        raise UsageError(f"seed: must be >= 0, got {seed}")
    files = _policy_files(target)
    run.enable_compilation_cache()
    for path in files:
        spec, flat, meta = checkpoint.load_policy(path)
        env = _policy_env(meta)
        keys = jax.random.split(jax.random.key(seed), episodes)
        rets, lengths = _episodes(env, spec, jnp.asarray(flat), keys, meta["episode_length"])
        summary = eval_summary(np.asarray(rets))  # non-finite episodes counted, left out
        bad = summary["eval_nonfinite"]
        print(
            f"{path}: {meta['algo']} on {meta['env']} ({meta['backend']}): return "
            f"{summary['eval_mean']:.2f} +- {summary['eval_std']:.2f} over {episodes} episodes "
            f"(mean length {np.asarray(lengths).mean():.0f})"
            + (f"; {bad} with a non-finite return left out" if bad else "")
        )


def render(
    target: tyro.conf.Positional[Path],
    out: Path = Path("replay.html"),
    seed: int = 0,
    policy_seed: int | None = None,
    gif: Path | None = None,
) -> None:
    """Write a self-contained, offline HTML replay of one deterministic policy episode.

    Args:
        target: Run directory or exported policy file.
        out: Output HTML file.
        seed: Seed of the episode's initial state.
        policy_seed: Which seed's policy of a run directory (default: the first).
        gif: Also write an animated GIF here (MuJoCo offscreen rendering, headless via EGL).
    """
    import jax
    import jax.numpy as jnp

    from aes_rl import checkpoint, evaluation
    from aes_rl import render as render_lib
    from aes_rl.envs import PROBE_ENVS

    if seed < 0:
        raise UsageError(f"seed: must be >= 0, got {seed}")
    _check_out(out, "out")
    if gif is not None:
        _check_out(gif, "gif")
    files = _policy_files(target)
    if policy_seed is not None:
        files = [f for f in files if f.name == f"policy_seed{policy_seed}.npz"]
        if not files:
            raise UsageError(f"policy_seed: no policy_seed{policy_seed}.npz in {target}")
    spec, flat, meta = checkpoint.load_policy(files[0])
    if meta["env"] in PROBE_ENVS:
        raise UsageError(
            f"target: {meta['env']} is a pure-JAX probe env with no scene to "
            "render; render needs a Brax env"
        )
    env = _policy_env(meta)
    frames, ret, length = evaluation.episode_replay(
        env, spec, jnp.asarray(flat), jax.random.key(seed), meta["episode_length"]
    )
    title = f"aes_rl {meta['algo']} {meta['env']} return {ret:.1f}"
    render_lib.write_html(out, env.sys, frames, title=title)
    print(f"wrote {out} ({length} steps, return {ret:.2f})")
    if gif is not None:
        render_lib.render_video(gif, env.sys, frames)
        print(f"wrote {gif}")


def plot(
    run_dirs: tyro.conf.Positional[list[Path]],
    out: Path = Path("curves.png"),
    metric: str = "eval_mean",
    x: str = "total_steps",
) -> None:
    """Plot learning curves of run directories (mean across seeds, min-max band) to a PNG.

    Args:
        run_dirs: One or more run directories.
        out: Output PNG.
        metric: Column of metrics.csv (eval_mean, f_mu, individual_mean, utilisation, ...).
        x: X axis: total_steps, wall_time or ticks.
    """
    from aes_rl import plot as plot_lib
    from aes_rl import run

    if not run_dirs:
        raise UsageError("run_dirs: give at least one run directory")
    _check_out(out, "out")
    for d in run_dirs:
        run.read_run(d)
    print(f"wrote {plot_lib.plot_runs(run_dirs, out, metric, x)}")


def analyze(
    run_dir: tyro.conf.Positional[Path],
    out: Annotated[
        Path | None,
        tyro.conf.arg(metavar="PATH", help_behavior_hint="(default: RUN_DIR/analysis)"),
    ] = None,
    after: int = 3,
    plateau: Annotated[
        tuple[float, float] | None, tyro.conf.arg(metavar="HIGH LOW")
    ] = None,
) -> None:
    """Diagnostics of a run's arrivals, per setting (seeds pooled) and for ES and RL arrivals:
    the distribution of p, below-f_mu arrivals told with p > 0.3, the ES variance around the
    tells, how far the ES mean moved during a job, ES returns right after RL arrivals, and
    with --plateau the falls of the mean from a plateau. Prints markdown tables and writes
    PATH.md, PATH.csv (per seed too) and PATH.png.

    Args:
        run_dir: The run (or sweep) directory.
        out: Output path without suffix (.md, .csv and .png are written).
        after: ES members drawn after each RL arrival that count as "right after" it.
        plateau: A look at the mean (an arrival's f_mu) at HIGH or above whose next look is
            below LOW is a fall; looks are split by whether an RL arrival was told with p > 0
            among the last W (the slots) before it (Brax hopper, walker2d: 800 600).
    """
    from aes_rl import analyze as analyze_lib

    if after < 1:
        raise UsageError(f"after: must be >= 1, got {after}")
    if out is not None:
        _check_out(Path(out).with_suffix(".png"), "out")
    text, paths = analyze_lib.analyze(run_dir, out, after, plateau)
    print(text, end="")
    print("wrote " + ", ".join(str(p) for p in paths))


def bench(quick: bool = False) -> None:
    """Run the benchmark suite (benchmarks/suite.py of a source checkout); updates RESULTS.md.

    Args:
        quick: Tiny budgets (about a minute per benchmark), to check the suite runs.
    """
    root = Path(__file__).resolve().parents[2]
    if not (root / "benchmarks" / "suite.py").exists():
        raise UsageError("bench: needs a source checkout (benchmarks/suite.py not found)")
    cmd = [sys.executable, "-m", "benchmarks.suite"] + (["--quick"] if quick else [])
    raise SystemExit(subprocess.call(cmd, cwd=root))


COMMANDS = {
    "train": train,
    "sweep": sweep,
    "resume": resume,
    "eval": eval,
    "render": render,
    "plot": plot,
    "analyze": analyze,
    "bench": bench,
}


def _deferred(fn):
    """Same signature and help as `fn`, but parsing returns a thunk instead of running it."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return lambda: fn(*args, **kwargs)

    return wrapper


def _warning_line(message, category, filename, lineno, line=None) -> str:
    """A warning as the CLI prints it: one line, no source line."""
    text = " ".join(str(message).split())
    return f"aes-rl: warning: {text}\n"


# Commands whose run directories are positional: their usage, shown to a user who gives the
# directory as `--run-dir` (as `train` spells it).
POSITIONAL_DIRS = {
    "resume": "aes-rl resume RUN_DIR [OPTIONS]",
    "plot": "aes-rl plot RUN_DIR [RUN_DIR ...] [OPTIONS]",
    "analyze": "aes-rl analyze RUN_DIR [OPTIONS]",
}
RUN_DIR_FLAGS = ("--run-dir", "--run-dirs", "--run_dir", "--run_dirs")


def _positional_hint(argv: list[str]) -> None:
    """`resume --run-dir X`: say that the directory is positional (tyro would report a
    missing value for an argument the user did give). Arguments after `--` are paths."""
    if not argv or argv[0] not in POSITIONAL_DIRS:
        return
    args = argv[1 : argv.index("--")] if "--" in argv else argv[1:]
    given = [a.split("=", 1)[0] for a in args if a.split("=", 1)[0] in RUN_DIR_FLAGS]
    if given:
        _fail(f"{argv[0]}: the run directory is positional, not {given[0]}: "
              f"{POSITIONAL_DIRS[argv[0]]}")


def main(argv: list[str] | None = None) -> None:
    """Parse (errors: one line, exit 2), then run the command."""
    argv = sys.argv[1:] if argv is None else argv
    _positional_hint(argv)
    err = io.StringIO()
    commands = {name: _deferred(fn) for name, fn in COMMANDS.items()}
    try:
        with contextlib.redirect_stderr(err):
            thunk = tyro.extras.subcommand_cli_from_dict(
                commands,
                args=argv,
                prog="aes-rl",
                description=__doc__.splitlines()[0],
                registry=REGISTRY,
            )
    except SystemExit as exit_:
        if exit_.code not in (0, None) and err.getvalue().strip():
            _fail(_one_line(err.getvalue()))
        sys.stderr.write(err.getvalue())
        raise
    sys.stderr.write(err.getvalue())
    from aes_rl import faults
    from aes_rl.checkpoint import CheckpointError
    from aes_rl.run import EXIT_NONFINITE, NonFiniteError

    shown = warnings.formatwarning
    warnings.formatwarning = _warning_line
    try:
        thunk()
    except NonFiniteError as error:
        print(f"aes-rl: stopped: {error}", file=sys.stderr)
        raise SystemExit(EXIT_NONFINITE) from None
    except (faults.RunBusy, faults.StorageError, OSError) as error:
        if os.environ.get("AES_RL_DEBUG"):
            raise
        if isinstance(error, OSError):  # met outside a run's own writes (its status too)
            error = faults.plain_error(error)
        print(f"aes-rl: error: {error}", file=sys.stderr)
        raise SystemExit(error.status) from None
    except (ValueError, CheckpointError) as error:
        if os.environ.get("AES_RL_DEBUG"):
            raise
        _fail(str(error).splitlines()[0] if str(error) else type(error).__name__)
    finally:
        warnings.formatwarning = shown
