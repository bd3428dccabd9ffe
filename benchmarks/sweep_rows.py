"""Rows: what a batch of rows (settings x seeds) in one compiled program costs.

Three measurements, AES-RL on Brax (spring backend by default):

1. Row scaling: ms per tick of 1, 8 and 32 rows of one program (seeds 0..N-1), timed past
   the warm-up, against the same seeds run alone (one-row programs) over the same ticks:
   throughput = sum_i t_i(1) / t(N). A tick's work moves with the phase of its rows (a row
   whose slots all train takes no env step), and rows in one window differ in phase, so one
   row's tick times N would compare different work. The rows run one after another (`map`)
   or side by side under a plain vmap of the tick (`vmap`: every branch a select); with how
   often some row's job ended and how often the env steps ran. The CPU target is
   t(N) <= 1.2 sum_i t_i(1); on a GPU what users get is aggregate counted steps per second.
2. An 8-row sweep (the ablation's 4 mean x 2 variance rules) as ONE program against the same 8
   settings run one by one, wall-clock including compiles: one by one sharing the compiled
   program (hyper-parameters are traced) and one by one each compiling its own (caches
   cleared, as separate processes without a persistent cache would).
3. Rows per second against the device count, on forced host devices (a subprocess per count
   with `--xla_force_host_platform_device_count`): the row axis is sharded over the devices.
   On a 2-core CPU the "devices" share the cores, so this shows that sharding runs, not speed.

`--profile 1 32` also traces one chunk of those row counts with `jax.profiler` and tabulates
the events that took the most time per tick (on a GPU: its kernels, copies and the host's
waits), to find where a batch's tick spends its time. It also splits that time into the parts
of the tick (actor steps, critic steps, job ends, the simulator, the actors' actions, the rest
of the env steps) by the `jax.named_scope` (`aes_rl.engine.SCOPES`) that each kernel's (on a
CPU: each instruction's) HLO instruction carries in its `op_name`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jax
import numpy as np

from aes_rl import program, run
from aes_rl.config import MEAN_RULES, VAR_RULES, preset
from benchmarks import common

NAME = "sweep_rows"


@common.config_flags()
@dataclass
class Args(common.LoopFlags):
    num_slots: int = 5
    num_rows: tuple[int, ...] = (1, 8, 32)
    """Rows (seeds of one setting) per program: each count is measured."""
    rows: tuple[Literal["map", "vmap"], ...] = ("map", "vmap")
    """How the rows run in the program (as `aes-rl train --rows`): each mode is measured."""
    ticks: int = 100
    """Ticks per timed chunk."""
    repeats: int = 3
    """Timed chunks."""
    warmup_steps: int = 1_000
    settle_ticks: int = 300
    """Ticks run past the warm-up before timing."""
    sweep_steps: int = 3_000
    """Counted steps per row of the 8-setting sweep (0: skip part 2)."""
    devices: tuple[int, ...] = (1, 2, 4)
    """Forced host device counts (none: skip part 3)."""
    device_rows: int = 8
    """Rows of the forced-device measurement."""
    profile: tuple[int, ...] = ()
    """Row counts whose timed program runs one more chunk under `jax.profiler` (a Perfetto
    trace under --profile-dir/<mode>-<rows>, seed 0 alone under alone-1), summarised as the
    events that took the most time per tick (none: no profile)."""
    profile_dir: str = "profiles"
    """Where the traces go (relative paths: from the current directory)."""


def parse_args(argv=None) -> Args:
    args = common.parse(Args, argv, f"benchmarks.{NAME}", __doc__)
    common.quick(args, num_rows=(1, 4), ticks=20, repeats=2, settle_ticks=20, warmup_steps=200,
                 sweep_steps=400, devices=(1, 2), device_rows=4)
    return args


def make_cfg(args, **kw):
    base = dict(backend=args.backend, num_slots=args.num_slots, **args.net_overrides,
                warmup_steps=args.warmup_steps, ticks_per_chunk=args.ticks)
    return preset(args.env, "aes-rl", **dict(base, **kw))


def chunks_to_warm(cfg, state, compiled) -> tuple[object, int]:
    """Run chunks until every row is past the warm-up: (state, chunks run)."""
    n = 0
    while min(jax.device_get(state.counters.total_steps)) < cfg.warmup_steps:
        state, _ = compiled(state)
        n += 1
    return state, n


def timed_window(compiled, state, args) -> tuple[object, dict]:
    """Time `repeats` chunks: ms per tick (median) and what the ticks ran."""
    times, ended, paths = [], [], []
    rows = state.counters.total_steps.shape[0]
    steps0 = int(jax.device_get(state.counters.total_steps).sum())
    for _ in range(args.repeats):
        (state, metrics), dt = common.timed(compiled, state)
        times.append(dt)
        ended.append(jax.device_get(metrics.arrived).any(axis=2).any(axis=0))
        paths.append(jax.device_get(metrics.env_path).max(axis=0))  # the batch's path
    steps = int(jax.device_get(state.counters.total_steps).sum()) - steps0
    paths = np.concatenate(paths)
    return state, dict(ms=1e3 * common.Stats.of(times).median / args.ticks,
                       job_end=float(np.mean(np.concatenate(ended))),
                       env_few=float(np.mean(paths == 1)), env_all=float(np.mean(paths == 2)),
                       steps_per_s=steps / sum(times), steps=steps,
                       row_tick_steps=steps / (rows * args.ticks * args.repeats))


def profiled(args, compiled, state, name: str, n: int, into: dict) -> None:
    """Where `n` rows' tick spends its time (`--profile`), one more traced chunk; the trace
    goes under --profile-dir/<name>-<n>."""
    if n in args.profile:
        where = Path(args.profile_dir) / f"{name}-{n}"
        common.traced(compiled, state, where)
        into["profile"] = common.trace_summary(where, per=args.ticks)
        into["parts"] = common.kernel_parts(where, compiled.as_text(), args.ticks)


def rows_alone(args, cfg, seeds) -> tuple[int, list[dict]]:
    """Each seed as a one-row program, every seed timed over the same ticks: those after the
    warm-up of the slowest seed and `settle_ticks` more. Returns (chunks before that window,
    per seed figures)."""
    state = program.init_batch(cfg, (seeds[0],))
    compiled, compile_s = common.compile_jitted(program.make_train_chunk(cfg, 1, args.ticks), state)
    warm = []
    for seed in seeds:
        common.log(f"row scaling: seed {seed} alone, to the end of its warm-up")
        warm.append(chunks_to_warm(cfg, program.init_batch(cfg, (seed,)), compiled))
    start = max(n for _, n in warm) + max(1, args.settle_ticks // args.ticks)
    out = []
    for seed, (state, n) in zip(seeds, warm):
        for _ in range(start - n):
            state, _ = compiled(state)
        state, got = timed_window(compiled, state, args)
        out.append(dict(got, compile_s=compile_s))
        if seed == seeds[0]:
            profiled(args, compiled, state, "alone", 1, out[-1])
    return start, out


def row_scaling(args) -> tuple[str, list[dict]]:
    cfg = make_cfg(args)
    seeds = tuple(range(max(args.num_rows)))
    start, alone = rows_alone(args, cfg, seeds)
    one = {k: float(np.mean([a[k] for a in alone]))  # the mean of the seeds alone
           for k in ("ms", "job_end", "env_few", "env_all", "steps_per_s", "row_tick_steps")}
    one.update(mode="-", rows=1, alone_ms=one["ms"], speedup=1.0, per_row=1.0,
               compile_s=alone[0]["compile_s"])
    one.update({k: alone[0][k] for k in ("profile", "parts") if k in alone[0]})  # seed 0
    common.log(f"  alone: {one['ms']:.3f} ms / tick (mean of {len(seeds)} seeds)")
    out = [one]
    for mode in args.rows:
        for n in (n for n in args.num_rows if n > 1):
            common.log(f"row scaling: {n} rows, {mode}")
            state = program.init_batch(cfg, seeds[:n])
            chunk = program.make_train_chunk(cfg, n, args.ticks, rows=mode)
            compiled, compile_s = common.compile_jitted(chunk, state)
            for _ in range(start):  # the window the rows were timed in alone
                state, _ = compiled(state)
            assert min(jax.device_get(state.counters.total_steps)) >= cfg.warmup_steps
            state, got = timed_window(compiled, state, args)
            alone_ms = sum(a["ms"] for a in alone[:n])  # the same rows one by one
            out.append(dict(got, mode=mode, rows=n, alone_ms=alone_ms,
                            speedup=alone_ms / got["ms"], per_row=got["ms"] / alone_ms,
                            compile_s=compile_s))
            common.log(f"  {got['ms']:.3f} ms / tick, throughput {alone_ms / got['ms']:.2f}x "
                       f"the same rows alone, compile {compile_s:.1f} s")
            profiled(args, compiled, state, mode, n, out[-1])
    cpu = jax.default_backend() == "cpu"

    def target(r):  # the CPU's on the tick ratio; a GPU's on the throughput of vmap rows
        if cpu:
            return "tick <= 1.2"
        gpu = {8: "throughput >= 6", 32: "throughput >= 20"}.get(r["rows"], "-")
        return gpu if r["mode"] == "vmap" else "-"

    table = common.md_table(
        ["rows mode", "rows", "ms / tick", "the same rows alone: ms / tick, summed",
         "throughput vs the rows alone", "tick vs their ticks alone", "target",
         "ticks where some row's job ended", "ticks whose env steps stepped the few / all W",
         "counted steps / s (all rows)", "counted steps / row-tick", "compile s"],
        [[r["mode"], r["rows"], r["ms"], r["alone_ms"], r["speedup"], r["per_row"], target(r),
          r["job_end"], f"{r['env_few']:.2f} / {r['env_all']:.2f}", r["steps_per_s"],
          r["row_tick_steps"], r["compile_s"]] for r in out])
    for r in (r for r in out if "profile" in r):
        table += (f"\n\nWhere a tick's time went, {r['mode']} with {r['rows']} row(s) (one "
                  "traced chunk, slowed by the tracing; events nest, so rows overlap):\n\n")
        table += common.md_table(["recorded by", "event", "calls / tick", "us / tick"],
                                 [[p["process"], p["name"][:60], p["calls"], p["us"]]
                                  for p in r["profile"]])
        if r["parts"]:  # the kernels (a CPU: instructions), by the part of the tick
            table += (f"\n\nTime by part of the tick, {r['mode']} with {r['rows']} row(s) "
                      "(a GPU's kernels, a CPU's instructions, matched to the program's "
                      "instructions and their call stacks; on a GPU a copy or library GEMM "
                      "takes its command buffer's part):\n\n")
            table += common.md_table(
                ["part of the tick", "kernels / tick", "us / tick", "share"],
                [[p["part"], p["events"], p["us"], f"{100 * p['share']:.0f}%"]
                 for p in r["parts"]])
    return table, out


def sweep_vs_one_by_one(args) -> tuple[str, dict]:
    grid = (("mean_rule", MEAN_RULES), ("var_rule", VAR_RULES))
    cfg = make_cfg(args, ticks_per_chunk=500)
    root = tempfile.mkdtemp(prefix="aes_rl_sweep_bench_")

    def settings(name, **kw):
        return run.RunSettings(os.path.join(root, name), steps=args.sweep_steps, seeds=(0,),
                               progress=False, save_every=10**9, eval_episodes=2,
                               save_buffer=False, **kw)

    jax.config.update("jax_enable_compilation_cache", False)  # every compile is a compile
    program.clear_caches()
    t0 = time.perf_counter()
    run.train(cfg, settings("sweep", grid=grid))
    one_program = time.perf_counter() - t0
    shared = time.perf_counter()
    program.clear_caches()
    for m in MEAN_RULES:
        for v in VAR_RULES:
            run.train(cfg.replace(mean_rule=m, var_rule=v), settings(f"shared-{m}-{v}"))
    shared = time.perf_counter() - shared
    each = time.perf_counter()
    for m in MEAN_RULES:
        for v in VAR_RULES:
            program.clear_caches()
            run.train(cfg.replace(mean_rule=m, var_rule=v), settings(f"each-{m}-{v}"))
    each = time.perf_counter() - each
    jax.config.update("jax_enable_compilation_cache", True)
    rows = [["8 rows in one program (`aes-rl sweep`)", one_program, 1.0],
            ["one by one, sharing the compiled program", shared, shared / one_program],
            ["one by one, each compiling its own", each, each / one_program]]
    table = common.md_table(["how", "wall-clock s (compiles included)", "vs one program"],
                            rows)
    return table, dict(one_program=one_program, shared=shared, each=each)


CHILD = """
import json, sys, time
import jax
from aes_rl import engine, program
from aes_rl.config import preset
a = json.loads(sys.argv[1])
cfg = preset(a["env"], "aes-rl", backend=a["backend"], num_slots=a["num_slots"],
             actor_hidden=tuple(a["actor_hidden"]), critic_hidden=tuple(a["critic_hidden"]),
             warmup_steps=a["warmup"], ticks_per_chunk=a["ticks"])
