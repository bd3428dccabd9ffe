"""One run over several processes (hosts): `jax.distributed`, the row axis over every device.

A run's rows are independent, so a run over P processes is the one-process run with its row
axis split over all P processes' devices (`program.row_sharding`): process p holds and computes a
contiguous block of rows, the compiled chunk is the same SPMD program on every process, and no
collective runs inside it. Between chunks the driver (`aes_rl.run`) gathers the per-row
counters and metrics to every process (`fetch`), so every process takes the same decisions
(budget reached, non-finite stop, Ctrl-C) in the same chunk; only the main process (index 0)
writes config.json, the CSVs, TensorBoard and the exported policies, and every process writes
its own rows' shards of each orbax checkpoint. The run directory must therefore be on a
filesystem every process sees.

Launch one process per host (or several on one machine, as the tests do) with the same flags
plus `--coordinator HOST:PORT --num-processes P --process-id I`; `--coordinator auto` lets JAX
read a cluster's environment (SLURM, Open MPI, Cloud TPU). The row count (settings x seeds)
must be a multiple of P. Nothing here changes a one-process run.
"""

from __future__ import annotations

import functools
import re
import socket
from typing import Any

import jax
import numpy as np


class HostsError(ValueError):
    """A bad multi-process request (one line, naming the flag)."""


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Join a multi-process run (before any JAX computation). No coordinator: one process,
    nothing to do. `auto`: JAX detects the cluster. Otherwise all three are needed."""
    if coordinator is None:
        if num_processes not in (None, 1) or process_id not in (None, 0):
            raise HostsError(
                "coordinator: --num-processes/--process-id need --coordinator HOST:PORT (or auto)"
            )
        return
    if jax.distributed.is_initialized():
        return
    if coordinator == "auto":
        jax.distributed.initialize()
        return
    if not re.fullmatch(r"[\w.\-\[\]:]+:\d{1,5}", coordinator):
        raise HostsError(f"coordinator: expected HOST:PORT or auto, got {coordinator!r}")
    if not isinstance(num_processes, int) or num_processes < 1:
        raise HostsError(
            f"num_processes: need an int >= 1 with --coordinator, got {num_processes!r}"
        )
    if not isinstance(process_id, int) or not 0 <= process_id < num_processes:
        raise HostsError(
            f"process_id: need an int in [0, {num_processes - 1}] with --coordinator, "
            f"got {process_id!r}"
        )
    jax.distributed.initialize(
        coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
    )


def local_coordinator() -> str:
    """A free `127.0.0.1:PORT` for the processes of a run on this machine (tests, benchmarks)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def count() -> int:
    return jax.process_count()


def is_main() -> bool:
    """The process that writes the run directory's files (index 0)."""
    return jax.process_index() == 0


def process_devices(num_rows: int) -> list:
    """The devices the row axis is split over, process by process: on each process the
    largest number of its devices that splits `num_rows` evenly over all processes (every
    process takes the same count, so each holds a contiguous block of rows)."""
    procs = jax.process_count()
    if num_rows % procs:
        raise HostsError(
            f"num_seeds: {num_rows} rows (settings x seeds) cannot be split over {procs} "
            f"processes; use a multiple of {procs}"
        )
    by_process: dict[int, list] = {}
    for d in sorted(jax.devices(), key=lambda d: (d.process_index, d.id)):
        by_process.setdefault(d.process_index, []).append(d)
    local = min(len(ds) for ds in by_process.values())
    per = max(k for k in range(1, local + 1) if num_rows % (k * procs) == 0)
    return [d for p in sorted(by_process) for d in by_process[p][:per]]


def global_rows(host: Any, sharding: jax.sharding.Sharding) -> Any:
    """A host pytree (the same on every process) as arrays split over `sharding` along their
    leading axis; each process places only its own rows."""
    return jax.tree.map(
        lambda x: jax.make_array_from_callback(np.shape(x), sharding, lambda i: np.asarray(x)[i]),
        host,
    )


def fetch(tree: Any) -> Any:
    """A numpy copy of `tree` on this process, whole: rows held by other processes are
    gathered (every process must call this at the same point)."""
    leaves, treedef = jax.tree.flatten(tree)
    spread = [i for i, x in enumerate(leaves) if _is_spread(x)]
    if not spread:
        return jax.device_get(tree)
    # One program gathers every spread leaf (replicated onto every device), not one each.
    meshes = {leaves[i].sharding.mesh for i in spread}
    if len(meshes) != 1:
        raise ValueError("hosts.fetch: the arrays are split over different meshes")
    gathered = _replicate(next(iter(meshes)))([leaves[i] for i in spread])
    for i, x in zip(spread, gathered, strict=True):
        leaves[i] = x.addressable_data(0)
    return jax.device_get(jax.tree.unflatten(treedef, leaves))


def _is_spread(x: Any) -> bool:
    return isinstance(x, jax.Array) and not x.is_fully_addressable


@functools.lru_cache(maxsize=8)
def _replicate(mesh: jax.sharding.Mesh):
    everywhere = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return jax.jit(lambda xs: xs, out_shardings=everywhere)


def any_process(flag: bool) -> bool:
    """True on every process when `flag` is true on any (one process's Ctrl-C stops all of
    them at the same chunk)."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray([flag]))))


def sync(name: str) -> None:
    """Wait until every process reaches this point (no-op on one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
