"""Whole-state checkpoints with orbax, and small exported policy files.

A checkpoint holds the ENTIRE `TrainState` of any algorithm (ES state, critic and optimiser
states, replay buffer, env states, slot states, counters, PRNG key) plus a JSON record with the
resolved config, the chunk index and the format version, so a resumed run continues exactly
where it stopped. orbax writes each step into a temporary directory and renames it when
complete, so killing the process at any moment leaves the previous checkpoint usable.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from aes_rl import faults, hosts, program, replay
from aes_rl.config import Config
from aes_rl.engine import TrainState
from aes_rl.networks import ActorSpec

# 2: counters of non-finite arrivals and transitions; 3: traced hyper-parameters in the state;
# 4: the baselines' own ES parameters among them; 5: the critic worker's job (`engine.CriticJob`);
# 6: the slots' snapshots of their draw (`Slots.drawn_mean`, `drawn_tells`); 7: the engine
# split into `aes_rl.engine` (no side episodes: mean evaluations run one after another; a
# family's own state in `TrainState.fam`)
FORMAT_VERSION = 7
POLICY_FORMAT = "aes_rl.policy/1"

# orbax logs every save at INFO/WARNING level; the driver prints its own one-line summaries.
logging.getLogger("absl").setLevel(logging.ERROR)

_NOISY = tuple(f"{os.sep}{name}{os.sep}" for name in ("orbax", "tensorstore"))
# What tensorstore's errors of an orbax write say: the OCDBT store, orbax's temporary directory.
_NOISY_TEXT = ("OCDBT database", ".orbax-checkpoint-tmp")


def _from_orbax(exc: BaseException | None, obj: Any = None) -> bool:
    """`exc` (or the coroutine `obj` it was raised in) comes from orbax's own machinery: a
    read or write it aborted, finishing after orbax closed its event loop."""
    if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
        return True  # tensorstore calling back into orbax's closed loop
    if exc is not None and any(mark in str(exc) for mark in _NOISY_TEXT):
        return True  # tensorstore's own error of an orbax write (no Python frames of its own)
    files = []
    code = getattr(obj, "cr_code", None) or getattr(obj, "gi_code", None)
    if code is not None:
        files.append(code.co_filename)
    if exc is not None and exc.__traceback__ is not None:
        files += [frame.filename for frame in traceback.extract_tb(exc.__traceback__)]
    return any(part in name for name in files for part in _NOISY)


class _OrbaxNoise(logging.Filter):
    """Drops orbax's log records of a failed or aborted read or write (the error itself
    reaches the caller, which reports it in one line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if any(part in record.pathname for part in _NOISY):
            return False
        exc = record.exc_info[1] if record.exc_info else None
        text = record.getMessage()
        return not (_from_orbax(exc) or any(part in text for part in _NOISY + _NOISY_TEXT))


def quiet_orbax() -> None:
    """Keep orbax's noise of a failed or aborted read or write (tracebacks logged by its
    threads, futures and coroutines it abandoned) off the terminal; every other log record
    and unraisable exception passes. Idempotent; called by every `Checkpointer`."""
    for name in ("absl", "asyncio"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _OrbaxNoise) for f in logger.filters):
            logger.addFilter(_OrbaxNoise())
    hook = sys.unraisablehook
    if getattr(hook, "aes_rl_quiet", False):
        return

    def quiet(unraisable, hook=hook):
        if not _from_orbax(unraisable.exc_value, unraisable.object):
            hook(unraisable)

    quiet.aes_rl_quiet = True
    sys.unraisablehook = quiet


class CheckpointError(RuntimeError):
    """No usable checkpoint (all corrupt or incomplete), or an unreadable one."""


def _to_disk(state: TrainState) -> TrainState:
    """Typed PRNG keys are stored as their raw uint32 data."""
    return state.replace(key=jax.random.key_data(state.key))


def _from_disk(state: TrainState) -> TrainState:
    return state.replace(key=jax.random.wrap_key_data(state.key))


