"""A run directory's records: the settings of a run, `config.json`, checks before any work.

`config.json` holds the resolved `Config`, the `RunSettings` (a sweep's grid included), the
format version and, for the `device` clock, the calibration. Every check here raises a one-line
`RunError` naming the field, before anything is written.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import warnings
from pathlib import Path
from typing import NamedTuple

from aes_rl import checkpoint, faults, program, sweep
from aes_rl.config import RATE_FIELDS, STRUCTURAL, Config


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """How to run (not what to compute): budget, seeds, cadence, outputs."""

    run_dir: str
    steps: int = 100_000  # counted env steps per seed (the budget)
    seeds: tuple[int, ...] = (0,)  # every setting runs with each of these seeds
    grid: sweep.Grid = ()  # swept traced fields and their values (`aes_rl.sweep`); () no sweep
    eval_episodes: int = 5
    eval_every: int = 1  # chunks
    eval_every_steps: int = 0  # > 0: evaluate a row as its counted steps pass each multiple
    save_every: int = 1  # chunks
    keep: int = 3  # checkpoints kept
    save_buffer: bool = True
    progress: bool = True
    tensorboard: bool = False
    max_chunks: int | None = None  # stop (and save) after this many chunks in this call
    debug_nans: bool = False  # JAX's NaN checks (slow): find the operation that made a NaN
    rows: str = "auto"  # how rows run in the program: map (one after another), vmap, auto

    def to_dict(self) -> dict:
        """What config.json stores: everything but the per-call `max_chunks`."""
        return dict(dataclasses.asdict(self), max_chunks=None, grid=sweep.grid_to_json(self.grid))


class RunError(ValueError):
    """A bad run request, reported before any work starts."""


def check_settings(cfg: Config, settings: RunSettings) -> None:
    """One-line errors naming the field, before anything is written."""
    for name in ("steps", "eval_episodes", "eval_every", "save_every", "keep", "max_chunks"):
        value = getattr(settings, name)
        if name == "max_chunks" and value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 2**31 - 1:
            raise RunError(f"{name}: must be an int in [1, 2^31-1], got {value!r}")
    every = settings.eval_every_steps
    if not isinstance(every, int) or isinstance(every, bool) or not 0 <= every <= 2**31 - 1:
        raise RunError(f"eval_every_steps: must be an int in [0, 2^31-1], got {every!r}")
    if settings.rows not in program.ROW_MODES:
        raise RunError(f"rows: unknown {settings.rows!r}; allowed: {', '.join(program.ROW_MODES)}")
    for name in ("save_buffer", "progress", "tensorboard", "debug_nans"):
        if not isinstance(getattr(settings, name), bool):
            raise RunError(f"{name}: expected true/false, got {getattr(settings, name)!r}")
    try:
        sweep.check_grid(cfg, settings.grid)
    except sweep.SweepError as err:
        raise RunError(str(err)) from None
    warmup = max(r.cfg.warmup_steps for r in sweep.expand(cfg, settings.grid, (0,)))
    if settings.steps < warmup:
        raise RunError(
            f"steps: budget {settings.steps} is smaller than the warm-up "
            f"(warmup_steps={warmup}); raise the budget (--steps) or lower warmup_steps"
        )
    if not settings.seeds or len(set(settings.seeds)) != len(settings.seeds):
        raise RunError(f"seeds: need one or more distinct seeds, got {settings.seeds}")
    if any(not isinstance(s, int) or s < 0 for s in settings.seeds):
        raise RunError(f"seeds: must be non-negative ints, got {settings.seeds}")


def check_writable(run_dir: Path, field: str = "run_dir", make: bool = True) -> None:
    """`run_dir` exists (made if need be, with `make`) and can be written; else a RunError
    naming `field`."""
    try:
        if make:
            run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write_test.{os.getpid()}"  # one per process of a multi-process run
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise RunError(f"{field}: cannot write to {run_dir} ({err.strerror or err})") from err


def structure_diff(stored: Config, requested: Config) -> list[str]:
    """Structural fields that differ (a resumed run may not change them)."""
    a, b = stored.to_dict(), requested.to_dict()
    return [f"{k} (stored {a[k]!r}, requested {b[k]!r})" for k in STRUCTURAL if a[k] != b[k]]


class StoredRun(NamedTuple):
    """A run directory's config.json: the record as written, and its config and settings."""

    record: dict
    cfg: Config
    settings: RunSettings


def _record(run_dir: Path) -> dict:
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise RunError(f"run_dir: {run_dir} holds no run (no config.json)")
    try:
        record = json.loads(path.read_text())
    except ValueError as err:
        raise RunError(f"run_dir: {path} is not a valid aes_rl config ({err})") from err
    if not isinstance(record, dict):
        raise RunError(f"run_dir: {path} is not a valid aes_rl config (not a JSON object)")
    return record


def _parse(run_dir: Path, record: dict) -> StoredRun:
    try:
        cfg = Config.from_dict(record["config"])
        settings = dict(
            record["settings"],
            seeds=tuple(record["settings"]["seeds"]),
            grid=sweep.grid_from_json(record["settings"].get("grid")),
        )
        return StoredRun(record, cfg, RunSettings(**settings))
    except (KeyError, TypeError, ValueError) as err:
        path = Path(run_dir) / "config.json"
        raise RunError(f"run_dir: {path} is not a valid aes_rl config ({err})") from err


