"""The host-side driver: a run (or a sweep) from its first chunk to its budget.

`train` opens the run directory (`aes_rl.rundir`), builds the rows' states, then loops over
compiled chunks: run, check for non-finite values, evaluate, log (`aes_rl.metrics`, optional
`aes_rl.tensorboard`), show progress (`aes_rl.progress`), checkpoint (`aes_rl.checkpoint`).
A run directory holds:
- `config.json`: the resolved `Config`, the run settings (a sweep's grid included), the
  format version;
- `metrics.csv`: one row per chunk and row of the run (counted steps, ticks, wall time, f_mu,
  evaluation of the mean policy, RL share, p, variance, slot utilisation, ...); a row is one
  seed, or in a sweep one (setting, seed), with the swept fields as columns;
- `arrivals.csv`: every individual's arrival (chunk, seed, row, tick, slot, return, ...);
- `checkpoints/`: orbax-managed whole-state checkpoints (`aes_rl.checkpoint`);
- `policy_seed<k>.npz` (`policy_row<i>.npz` in a sweep): the latest mean policy of each row,
  loadable without the state;
- `tb/` (optional): TensorBoard events with the paper's tags test/mean, train/individuals, train/p;
- `run.lock`: the lock that keeps a second process off a live run (`aes_rl.faults`).

The compiled loop never talks to the host; everything here happens between chunks. SIGINT or
SIGTERM stops after the running chunk and saves; a second signal exits at once (the previous
checkpoint stays valid: orbax renames a checkpoint into place only when it is complete).
On a run over several processes (`aes_rl.hosts`) every process runs this driver: the per-row
counters and metrics are gathered to all of them after each chunk, so they stop, evaluate and
save at the same chunk; process 0 alone writes the files above (each process writes its own
rows into the checkpoints).
A kill at any moment leaves a run that `resume` continues (before its first checkpoint is
complete: from its beginning); an OS-level write error (a full disk, ...) stops it with one
line and the last checkpoint intact (`aes_rl.faults`).
The names of the split-out modules stay importable from here (`run.RunSettings`, ...).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aes_rl import checkpoint, faults, hosts, program, sweep
from aes_rl.config import Config
from aes_rl.engine import TrainState
from aes_rl.metrics import (  # noqa: F401 - re-exported
    ARRIVAL_FIELDS,
    METRICS_FIELDS,
    CsvLog,
    chunk_rows,
    critic_per_step,
    metrics_fields,
    read_metrics,
    warn_untold,
)
from aes_rl.progress import Progress, Stop  # noqa: F401 - re-exported
from aes_rl.rundir import (  # noqa: F401 - re-exported
    RunError,
    RunSettings,
    check_run_dir,
    check_settings,
    check_writable,
    mark_checkpointed,
    open_run,
    read_run,
    resolve_clock,
    structure_diff,
    write_record,
)
from aes_rl.sweep import Row
from aes_rl.tensorboard import write as tb_write
from aes_rl.tensorboard import writers as tb_writers

EXIT_NONFINITE = 3  # the CLI's exit status when the non-finite guard stops a run


class NonFiniteError(RuntimeError):
    """The training state went non-finite; the run stopped before saving it."""


def enable_compilation_cache() -> None:
    """JAX's persistent compilation cache (cuts repeated compiles of Brax envs several-fold)."""
    path = os.environ.get("AES_RL_JAX_CACHE", os.path.expanduser("~/.cache/aes_rl/jax"))
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


# ------------------------------------------------------------------ the driver


@dataclasses.dataclass
class RunResult:
    cfg: Config  # as run (a device clock's calibrated rates included)
    state: TrainState
    chunks: int
    rows: list[dict]
    interrupted: bool
    run_dir: Path


