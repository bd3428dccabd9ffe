"""The host-side driver: run directory, compiled chunks, metrics, evaluation, checkpoints.

A run directory holds:
- `config.json`: the resolved `Config`, the run settings, the format version;
- `metrics.csv`: one row per chunk and seed (counted steps, ticks, wall time, f_mu, evaluation
  of the mean policy, RL share, p, variance, slot utilisation, ...);
- `arrivals.csv`: every told individual (chunk, seed, tick, slot, return, length, p, is_rl);
- `checkpoints/`: orbax-managed whole-state checkpoints (`aes_rl.checkpoint`);
- `policy_seed<k>.npz`: the latest mean policy of each seed, loadable without the state;
- `tb/` (optional): TensorBoard events with the paper's tags test/mean, train/individuals, train/p.

The compiled loop never talks to the host; everything here happens between chunks. SIGINT or
SIGTERM stops after the running chunk and saves; a second signal exits at once (the previous
checkpoint stays valid: orbax renames a checkpoint into place only when it is complete).
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import json
import math
import os
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from aes_rl import checkpoint, loop
from aes_rl.config import RATE_FIELDS, STRUCTURAL, Config

METRICS_FIELDS = (
    "chunk",
    "seed",
    "total_steps",
    "ticks",
    "time",
    "wall_time",
    "arrivals",
    "chunk_arrivals",
    "individual_mean",
    "individual_max",
    "p_mean",
    "f_mu",
    "eval_mean",
    "eval_std",
    "rl_share",
    "critic_steps",
    "critic_per_step",
    "actor_steps",
    "var_mean",
    "utilisation",
    "nonfinite_arrivals",
    "nonfinite_transitions",
)
ARRIVAL_FIELDS = ("chunk", "seed", "tick", "slot", "return", "length", "p", "is_rl", "told")
EXIT_NONFINITE = 3  # the CLI's exit status when the non-finite guard stops a run


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """How to run (not what to compute): budget, seeds, cadence, outputs."""

    run_dir: str
    steps: int = 100_000  # counted env steps per seed (the budget)
    seeds: tuple[int, ...] = (0,)
    eval_episodes: int = 5
    eval_every: int = 1  # chunks
    save_every: int = 1  # chunks
    keep: int = 3  # checkpoints kept
    save_buffer: bool = True
    progress: bool = True
    tensorboard: bool = False
    max_chunks: int | None = None  # stop (and save) after this many chunks in this call
    debug_nans: bool = False  # JAX's NaN checks (slow): find the operation that made a NaN

    def to_dict(self) -> dict:
        """What config.json stores: everything but the per-call `max_chunks`."""
        return dict(dataclasses.asdict(self), max_chunks=None)


class RunError(ValueError):
    """A bad run request, reported before any work starts."""


class NonFiniteError(RuntimeError):
    """The training state went non-finite; the run stopped before saving it."""


def enable_compilation_cache() -> None:
    """JAX's persistent compilation cache (cuts repeated compiles of Brax envs several-fold)."""
    path = os.environ.get("AES_RL_JAX_CACHE", os.path.expanduser("~/.cache/aes_rl/jax"))
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def check_settings(cfg: Config, settings: RunSettings) -> None:
    """One-line errors naming the field, before anything is written."""
    for name in ("steps", "eval_episodes", "eval_every", "save_every", "keep", "max_chunks"):
        value = getattr(settings, name)
        if name == "max_chunks" and value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 2**31 - 1:
            raise RunError(f"{name}: must be an int in [1, 2^31-1], got {value!r}")
    for name in ("save_buffer", "progress", "tensorboard", "debug_nans"):
        if not isinstance(getattr(settings, name), bool):
            raise RunError(f"{name}: expected true/false, got {getattr(settings, name)!r}")
    if settings.steps < cfg.warmup_steps:
        raise RunError(
            f"steps: budget {settings.steps} is smaller than the warm-up "
            f"(warmup_steps={cfg.warmup_steps}); raise --steps or lower --warmup-steps"
        )
    if not settings.seeds or len(set(settings.seeds)) != len(settings.seeds):
        raise RunError(f"seeds: need one or more distinct seeds, got {settings.seeds}")
    if any(not isinstance(s, int) or s < 0 for s in settings.seeds):
        raise RunError(f"seeds: must be non-negative ints, got {settings.seeds}")


def check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise RunError(f"run_dir: cannot write to {run_dir} ({err.strerror or err})") from err


def structure_diff(stored: Config, requested: Config) -> list[str]:
    """Structural fields that differ (a resumed run may not change them)."""
    a, b = stored.to_dict(), requested.to_dict()
    return [f"{k} (stored {a[k]!r}, requested {b[k]!r})" for k in STRUCTURAL if a[k] != b[k]]