def load_run(run_dir: Path) -> StoredRun:
    """The stored run of `run_dir` (a one-line RunError if it holds none or an unreadable one)."""
    return _parse(run_dir, _record(run_dir))


def read_run(run_dir: Path) -> tuple[Config, RunSettings]:
    stored = load_run(run_dir)
    return stored.cfg, stored.settings


def _write_json(path: Path, record: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
    tmp.replace(path)


def resolve_clock(cfg: Config, stored: StoredRun | None) -> tuple[Config, dict | None]:
    """The device cost model: an existing run (`stored`) keeps the rates it was calibrated
    with; a new one is calibrated now, at its shapes (returns the measured seconds to store)."""
    if cfg.cost_model != "device":
        return cfg, None
    if stored is not None and stored.cfg.cost_model == "device":
        rates = {name: getattr(stored.cfg, name) for name in RATE_FIELDS}
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


def check_run_dir(run_dir: Path) -> StoredRun | None:
    """Before any work: a directory without config.json must hold nothing (a run never
    writes over files it did not make), and a stored run must be of this version's format.
    Returns the stored run (None: a new one)."""
    path = run_dir / "config.json"
    if not path.exists():
        if run_dir.is_dir():
            # what a run makes before its config.json: another process's `check_writable`
            # probe, the lock of `faults.RunLock`, config.json's temporary (a run killed then)
            ours = (".write_test.", faults.LOCK_NAME, "config.json.tmp")
            foreign = sorted(p.name for p in run_dir.iterdir() if not p.name.startswith(ours))
            if foreign:
                raise RunError(
                    f"run_dir: {run_dir} is not empty and holds no run (no config.json; it "
                    f"holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}); "
                    "choose a new or empty directory"
                )
        return None
    record = _record(run_dir)
    version = record.get("format_version")
    if version != checkpoint.FORMAT_VERSION:  # before parsing: an old config may not parse
        raise RunError(
            f"run_dir: {run_dir} was written in format {version} by another aes_rl version; "
            f"this one reads format {checkpoint.FORMAT_VERSION} (start a new run directory, "
            "or continue it with the version that wrote it)"
        )
    return _parse(run_dir, record)


def open_run(
    cfg: Config,
    settings: RunSettings,
    run_dir: Path,
    calibration: dict | None,
    stored: StoredRun | None,
) -> dict:
    """The config.json record of this call, checked against a stored run: structural changes
    are refused; changed hyper-parameters are kept in the record's `history` (and warned
    about). Writes nothing: `write_record` does, once the run has restored its state."""
    record = {
        "format_version": checkpoint.FORMAT_VERSION,
        "config": cfg.to_dict(),
        "settings": settings.to_dict(),
    }
    if calibration is not None:
        record["calibration"] = calibration
    if stored is None:
        return record
    stored_record, stored_settings = stored.record, stored.settings
    if "calibration" in stored_record and calibration is None:
        record["calibration"] = stored_record["calibration"]
    if stored_record.get("checkpointed"):
        record["checkpointed"] = True
    diff = structure_diff(stored.cfg, cfg)
    if tuple(stored_settings.seeds) != tuple(settings.seeds):
        diff.append(
            f"seeds (stored {list(stored_settings.seeds)}, requested {list(settings.seeds)})"
        )
    if stored_settings.grid != settings.grid:
        diff.append(
            f"grid (stored {sweep.grid_to_json(stored_settings.grid)}, requested "
            f"{sweep.grid_to_json(settings.grid)})"
        )
    if diff:
        raise RunError(
            f"config: {run_dir} holds a run with a different structure: " + "; ".join(diff)
        )
    old, new = stored.cfg.to_dict(), cfg.to_dict()
    changed = {k: [old[k], v] for k, v in new.items() if old[k] != v}
    record["history"] = list(stored_record.get("history", []))
    if changed:
        record["history"].append({"changed": changed})
    return record


def write_record(run_dir: Path, record: dict, chunk: int) -> None:
    """Write config.json; a change of hyper-parameters made in this call is dated by the chunk
    the run continues from, and announced in one line."""
    history = record.get("history", [])
    if history and "from_chunk" not in history[-1]:
        history[-1]["from_chunk"] = chunk
        names = ", ".join(history[-1]["changed"])
        warnings.warn(
            f"resume: hyper-parameters changed from the stored run after chunk {chunk}: {names} "
            "(the continuation is not the same run; config.json keeps the change in 'history')",
            stacklevel=3,
        )
    _write_json(run_dir / "config.json", record)


def mark_checkpointed(run_dir: Path, record: dict) -> None:
    """After a run's first complete checkpoint: config.json says it has one (`checkpointed`),
    so a run whose checkpoints are later lost is never started over its logs, while one killed
    before its first save finished starts from its beginning."""
    if not record.get("checkpointed"):
        record["checkpointed"] = True
        _write_json(run_dir / "config.json", record)