class Checkpointer:
    """Host-side shell around orbax's CheckpointManager for one run directory."""

    def __init__(self, directory: Path, keep: int = 3, save_buffer: bool = True):
        self.directory = Path(directory).absolute()
        self.save_buffer = save_buffer
        quiet_orbax()
        # cleanup_tmp_directories: a save cut short (a kill, a full disk) leaves a
        # `*.orbax-checkpoint-tmp` directory; it is removed when the run continues.
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            enable_async_checkpointing=False,
            create=True,
            cleanup_tmp_directories=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def steps(self) -> list[int]:
        self.manager.reload()
        return sorted(self.manager.all_steps())

    def save(self, chunk: int, state: TrainState, meta: dict) -> None:
        disk = _to_disk(state)
        items: dict[str, Any] = {
            "state": ocp.args.StandardSave(disk.replace(buffer=None)),
            "meta": ocp.args.JsonSave(
                dict(meta, format_version=FORMAT_VERSION, has_buffer=self.save_buffer)
            ),
        }
        if self.save_buffer:
            items["buffer"] = ocp.args.StandardSave(disk.buffer)
        self.manager.save(chunk, args=ocp.args.Composite(**items), force=True)
        self.manager.wait_until_finished()

    def read_meta(self, chunk: int) -> dict:
        path = self.directory / str(chunk) / "meta" / "metadata"
        return json.loads(path.read_text())

    def _check_format(self, chunk: int) -> None:
        """A checkpoint of another format version is refused at once, never set aside."""
        try:
            version = self.read_meta(chunk).get("format_version")
        except (OSError, ValueError):
            return  # unreadable metadata: restore_latest treats it as corrupt
        if version != FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint: {self.directory} was written in format {version} by another "
                f"aes_rl version; this one reads format {FORMAT_VERSION} (start a new run, or "
                f"resume it with the aes_rl version that wrote it)"
            )

    def restore(self, chunk: int, template: TrainState) -> tuple[TrainState, dict]:
        """Restore step `chunk` into the structure of `template` (a state of the same config)."""
        meta = self.read_meta(chunk)
        if meta.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint {chunk}: format version "
                f"{meta.get('format_version')}, expected {FORMAT_VERSION}"
            )
        # Restored straight into the template's layout: its row sharding over this run's
        # devices (and processes), whatever the devices of the run that saved it.
        abstract = jax.tree.map(
            lambda a, t: jax.ShapeDtypeStruct(
                a.shape, a.dtype, sharding=getattr(t, "sharding", None)
            ),
            jax.eval_shape(_to_disk, template),
            _to_disk(template),
        )
        items = {"state": ocp.args.StandardRestore(abstract.replace(buffer=None))}
        if meta.get("has_buffer"):
            items["buffer"] = ocp.args.StandardRestore(abstract.buffer)
        out = self.manager.restore(chunk, args=ocp.args.Composite(**items))
        state = out["state"]
        buffer = out["buffer"] if meta.get("has_buffer") else template.buffer
        return _from_disk(state.replace(buffer=buffer)), meta

    def restore_latest(
        self, template: TrainState, reject: Callable[[Any], str | None] | None = None
    ) -> tuple[int, TrainState, dict]:
        """The newest checkpoint that restores; corrupt ones are skipped with a warning (and
        moved aside), and so are states `reject(state)` gives a reason for (kept in place)."""
        steps = self.steps()
        if not steps:
            raise CheckpointError(f"resume: no checkpoint in {self.directory}")
        self._check_format(steps[-1])
        bad = []
        for chunk in reversed(steps):
            try:
                state, meta = self.restore(chunk, template)
            except CheckpointError:
                raise
            except Exception as err:  # noqa: BLE001 - any unreadable checkpoint is skipped
                if faults.is_environment_error(err):
                    raise  # a permission, not a corrupt file: nothing is set aside
                reason = (str(err).splitlines() or [""])[0]
                reason = reason.split(" See full TensorStore details")[0][:200]
                warnings.warn(
                    f"checkpoint {chunk} is corrupt or incomplete ({type(err).__name__}: "
                    f"{reason}); falling back to an older one",
                    stacklevel=2,
                )
                bad.append(chunk)
                continue
            why = reject(state) if reject is not None else None
            if why is not None:
                warnings.warn(
                    f"checkpoint {chunk} is not resumable ({why}); trying an older one",
                    stacklevel=2,
                )
                continue
            self._set_aside(bad)
            return chunk, state, meta
        raise CheckpointError(
            f"resume: none of the checkpoints {steps} in {self.directory} "
            "could be restored (all corrupt or incomplete)"
        )

    def _set_aside(self, chunks: list[int]) -> None:
        """Move unreadable checkpoints out of the way (kept for inspection, never deleted)."""
        if not chunks:
            return
        if hosts.is_main():  # every process skipped them; one moves them
            aside = self.directory.parent / "corrupt_checkpoints"
            aside.mkdir(exist_ok=True)
            for chunk in chunks:
                target = aside / f"{chunk}-{int(time.time())}"
                (self.directory / str(chunk)).rename(target)
                warnings.warn(f"checkpoint {chunk} moved to {target}", stacklevel=3)
        hosts.sync("aes_rl.set_aside")
        self.manager.reload()

    def close(self) -> None:
        self.manager.close()


def empty_buffer(cfg: Config, num_seeds: int) -> replay.ReplayBuffer:
    setup = program.build(cfg)
    one = replay.init(cfg.buffer_size, setup.env.observation_size, setup.env.action_size)
    return jax.tree.map(lambda x: np.broadcast_to(x, (num_seeds,) + x.shape).copy(), one)


# ------------------------------------------------------------------ exported policies


def export_policy(path: Path, cfg: Config, flat: np.ndarray, seed: int | None = None) -> Path:
    """Write one actor (flat [d]) with what is needed to run it: a small .npz file."""
    setup = program.build(cfg)
    a = setup.actor
    meta = dict(
        format=POLICY_FORMAT,
        env=cfg.env,
        backend=cfg.backend,
        episode_length=cfg.episode_length,
        env_kwargs=dict(cfg.env_kwargs),
        obs_dim=a.obs_dim,
        act_dim=a.act_dim,
        hidden=list(a.hidden),
        activation=a.activation,
        max_action=a.max_action,
        algo=cfg.algo,
        seed=seed,
    )
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, params=np.asarray(flat, np.float32), meta=np.array(json.dumps(meta)))
    tmp.replace(path)
    return path


def load_policy(path: Path) -> tuple[ActorSpec, np.ndarray, dict]:
    """Read an exported policy: (actor spec, flat params [d], metadata)."""
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            flat, meta = data["params"], json.loads(str(data["meta"]))
    except Exception as err:
        if "pickle" in str(err):  # numpy's hint to allow pickles is not ours to give
            raise CheckpointError(
                f"policy: cannot read {path}: not a policy file (a plain .npz archive; "
                "pickled data is never loaded)"
            ) from err
        raise CheckpointError(f"policy: cannot read {path}: {err}") from err
    if meta.get("format") != POLICY_FORMAT:
        raise CheckpointError(f"policy: {path} is not an aes_rl policy file")
    spec = ActorSpec(
        meta["obs_dim"],
        meta["act_dim"],
        tuple(meta["hidden"]),
        meta["activation"],
        meta["max_action"],
    )
    return spec, flat, meta