def train(cfg: Config, settings: RunSettings) -> RunResult:
    """Run (or continue) `cfg` in `settings.run_dir` until the step budget is spent.

    Raises NonFiniteError (nothing of the bad chunk saved or logged) if the ES state, the
    critic or the actors hold a NaN or an inf after a chunk; `faults.RunBusy` if another
    process runs in the directory; `faults.StorageError` (one line, the last checkpoint
    intact) on an OS-level error such as a full disk. On several processes (`aes_rl.hosts`)
    every process calls this with the same arguments; only the main one writes the run
    directory's files.
    """
    run_dir = Path(settings.run_dir)
    check_settings(cfg, settings)
    rows = sweep.expand(cfg, settings.grid, settings.seeds)
    if hosts.count() > 1:
        _check_hosts(cfg, len(rows))
    check_run_dir(run_dir)  # a directory that holds no run: refused before anything is written
    check_writable(run_dir)
    lock = _lock(run_dir)
    try:
        return _train(cfg, settings, rows, run_dir)
    except Exception as err:
        ours = (RunError, checkpoint.CheckpointError, NonFiniteError)  # already one line
        failure = None if isinstance(err, ours) else faults.storage_error(err, run_dir)
        if failure is None:
            raise
        raise failure from err
    finally:
        if lock is not None:
            lock.release()


def _lock(run_dir: Path) -> faults.RunLock | None:
    """The run directory's lock (`faults.RunLock`), taken by the main process; every process
    of the run is refused when it is held."""
    lock, busy = None, None
    if hosts.is_main():
        try:
            lock = faults.RunLock.acquire(run_dir)
        except faults.RunBusy as err:
            busy = err
    if hosts.any_process(busy is not None):
        raise busy or faults.RunBusy(f"run_dir: {run_dir} has a run in progress (see process 0)")
    return lock


def _train(cfg: Config, settings: RunSettings, rows: list[Row], run_dir: Path) -> RunResult:
    """`train` once the run directory is this process's (its lock held)."""
    stored = check_run_dir(run_dir)  # again, under the lock
    program.bound_compiled_programs()  # a process that trains many configurations, one by one
    cfg, calibration = resolve_clock(cfg, stored)
    prog = program.get(cfg, len(rows), settings.rows)  # the run's one program
    record = open_run(cfg, settings, run_dir, calibration, stored)
    if stored is None and hosts.is_main():  # a new run: a kill from here on leaves a run
        write_record(run_dir, record, 0)  # that `aes-rl resume` continues
    hosts.sync("aes_rl.open_run")
    if settings.debug_nans:
        jax.config.update("jax_debug_nans", True)
    ckpt = checkpoint.Checkpointer(run_dir / "checkpoints", settings.keep, settings.save_buffer)
    try:  # nothing of the stored run is rewritten until its state is restored
        chunk_i, state, wall = _restore(prog, settings, rows, run_dir, stored, ckpt)
        if chunk_i > 0:  # restored from a checkpoint (a record written before the marker)
            record["checkpointed"] = True
        if hosts.is_main():
            write_record(run_dir, record, chunk_i)
        out = _Outputs.open(settings, rows, chunk_i, record)
    except BaseException:
        ckpt.close()
        raise
    try:
        return _drive(prog, cfg, settings, rows, state, chunk_i, wall, ckpt, out)
    finally:
        out.close()
        ckpt.close()


def _restore(prog: program.Program, settings, rows, run_dir: Path, stored, ckpt):
    """The rows' state: fresh, or restored from the latest valid checkpoint of a stored run
    (`stored`: its record; None: a new run). A stored run killed before its first checkpoint
    was complete starts from its beginning (its logged chunks are dropped); one whose
    checkpoints are gone is refused. Returns (chunk, state, wall-clock seconds so far)."""
    stored_steps = None if stored is None else stored.settings.steps
    state = prog.init([r.cfg for r in rows], [r.seed for r in rows])
    if not ckpt.steps():
        if stored is not None and stored.record.get("checkpointed"):
            raise RunError(
                f"resume: {run_dir} has logged chunks (metrics.csv) but no checkpoint to "
                "continue from (its checkpoints are gone); start a new run directory"
            )
        if stored is not None and hosts.is_main():
            logged = run_dir / "metrics.csv"
            n = len(logged.read_text().splitlines()) - 1 if logged.exists() else 0
            dropped = f"; its {n} row(s) in metrics.csv are dropped" if n > 0 else ""
            print(
                f"resume: {run_dir} has no complete checkpoint yet (stopped before its first "
                f"save finished); starting the run from its beginning{dropped}",
                file=sys.stderr,
            )
        return 0, state, 0.0
    chunk_i, state, meta = ckpt.restore_latest(state, reject=_nonfinite_reason(prog))
    if not meta.get("has_buffer"):
        warnings.warn(
            "resume: the replay buffer was not checkpointed; continuing with an "
            "empty buffer (the continuation is not the same run)",
            stacklevel=3,
        )
    done = int(np.min(hosts.fetch(state.counters.total_steps)))  # on every process
    if settings.steps < min(done, stored_steps):  # a finished run may overshoot its budget
        raise RunError(
            f"steps: the budget {settings.steps} is below the stored {stored_steps} and the "
            f"{done} counted steps {run_dir} has already taken; give a larger one"
        )
    if hosts.is_main():
        print(f"resumed {run_dir} at chunk {chunk_i} ({done} counted steps)", file=sys.stderr)
    return chunk_i, state, float(meta.get("wall_time", 0.0))


