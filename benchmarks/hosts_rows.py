"""Rows over processes: what a run split over several processes (`aes_rl.hosts`) costs.

AES-RL on Brax (spring by default), the same rows (seeds) in every layout: P processes of this
machine (`jax.distributed`, CPU collectives over TCP), each with D forced host devices. Per
layout: the compiled chunk's ms per tick past the warm-up (process 0's clock; the processes
run their chunks side by side), row-ticks per second, and what the driver adds between chunks
on several processes: gathering the per-row counters and tick metrics to every process
(`hosts.fetch`), in ms per chunk. On a 2-core CPU the processes share the cores, so this shows
that the multi-process run works and what its gathers cost, not a speed-up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

from aes_rl import hosts
from benchmarks import common

NAME = "hosts_rows"


@common.config_flags()
@dataclass
class Args(common.LoopFlags):
    num_slots: int = 5
    num_rows: int = 8
    """Rows (seeds of one setting) of every layout."""
    layouts: tuple[str, ...] = ("1x1", "1x2", "2x1", "2x2")
    """Layouts as PROCESSESxDEVICES (devices per process); each is measured."""
    ticks: int = 100
    """Ticks per timed chunk."""
    repeats: int = 3
    """Timed chunks."""
    warmup_steps: int = 1_000
    settle_ticks: int = 200
    """Ticks run past the warm-up before timing."""


def parse_args(argv=None) -> Args:
    args = common.parse(Args, argv, f"benchmarks.{NAME}", __doc__)
    common.quick(args, num_rows=4, ticks=20, repeats=2, settle_ticks=20, warmup_steps=200,
                 layouts=("1x1", "2x1"))
    for layout in args.layouts:
        p, _, d = layout.partition("x")
        if not (p.isdigit() and d.isdigit() and int(p) >= 1 and int(d) >= 1):
            from aes_rl.flags import fail

            fail(f"python -m benchmarks.{NAME}", f"layouts: expected PxD, got {layout!r}")
        if args.num_rows % int(p):
            from aes_rl.flags import fail

            fail(
                f"python -m benchmarks.{NAME}",
                f"num_rows: {args.num_rows} rows cannot be split over {p} processes",
            )
    return args


CHILD = """
import json, sys, time
a = json.loads(sys.argv[1])
from aes_rl import hosts
if a["processes"] > 1:
    hosts.initialize(a["coordinator"], a["processes"], a["process_id"])
import jax
from aes_rl import program
from aes_rl.config import preset
cfg = preset(a["env"], "aes-rl", backend=a["backend"], num_slots=a["num_slots"],
             actor_hidden=tuple(a["actor_hidden"]), critic_hidden=tuple(a["critic_hidden"]),
             warmup_steps=a["warmup"], ticks_per_chunk=a["ticks"])
n = a["rows"]
state = program.init_batch(cfg, tuple(range(n)))
chunk = program.make_train_chunk(cfg, n, a["ticks"], rows="map")
while min(hosts.fetch(state.counters.total_steps)) < cfg.warmup_steps:
    state, m = chunk(state)
for _ in range(max(1, a["settle"] // a["ticks"])):
    state, m = chunk(state)
jax.block_until_ready(state)
hosts.fetch((state.counters, m))  # the gather's program compiled before timing
times, gathers = [], []
for _ in range(a["repeats"]):
    t0 = time.perf_counter(); state, m = chunk(state); jax.block_until_ready(state)
    t1 = time.perf_counter(); hosts.fetch((state.counters, m)); t2 = time.perf_counter()
    times.append(t1 - t0); gathers.append(t2 - t1)
times.sort(); gathers.sort()
if hosts.is_main():
    print("RESULT", json.dumps(dict(
        devices=len(state.counters.ticks.sharding.device_set), s=times[len(times) // 2],
        gather_s=gathers[len(gathers) // 2])))
"""



def measure(args: Args, processes: int, devices: int) -> dict:
    """One layout: `processes` child processes with `devices` forced host devices each."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    coordinator = hosts.local_coordinator()
    procs = []
    for pid in range(processes):
        spec = dict(env=args.env, backend=args.backend, num_slots=args.num_slots,
                    **args.net_overrides, warmup=args.warmup_steps, ticks=args.ticks,
                    rows=args.num_rows, repeats=args.repeats, settle=args.settle_ticks,
                    processes=processes, process_id=pid, coordinator=coordinator)
        procs.append(subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(spec)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    outs = [p.communicate() for p in procs]
    for p, (_, err) in zip(procs, outs):
        if p.returncode:
            raise RuntimeError(f"layout {processes}x{devices} failed:\n{err[-3000:]}")
    return json.loads(outs[0][0].split("RESULT", 1)[1])


def main(argv=None) -> None:
    args = parse_args(argv)
    session = common.Session.start(NAME, args)
    out = []
    for layout in args.layouts:
        p, d = (int(x) for x in layout.split("x"))
        common.log(f"hosts: {p} process(es) x {d} device(s), {args.num_rows} rows")
        got = measure(args, p, d)
        got.update(processes=p, per_process=d, rows_per_s=args.num_rows * args.ticks / got["s"])
        out.append(got)
    table = common.md_table(
        ["processes", "devices per process", "devices holding rows", "rows", "ms / tick",
         "row-ticks / s", "vs first layout", "gather ms / chunk"],
        [[r["processes"], r["per_process"], r["devices"], args.num_rows,
          1e3 * r["s"] / args.ticks, r["rows_per_s"], r["rows_per_s"] / out[0]["rows_per_s"],
          1e3 * r["gather_s"]] for r in out])
    notes = [
        f"AES-RL, Brax {args.env} ({args.backend}), nets {args.nets}, W={args.num_slots}, paper "
        f"clock, rows mode map, warm-up {args.warmup_steps} counted steps; timed over "
        f"{args.repeats} chunks of {args.ticks} ticks (median) after {args.settle_ticks} ticks "
        "past the warm-up, on process 0's clock.",
        "'gather ms / chunk': `hosts.fetch` of the per-row counters and tick metrics after a "
        "chunk (a device-to-host copy on one process; an all-gather over TCP on several). The "
        "driver does this, an evaluation and (when due) a checkpoint between chunks.",
        "All processes run on this machine and share its 2 cores: the table shows that a run "
        "over several processes works and what it costs here, not a speed-up. On hosts with "
        "their own accelerators, each process runs rows/processes rows where they live and "
        "the only cross-host traffic is this per-chunk gather and the checkpoint writes.",
        "Compiles happen in the child processes, so the header's compilation line (this "
        "process only) reads zero.",
    ]
    session.finish(f"Rows over processes ({args.env}, {args.backend})", [table], notes)


if __name__ == "__main__":
    main()
