"""Run every benchmark in sequence, each in its own process (so peak memory is per benchmark).

`--quick` passes through to every benchmark (a smoke test of the whole suite). The suite's own
section of RESULTS.md records, per benchmark: exit status, wall-clock, compile time (all XLA
compiles of that process, from JAX's monitoring events) and peak resident memory.
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

from benchmarks import common

NAME = "suite"
BENCHMARKS = ("td3_throughput", "loop_overhead", "slots_scaling", "sweep_rows", "hosts_rows",
              "time_efficiency",
              "td3_curve", "learning_comparison")


Benchmark = Literal[BENCHMARKS]  # type: ignore[valid-type]


@dataclass
class Args(common.BenchFlags):
    only: tuple[Benchmark, ...] | None = None
    """Run only these benchmarks (in suite order)."""
    skip: tuple[Benchmark, ...] = ()
    """Benchmarks not to run."""
    keep_going: common.Flag = False
    """Run the rest after a failure (the exit status still reports it)."""


def parse_args(argv=None) -> Args:
    return common.parse(Args, argv, f"benchmarks.{NAME}", __doc__)


def child_command(name: str, args, summary: Path) -> list[str]:
    cmd = [sys.executable, "-m", f"benchmarks.{name}", "--summary-json", str(summary),
           "--results", args.results]
    if args.quick:
        cmd.append("--quick")
    if args.cache:
        cmd += ["--cache", args.cache]
    if args.no_write:
        cmd.append("--no-write")
    return cmd


def run_one(name: str, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="aes_rl_suite_") as tmp:
        summary = Path(tmp) / "summary.json"
        cmd = child_command(name, args, summary)
        env = dict(os.environ, **{common.SUITE_ENV: common.command_line("benchmarks.suite")})
        common.log(f"[suite] {name}: {' '.join(cmd[1:])}")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, cwd=common.BENCH_DIR.parent)
        wall = time.perf_counter() - t0
        record = json.loads(summary.read_text()) if summary.exists() else {}
    return dict(name=name, returncode=proc.returncode, wall_s=wall, **{
        k: record.get(k) for k in ("peak_rss_mib", "compile", "cache")})


def main(argv=None) -> int:
    args = parse_args(argv)
    session = common.Session.start(NAME, args)
    names = [n for n in BENCHMARKS if (args.only is None or n in args.only)
             and n not in args.skip]
    results = []
    for name in names:
        r = run_one(name, args)
        results.append(r)
        status = "ok" if r["returncode"] == 0 else f"FAILED (exit {r['returncode']})"
        common.log(f"[suite] {name}: {status} in {r['wall_s']:.0f} s")
        if r["returncode"] != 0 and not args.keep_going:
            break
    rows = []
    for r in results:
        c = r["compile"] or {}
        rows.append([r["name"], "ok" if r["returncode"] == 0 else f"exit {r['returncode']}",
                     r["wall_s"], c.get("total_s", float("nan")), c.get("compiles", "n/a"),
                     c.get("cache_hits", "n/a"), c.get("cache_misses", "n/a"),
                     r["cache"] or "n/a",
                     r["peak_rss_mib"] if r["peak_rss_mib"] is not None else float("nan")])
    table = common.md_table(
        ["benchmark", "status", "wall s", "compile s", "XLA compiles", "cache hits",
         "cache misses", "cache", "peak RSS MiB"], rows)
    notes = [
        "Each benchmark ran as its own process (`python -m benchmarks.NAME`); compile s sums "
        "that process's tracing, lowering and XLA compilation (or persistent-cache loads), "
        "from JAX's monitoring events; peak RSS is that process's `ru_maxrss`.",
        "The suite's own process (this section's compile and memory lines) only launches "
        "the others.",
    ]
    session.finish("Benchmark suite" + (" (quick)" if args.quick else ""), [table], notes)
    failed = [r["name"] for r in results if r["returncode"] != 0]
    skipped = len(names) - len(results)
    if failed or skipped:
        common.log(f"[suite] failed: {', '.join(failed)}; not run: {skipped}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