def _check_hosts(cfg: Config, num_rows: int) -> None:
    """What a run over several processes cannot do, refused before any work."""
    if cfg.cost_model == "device":
        raise RunError(
            "cost_model: the device clock is calibrated per process, so processes would "
            "disagree; use cost_model=paper (or calibrate in one process and resume)"
        )
    try:
        hosts.process_devices(num_rows)
    except hosts.HostsError as err:
        raise RunError(str(err)) from None


@dataclasses.dataclass
class _Outputs:
    """Where a chunk's rows go: the CSVs, TensorBoard, the progress line (main process only;
    the others keep nothing)."""

    metrics: CsvLog | None
    arrivals: CsvLog | None
    tb: dict | None
    progress: Progress
    record: dict | None = None  # config.json's record (main process)

    @classmethod
    def open(
        cls, settings: RunSettings, rows: list[Row], chunk_i: int, record: dict | None = None
    ) -> _Outputs:
        run_dir, main = Path(settings.run_dir), hosts.is_main()
        warmup = min(r.cfg.warmup_steps for r in rows)
        return cls(
            CsvLog(run_dir / "metrics.csv", metrics_fields(settings.grid), chunk_i)
            if main
            else None,
            CsvLog(run_dir / "arrivals.csv", ARRIVAL_FIELDS, chunk_i) if main else None,
            tb_writers(run_dir, rows) if settings.tensorboard and main else None,
            Progress(settings.steps, warmup, settings.progress and main),
            record if main else None,
        )

    def saved(self, run_dir: Path) -> None:
        """A checkpoint is complete: config.json records that the run has one."""
        if self.record is not None:
            mark_checkpointed(run_dir, self.record)

    def write(self, new_rows: list[dict], arrivals: list[dict]) -> None:
        if self.metrics is not None:
            self.metrics.append(new_rows)
            self.arrivals.append(arrivals)
        if self.tb is not None:
            tb_write(self.tb, new_rows, arrivals)

    def close(self) -> None:
        self.progress.close()
        for writer in (self.tb or {}).values():
            writer.close()


def _drive(prog, cfg, settings, rows_of_run, state, chunk_i, wall, ckpt, out: _Outputs):
    """The chunk loop of `train`: run, check, log, save, until the budget or a stop."""
    run_dir = Path(settings.run_dir)
    train_chunk = prog.chunk(cfg.ticks_per_chunk)
    evaluate = prog.evaluate(settings.eval_episodes)
    rows: list[dict] = []
    done_this_call, interrupted = 0, False
    counters = hosts.fetch(state.counters)
    with Stop() as stop:
        while int(np.min(counters.total_steps)) < settings.steps:
            ticks_before, untold_before = counters.ticks, counters.nonfinite_arrivals
            t0 = time.time()
            state, m = train_chunk(state)
            jax.block_until_ready(state)
            dt = time.time() - t0
            wall += dt
            chunk_i += 1
            done_this_call += 1
            _stop_if_nonfinite(prog, state, chunk_i, rows_of_run, ckpt)
            steps = hosts.fetch(state.counters.total_steps)
            due = eval_due(settings, chunk_i, counters.total_steps, steps)
            evals = None
            if due.any():
                key = jax.random.fold_in(jax.random.key(12345), chunk_i)
                got = hosts.fetch(evaluate(prog.means(state), key))
                evals = [g if d else None for g, d in zip(got, due)]
            new_rows, arrivals = chunk_rows(
                cfg, state, m, chunk_i, wall, rows_of_run, evals, ticks_before, prog.var_mean(state)
            )
            counters = hosts.fetch(state.counters)
            out.write(new_rows, arrivals)
            rows.extend(new_rows)
            if hosts.is_main():
                warn_untold(new_rows, untold_before, rows_of_run)
            out.progress.update(
                min(r["total_steps"] for r in new_rows),
                cfg.ticks_per_chunk / max(dt, 1e-9),
                new_rows[0]["f_mu"],
                new_rows[0]["eval_mean"],
            )
            finished = min(r["total_steps"] for r in new_rows) >= settings.steps
            limit = settings.max_chunks is not None and done_this_call >= settings.max_chunks
            interrupted = hosts.any_process(stop.requested) or limit
            if chunk_i % settings.save_every == 0 or finished or interrupted:
                _save(ckpt, prog, cfg, state, chunk_i, wall, rows_of_run, run_dir)
                out.saved(run_dir)
            if interrupted:
                break
    if done_this_call == 0 and chunk_i > 0:  # a finished run, resumed: its policies again
        _export_policies(prog, state, rows_of_run, run_dir)  # (a kill may have cut them)
    return RunResult(cfg, state, chunk_i, rows, interrupted, run_dir)