n = a["rows"]
state = program.init_batch(cfg, tuple(range(n)))
chunk = program.make_train_chunk(cfg, n, a["ticks"])
state, _ = chunk(state); jax.block_until_ready(state)
times = []
for _ in range(a["repeats"]):
    t0 = time.perf_counter(); state, _ = chunk(state); jax.block_until_ready(state)
    times.append(time.perf_counter() - t0)
times.sort()
print("RESULT", json.dumps(dict(devices=len(jax.local_devices()),
      sharded=len(state.counters.ticks.sharding.device_set), s=times[len(times) // 2])))
"""


def devices_table(args) -> tuple[str, list[dict]]:
    out = []
    for d in args.devices:
        common.log(f"devices: {d} forced host device(s), {args.device_rows} rows")
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={d}")
        spec = dict(env=args.env, backend=args.backend, num_slots=args.num_slots,
                    **args.net_overrides,
                    warmup=args.warmup_steps, ticks=args.ticks, rows=args.device_rows,
                    repeats=args.repeats)
        proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], env=env,
                              capture_output=True, text=True, check=True)
        got = json.loads(proc.stdout.split("RESULT", 1)[1])
        got["rows_per_s"] = args.device_rows * args.ticks / got["s"]
        out.append(got)
    table = common.md_table(
        ["forced host devices", "devices holding rows", "rows", "ms / tick", "row-ticks / s",
         "vs 1 device"],
        [[r["devices"], r["sharded"], args.device_rows, 1e3 * r["s"] / args.ticks,
          r["rows_per_s"], r["rows_per_s"] / out[0]["rows_per_s"]] for r in out])
    return table, out


def main(argv=None) -> None:
    args = parse_args(argv)
    session = common.Session.start(NAME, args)
    scaling, _ = row_scaling(args)
    tables = ["Row scaling (seeds of one setting):\n\n" + scaling]
    if args.sweep_steps:
        sweep, _ = sweep_vs_one_by_one(args)
        tables.append("The ablation's 8 settings, 1 seed each:\n\n" + sweep)
    if args.devices:
        dev, _ = devices_table(args)
        tables.append("Rows sharded over forced host devices:\n\n" + dev)
    notes = [
        f"AES-RL, Brax {args.env} ({args.backend}), nets {args.nets}, W={args.num_slots}, paper "
        f"clock, warm-up {args.warmup_steps} counted steps; row scaling timed over "
        f"{args.repeats} chunks of {args.ticks} ticks (median), the same ticks for every row "
        f"count and for each seed alone: those after the warm-up of the slowest of seeds 0.."
        f"{max(args.num_rows) - 1} and {args.settle_ticks} more. The 1-row line is the mean "
        "of those seeds alone; 'the same rows alone' sums the ticks of seeds 0..N-1 alone "
        "(what running them one by one costs), 'throughput vs the rows alone' is that sum "
        "over t(N) and 'tick vs their ticks alone' its inverse. A tick's work moves with its "
        "rows' phases (env steps only where a slot rolls out or evaluates the mean), so a "
        "batch is compared with its own rows, not N times one row. Counted env steps per tick "
        "move with the mix of rolling-out and training slots in the window (the last two "
        "columns, over all timed chunks).",
        "On a GPU one tick is latency-bound (the chip idles inside it), so batched (`vmap`) "
        "rows should cost little there; on this CPU every row's work is real work. `vmap` "
        "is a plain vmap of the tick: each branch (job assignment, tell, env resets, "
        "barriers) becomes a select that every row pays every tick, and the env steps step "
        "all W wherever some slot of the batch acts. 'ticks where some row's job ended' is "
        "how often some row needed the job-end branches. `map` runs the rows one after "
        "another inside the program, each with its real branches. 'ticks whose env steps "
        "stepped the few / all W': the widest path any row needed "
        "(`TickMetrics.env_path`; the rest took none).",
        "Forced host devices share this machine's 2 cores: the device table shows the sharded "
        "program runs and what it costs here, not a speed-up; with real devices (GPUs) each "
        "holds rows/devices rows and runs them where they live.",
    ]
    if args.sweep_steps:
        notes.insert(1, f"Sweep: {args.sweep_steps} counted steps per row, persistent "
                     "compilation cache off, compiles and per-chunk evaluations included; rows "
                     f"mode auto ({program.row_mode()} on this backend).")
    if not args.devices:
        notes.pop()
    session.finish(f"Rows in one program ({args.env}, {args.backend})", tables, notes)


if __name__ == "__main__":
    main()