def read_run(run_dir: Path) -> tuple[Config, RunSettings]:
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise RunError(f"run_dir: {run_dir} holds no run (no config.json)")
    try:
        record = json.loads(path.read_text())
        cfg = Config.from_dict(record["config"])
        settings = dict(record["settings"], seeds=tuple(record["settings"]["seeds"]))
        return cfg, RunSettings(**settings)
    except (KeyError, TypeError, ValueError) as err:
        raise RunError(f"run_dir: {path} is not a valid aes_rl config ({err})") from err


def _write_json(path: Path, record: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
    tmp.replace(path)


# ------------------------------------------------------------------ metrics


def chunk_rows(
    cfg: Config,
    state: loop.TrainState,
    m: loop.TickMetrics,
    chunk: int,
    wall: float,
    seeds,
    evals: np.ndarray | None,
    ticks_before: np.ndarray,
):
    """Per-seed summary rows and per-arrival rows of one chunk (host side)."""
    c = jax.device_get(state.counters)
    m = jax.device_get(m)
    var_mean = np.asarray(loop.var_mean(cfg, state))
    has_f_mu = cfg.algo != "td3" and cfg.n_mean_evals > 0
    rows, arrivals = [], []
    for i, seed in enumerate(seeds):
        arrived = m.arrived[i]
        finite = arrived & np.isfinite(m.ret[i])  # non-finite returns are counted apart
        rets, ps = m.ret[i][finite], m.p[i][arrived]
        n_rl, n_es = int(c.n_rl[i]) - 1, int(c.n_es[i]) - 1
        ticks = int(c.ticks[i])
        rows.append(
            dict(
                chunk=chunk,
                seed=seed,
                total_steps=int(c.total_steps[i]),
                ticks=ticks,
                time=round(ticks * loop.tick_cost(cfg), 3),
                wall_time=round(wall, 3),
                arrivals=int(c.arrivals[i]),
                chunk_arrivals=int(arrived.sum()),
                individual_mean=float(rets.mean()) if rets.size else math.nan,
                individual_max=float(rets.max()) if rets.size else math.nan,
                p_mean=float(ps.mean()) if ps.size else math.nan,
                f_mu=float(c.f_mu[i]) if has_f_mu else math.nan,
                eval_mean=float(evals[i].mean()) if evals is not None else math.nan,
                eval_std=float(evals[i].std()) if evals is not None else math.nan,
                rl_share=n_rl / (n_rl + n_es) if n_rl + n_es > 0 else 0.0,
                critic_steps=int(c.critic_steps[i]),
                critic_per_step=critic_per_step(cfg, int(c.critic_steps[i]), int(c.total_steps[i])),
                actor_steps=int(c.actor_steps[i]),
                var_mean=float(var_mean[i]),
                utilisation=int(c.busy[i]) / max(1, cfg.num_slots * ticks),
                nonfinite_arrivals=int(c.nonfinite_arrivals[i]),
                nonfinite_transitions=int(c.nonfinite_transitions[i]),
            )
        )
        for t, w in zip(*np.nonzero(arrived)):
            arrivals.append(
                dict(
                    chunk=chunk,
                    seed=seed,
                    tick=int(ticks_before[i]) + int(t),
                    slot=int(w),
                    **{"return": float(m.ret[i][t, w])},
                    length=int(m.length[i][t, w]),
                    p=float(m.p[i][t, w]),
                    is_rl=int(m.is_rl[i][t, w]),
                    told=int(m.told[i][t, w]),
                )
            )
    return rows, arrivals


def critic_per_step(cfg: Config, critic_steps: int, total_steps: int) -> float:
    """Critic steps per counted step after warm-up (the critic never trains before it)."""
    after = total_steps - cfg.warmup_steps
    return round(critic_steps / after, 4) if after > 0 else 0.0


class CsvLog:
    """Append-only CSV that, on resume, keeps only rows of chunks up to the checkpoint."""

    def __init__(self, path: Path, fields, keep_upto: int):
        self.path, self.fields = path, fields
        rows = []
        if path.exists() and keep_upto > 0:
            with path.open(newline="") as f:
                for row in csv.DictReader(f):
                    try:
                        if int(row["chunk"]) <= keep_upto and None not in row.values():
                            rows.append(row)
                    except (KeyError, TypeError, ValueError):
                        continue  # a torn last line from a kill mid-write
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fields)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(path)

    def append(self, rows) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.fields).writerows(rows)


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        raise RunError(f"run_dir: {run_dir} has no metrics.csv")
    with path.open(newline="") as f:
        return [
            {k: float(v) if k not in ("chunk", "seed") else int(v) for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


class Progress:
    """A tqdm bar over counted steps with an honest ETA.

    The ETA is the remaining steps over the rate of the last `window` chunks that started past
    the warm-up (random-action rollouts run at another speed) and were not this call's first
    chunk (it includes compilation); before there is such a chunk it says why it has none.
    Every update is a new line when stderr is not a terminal (logs, CI).
    """

    def __init__(self, total: int, warmup: int, enabled: bool, window: int = 5, clock=time.time):
        self.total, self.warmup, self.enabled, self.clock = total, warmup, enabled, clock
        self.tty = sys.stderr.isatty()
        self.rates: collections.deque = collections.deque(maxlen=window)  # (seconds, steps)
        self.last: tuple[float, int] | None = None
        self.bar = tqdm.tqdm(
            total=total,
            file=sys.stderr if self.tty else io.StringIO(),
            disable=not enabled,
            bar_format="{percentage:5.1f}%|{bar:24}| {desc}",
            dynamic_ncols=True,
            mininterval=0,
        )

    def eta(self, steps: int) -> str:
        if self.rates:
            seconds = sum(dt for dt, _ in self.rates)
            rate = sum(n for _, n in self.rates) / max(seconds, 1e-9)
            if rate > 0:
                left = max(0, self.total - steps) / rate
                return time.strftime("%H:%M:%S", time.gmtime(left))
        return "? (warming up)" if steps < self.warmup else "? (measuring)"

    def update(self, steps: int, ticks_per_s: float, f_mu: float, eval_mean: float) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if self.last is not None and self.last[1] >= self.warmup:
            self.rates.append((now - self.last[0], steps - self.last[1]))
        # The first update of a call closes a chunk that started at the call's start (compile).
        self.last = (now, steps)
        self.bar.n = min(steps, self.total)
        self.bar.set_description_str(
            f"steps {steps}/{self.total} | {ticks_per_s:7.1f} ticks/s | f_mu {f_mu:9.2f} | "
            f"eval {eval_mean:9.2f} | ETA {self.eta(steps)}",
            refresh=self.tty,
        )
        if not self.tty:
            print(str(self.bar), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled:
            self.bar.close()


class _Stop:
    """First SIGINT/SIGTERM: finish the chunk, save, exit. Second: exit at once."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            print(
                "\nsecond interrupt: exiting now (the last checkpoint is intact)",
                file=sys.stderr,
                flush=True,
            )
            os._exit(130)
        self.requested = True
        print(
            "\ninterrupt: finishing this chunk, saving a checkpoint, then exiting "
            "(interrupt again to exit at once)",
            file=sys.stderr,
            flush=True,
        )

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


# ------------------------------------------------------------------ the driver


@dataclasses.dataclass
class RunResult:
    cfg: Config  # as run (a device clock's calibrated rates included)
    state: loop.TrainState
    chunks: int
    rows: list[dict]
    interrupted: bool
    run_dir: Path


def _resolve_clock(cfg: Config, run_dir: Path) -> tuple[Config, dict | None]:
    """The device cost model: an existing run keeps the rates it was calibrated with; a new
    one is calibrated now, at its shapes (returns the measured seconds to store)."""
    if cfg.cost_model != "device":
        return cfg, None
    if (run_dir / "config.json").exists():
        stored, _ = read_run(run_dir)
        if stored.cost_model == "device":
            rates = {name: getattr(stored, name) for name in RATE_FIELDS}
            return cfg.replace(**rates), None
    from aes_rl import clock

    cfg, costs = clock.calibrate(cfg)
    print(
        "device clock: env step {env_step_s:.2e} s, actor step {actor_step_s:.2e} s, critic "
        "step {critic_step_s:.2e} s".format(**costs)
        + f" -> per tick: {cfg.env_steps_per_tick:g} env, {cfg.actor_steps_per_tick:g} actor, "
        f"{cfg.critic_steps_per_tick:g} critic steps",
        file=sys.stderr,
    )
    return cfg, costs


def _open_run(cfg: Config, settings: RunSettings, run_dir: Path, calibration: dict | None):
    """New run: write config.json. Existing run: refuse structural changes, else continue."""
    record = {
        "format_version": checkpoint.FORMAT_VERSION,
        "config": cfg.to_dict(),
        "settings": settings.to_dict(),
    }
    if calibration is not None:
        record["calibration"] = calibration
    if (run_dir / "config.json").exists():
        stored_record = json.loads((run_dir / "config.json").read_text())
        if "calibration" in stored_record and calibration is None:
            record["calibration"] = stored_record["calibration"]
        stored, stored_settings = read_run(run_dir)
        diff = structure_diff(stored, cfg)
        if tuple(stored_settings.seeds) != tuple(settings.seeds):
            diff.append(
                f"seeds (stored {list(stored_settings.seeds)}, requested {list(settings.seeds)})"
            )
        if diff:
            raise RunError(
                f"config: {run_dir} holds a run with a different structure: " + "; ".join(diff)
            )
        changed = [k for k, v in cfg.to_dict().items() if stored.to_dict()[k] != v]
        if changed:
            warnings.warn(
                f"resume: hyper-parameters changed from the stored run: "
                f"{', '.join(changed)} (the continuation is not the same run)",
                stacklevel=3,
            )
    _write_json(run_dir / "config.json", record)


def train(cfg: Config, settings: RunSettings) -> RunResult:
    """Run (or continue) `cfg` in `settings.run_dir` until the step budget is spent.

    Raises NonFiniteError (nothing of the bad chunk saved or logged) if the ES state, the
    critic or the actors hold a NaN or an inf after a chunk.
    """
    run_dir = Path(settings.run_dir)
    check_settings(cfg, settings)
    check_writable(run_dir)
    cfg, calibration = _resolve_clock(cfg, run_dir)
    _open_run(cfg, settings, run_dir, calibration)
    if settings.debug_nans:
        jax.config.update("jax_debug_nans", True)
    seeds = tuple(settings.seeds)
    ckpt = checkpoint.Checkpointer(run_dir / "checkpoints", settings.keep, settings.save_buffer)
    state = loop.init_batch(cfg, seeds)
    chunk_i, wall = 0, 0.0
    if ckpt.steps():
        chunk_i, state, meta = ckpt.restore_latest(state, reject=_nonfinite_reason(cfg))
        wall = float(meta.get("wall_time", 0.0))
        if not meta.get("has_buffer"):
            warnings.warn(
                "resume: the replay buffer was not checkpointed; continuing with an "
                "empty buffer (the continuation is not the same run)",
                stacklevel=2,
            )
        print(
            f"resumed {run_dir} at chunk {chunk_i} "
            f"({int(np.min(state.counters.total_steps))} counted steps)",
            file=sys.stderr,
        )
    metrics_log = CsvLog(run_dir / "metrics.csv", METRICS_FIELDS, chunk_i)
    arrivals_log = CsvLog(run_dir / "arrivals.csv", ARRIVAL_FIELDS, chunk_i)
    tb = _tensorboard(run_dir, seeds) if settings.tensorboard else None
    progress = Progress(settings.steps, cfg.warmup_steps, settings.progress)
    try:
        return _drive(
            cfg, settings, state, chunk_i, wall, ckpt, metrics_log, arrivals_log, tb, progress
        )
    finally:
        progress.close()
        ckpt.close()
        for writer in (tb or {}).values():
            writer.close()


def _drive(cfg, settings, state, chunk_i, wall, ckpt, metrics_log, arrivals_log, tb, progress):
    """The chunk loop of `train`: run, check, log, save, until the budget or a stop."""
    run_dir, seeds = Path(settings.run_dir), tuple(settings.seeds)
    train_chunk = loop.make_train_chunk(cfg, len(seeds))
    evaluate = loop.make_evaluate(cfg, settings.eval_episodes)
    rows: list[dict] = []
    done_this_call, interrupted = 0, False
    with _Stop() as stop:
        while int(np.min(jax.device_get(state.counters.total_steps))) < settings.steps:
            ticks_before = np.asarray(state.counters.ticks)
            untold_before = np.asarray(state.counters.nonfinite_arrivals)
            t0 = time.time()
            state, m = train_chunk(state)
            jax.block_until_ready(state)
            dt = time.time() - t0
            wall += dt
            chunk_i += 1
            done_this_call += 1
            _stop_if_nonfinite(cfg, state, chunk_i, seeds, ckpt)
            evals = None
            if chunk_i % settings.eval_every == 0:
                key = jax.random.fold_in(jax.random.key(12345), chunk_i)
                evals = np.asarray(evaluate(loop.mean_params(cfg, state), key))
            new_rows, arrivals = chunk_rows(
                cfg, state, m, chunk_i, wall, seeds, evals, ticks_before
            )
            metrics_log.append(new_rows)
            arrivals_log.append(arrivals)
            rows.extend(new_rows)
            _warn_untold(new_rows, untold_before)
            if tb is not None:
                _tb_write(tb, new_rows, arrivals)
            progress.update(
                min(r["total_steps"] for r in new_rows),
                cfg.ticks_per_chunk / max(dt, 1e-9),
                new_rows[0]["f_mu"],
                new_rows[0]["eval_mean"],
            )
            finished = min(r["total_steps"] for r in new_rows) >= settings.steps
            limit = settings.max_chunks is not None and done_this_call >= settings.max_chunks
            interrupted = stop.requested or limit
            if chunk_i % settings.save_every == 0 or finished or interrupted:
                _save(ckpt, cfg, state, chunk_i, wall, seeds, run_dir)
            if interrupted:
                break
    return RunResult(cfg, state, chunk_i, rows, interrupted, run_dir)


def _nonfinite_reason(cfg: Config):
    """For restore: why a restored state may not be resumed from (None: it may)."""

    def reason(state) -> str | None:
        bad = loop.nonfinite_parts(cfg, state)
        return None if not bad else f"non-finite {bad[0][1]}"

    return reason


def _stop_if_nonfinite(cfg: Config, state, chunk_i: int, seeds, ckpt) -> None:
    """Raise NonFiniteError naming what went non-finite and when (before anything is saved)."""
    bad = loop.nonfinite_parts(cfg, state)
    if not bad:
        return
    seed_i, part = bad[0]
    more = f" (and {len(bad) - 1} more part(s) or seed(s))" if len(bad) > 1 else ""
    steps = int(np.asarray(state.counters.total_steps)[seed_i])
    saved = ckpt.steps()
    last = f"chunk {saved[-1]}" if saved else "none"
    raise NonFiniteError(
        f"non-finite values in the {part} of seed {seeds[seed_i]}{more} after chunk {chunk_i} "
        f"({steps} counted steps); stopped before saving; last good checkpoint: {last} "
        f"(`aes-rl resume` continues from it; --debug-nans finds the operation)"
    )


def _warn_untold(new_rows: list[dict], before: np.ndarray) -> None:
    """One stderr line per chunk and seed in which arrivals were not told (non-finite return
    or mean fitness); `before` [seeds] holds the counts before the chunk."""
    for i, r in enumerate(new_rows):
        n = r["nonfinite_arrivals"] - int(before[i])
        if n > 0:
            print(
                f"warning: chunk {r['chunk']} seed {r['seed']}: {n} arrival(s) with a non-finite "
                f"return or mean fitness were not told to the ES",
                file=sys.stderr,
            )


def _save(ckpt, cfg: Config, state, chunk_i: int, wall: float, seeds, run_dir: Path) -> None:
    meta = {
        "chunk": chunk_i,
        "wall_time": wall,
        "config": cfg.to_dict(),
        "seeds": list(seeds),
        "total_steps": [int(x) for x in np.asarray(state.counters.total_steps)],
    }
    ckpt.save(chunk_i, state, meta)
    means = np.asarray(loop.mean_params(cfg, state))
    for i, seed in enumerate(seeds):
        checkpoint.export_policy(run_dir / f"policy_seed{seed}.npz", cfg, means[i], seed)


def resume(run_dir: str | Path, steps: int | None = None, **settings_overrides) -> RunResult:
    """Continue a run directory with its stored config (optionally a larger budget)."""
    cfg, settings = read_run(Path(run_dir))
    changes = dict(settings_overrides, run_dir=str(run_dir))
    if steps is not None:
        changes["steps"] = steps
    return train(cfg, dataclasses.replace(settings, **changes))


def _tensorboard(run_dir: Path, seeds) -> dict:
    from tensorboardX import SummaryWriter

    return {seed: SummaryWriter(str(run_dir / "tb" / f"seed{seed}")) for seed in seeds}


def _tb_write(tb: dict, rows, arrivals) -> None:
    for row in rows:
        w, step = tb[row["seed"]], row["total_steps"]
        if not math.isnan(row["eval_mean"]):
            w.add_scalar("test/mean", row["eval_mean"], step)
        w.add_scalar("train/f_mu", row["f_mu"], step)
        w.add_scalar("train/utilisation", row["utilisation"], step)
        w.add_scalar("train/var_mean", row["var_mean"], step)
    for a in arrivals:
        w = tb[a["seed"]]
        w.add_scalar("train/individuals", a["return"], a["tick"])
        w.add_scalar("train/p", a["p"], a["tick"])
    for w in tb.values():
        w.flush()


def policy_actions(path: Path, obs: Any) -> jax.Array:
    """Actions of an exported policy (used by tests and the eval command)."""
    spec, flat, _ = checkpoint.load_policy(path)
    return spec.apply(jnp.asarray(flat), jnp.asarray(obs))