def eval_due(settings: RunSettings, chunk: int, before: np.ndarray, after: np.ndarray):
    """[rows] bool: which rows the chunk that took the counted steps from `before` to `after`
    evaluates. By chunks (`eval_every`), every row alike; by counted steps
    (`eval_every_steps` > 0), a row whose steps passed a multiple of it, and every row that
    reached the budget (its final evaluation)."""
    before, after = np.asarray(before), np.asarray(after)
    every = settings.eval_every_steps
    if every <= 0:
        return np.full(after.shape, chunk % settings.eval_every == 0)
    return (after // every > before // every) | (after >= settings.steps)


def _nonfinite_reason(prog: program.Program):
    """For restore: why a restored state may not be resumed from (None: it may)."""

    def reason(state) -> str | None:
        bad = prog.nonfinite_parts(state)
        return None if not bad else f"non-finite {bad[0][1]}"

    return reason


def _stop_if_nonfinite(prog, state, chunk_i: int, rows: list[Row], ckpt) -> None:
    """Raise NonFiniteError naming what went non-finite and when (before anything is saved)."""
    bad = prog.nonfinite_parts(state)
    if not bad:
        return
    seed_i, part = bad[0]
    more = f" (and {len(bad) - 1} more part(s) or row(s))" if len(bad) > 1 else ""
    steps = int(hosts.fetch(state.counters.total_steps)[seed_i])
    saved = ckpt.steps()
    last = f"chunk {saved[-1]}" if saved else "none"
    raise NonFiniteError(
        f"non-finite values in the {part} of {rows[seed_i].label}{more} after chunk {chunk_i} "
        f"({steps} counted steps); stopped before saving; last good checkpoint: {last} "
        f"(`aes-rl resume` continues from it; --debug-nans finds the operation)"
    )


def _save(ckpt, prog, cfg: Config, state, chunk_i: int, wall, rows: list[Row], run_dir) -> None:
    meta = {
        "chunk": chunk_i,
        "wall_time": wall,
        "config": cfg.to_dict(),
        "seeds": [r.seed for r in rows],
        "rows": [dict(r.setting) for r in rows],
        "total_steps": [int(x) for x in hosts.fetch(state.counters.total_steps)],
    }
    ckpt.save(chunk_i, state, meta)
    _export_policies(prog, state, rows, run_dir)


def _export_policies(prog: program.Program, state, rows: list[Row], run_dir) -> None:
    means = hosts.fetch(prog.means(state))
    if hosts.is_main():
        for i, row in enumerate(rows):
            checkpoint.export_policy(run_dir / row.policy_file, row.cfg, means[i], row.seed)


def resume(run_dir: str | Path, steps: int | None = None, **settings_overrides) -> RunResult:
    """Continue a run directory with its stored config (optionally a larger budget)."""
    cfg, settings = read_run(Path(run_dir))
    changes = dict(settings_overrides, run_dir=str(run_dir))
    if steps is not None:
        changes["steps"] = steps
    return train(cfg, dataclasses.replace(settings, **changes))


def policy_actions(path: Path, obs: Any) -> jax.Array:
    """Actions of an exported policy (used by tests and the eval command)."""
    spec, flat, _ = checkpoint.load_policy(path)
    return spec.apply(jnp.asarray(flat), jnp.asarray(obs))
