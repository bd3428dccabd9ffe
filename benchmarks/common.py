"""Shared pieces of the benchmarks: start-up, machine record, timing, memory, RESULTS.md sections.

Every benchmark module does the same four things, in this order:

1. its `Args` dataclass subclasses `BenchFlags` (the common flags: `--quick`, `--cache`,
   `--results`, `--note`, ...) and `parse` reads them (tyro, one-line errors);
2. `Session.start(name, args)` silences XLA's log noise, turns on the persistent compilation
   cache (a fresh empty one when compile times are being measured) and starts counting
   compilations through JAX's monitoring events;
3. it measures, timing compiled programs with `timed`/`time_repeats` (always through
   `jax.block_until_ready`) and compiling them apart from their steady-state calls with
   `compile_jitted` (`jitted.lower(...).compile()`);
4. `session.finish(title, tables, notes)` prints the tables and replaces its own section of
   `benchmarks/RESULTS.md` (between `<!-- NAME:start -->` and `<!-- NAME:end -->`; `NAME-quick`
   for `--quick` runs, `NAME-gpu` for runs on a GPU) with the figures, the exact command, the
   machine, the library versions and the date.
"""

from __future__ import annotations

import atexit
import dataclasses
import datetime
import gzip
import json
import os
import platform
import re
import resource
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import jax
import tyro

from aes_rl.flags import BackendName, EnvName

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "RESULTS.md"
RESULTS_HEADER = """# Benchmark results

Each section below is written by one benchmark module (`python -m benchmarks.NAME`) and
replaced whenever that benchmark runs again; the text between a section's markers is generated.
Sections marked QUICK come from `--quick` smoke-test budgets (they have their own markers,
`NAME-quick`, so a smoke test never replaces a full run's figures): they show that the
benchmark runs, not how fast or how well anything is.

Commands recorded before the benchmarks took `aes-rl train`'s spellings (2026-11-26) use the
old flags; today they read: `--hidden 64,64` -> `--actor-hidden 64 64 --critic-hidden 64 64`,
`--slots` -> `--num-slots`, `--seeds 0 1 2` -> `--seed 0 --num-seeds 3`, and in
time_efficiency `--budget` -> `--steps`, `--sweep-budget` -> `--sweep-steps`, `--chunk-ticks`
-> `--ticks-per-chunk`; in sweep_rows `--rows 1 8` -> `--num-rows 1 8`, `--modes` -> `--rows`.
"""
# Set by the suite so a child's section can say it was run from the suite.
SUITE_ENV = "AES_RL_BENCH_SUITE_CMD"

warnings.filterwarnings("ignore", message=".*Brax System, piplines.*")


# ------------------------------------------------------------------ command line


Flag = tyro.conf.FlagCreatePairsOff[bool]


def config_flags(**notes: str):
    """Class decorator (above `@dataclass`): every flag of a benchmark named after a Config
    field (`--env`, `--num-slots`, `--warmup-steps`, ...) takes that field's declared help and
    allowed range (`aes_rl.config.FIELDS`, one declaration per field), so a benchmark's --help
    says what `aes-rl train --help` says. `notes` add what the benchmark does with the flag
    (`num_slots="Used by the multi-slot algorithms."`); a note for a flag that is not a Config
    field is an error. The benchmark keeps its own default and type (its choices may be
    narrower); the Config it builds still validates the value."""
    from typing import Annotated, get_type_hints

    from aes_rl.config import FIELDS

    def wrap(cls):
        own = cls.__dict__.get("__annotations__", {})
        stray = sorted(set(notes) - (set(own) & set(FIELDS)))
        if stray:
            raise ValueError(f"config_flags: no Config-field flag(s) {stray} in {cls.__name__}")
        hints = get_type_hints(cls, include_extras=True)
        for name in own:
            spec = FIELDS.get(name)
            if spec is None:
                continue
            text = spec.help_text(note=notes.get(name, ""))
            own[name] = Annotated[hints[name], tyro.conf.arg(help=text)]
        return cls

    return wrap


@dataclass
class BenchFlags:
    """The flags every benchmark shares. A benchmark's own `Args` subclasses this and adds its
    options, spelled as `aes-rl train` spells them where they mean the same (`--env`,
    `--backend`, `--algo`, `--num-slots`, `--actor-hidden`/`--critic-hidden`, `--seed`/
    `--num-seeds`, `--steps`, `--warmup-steps`, `--eval-episodes`, `--ticks-per-chunk`).
    `MEASURES_COMPILE`: the benchmark reports compile times, so a full run defaults to a fresh
    (empty) persistent compilation cache and its compile times are real compiles."""

    MEASURES_COMPILE: ClassVar[bool] = False

    quick: Flag = False
    """Tiny budgets and one env for the settings left at their defaults (those given keep
    their values): a smoke test that takes about a minute."""
    cache: Literal["shared", "fresh"] | None = None
    """Persistent compilation cache: 'shared' ($AES_RL_JAX_CACHE or ~/.cache/aes_rl/jax) or
    'fresh' (an empty temporary one, so compile times are real compiles). Default: fresh for
    full runs of benchmarks that measure compiles, else shared."""
    results: str = "benchmarks/RESULTS.md"
    """Markdown file whose section this benchmark replaces (relative paths: to the checkout)."""
    no_write: Flag = False
    """Print only; leave RESULTS.md and the committed figures and CSVs alone (they go to the
    temporary directory)."""
    note: tyro.conf.UseAppendAction[tuple[str, ...]] = ()
    """A free-text line added to the section (repeatable)."""
    summary_json: str | None = None
    """Set by the suite: where this benchmark writes its summary for the suite's table."""

    @property
    def seeds(self) -> tuple[int, ...]:
        """Seeds seed .. seed+num_seeds-1 (benchmarks that have --seed/--num-seeds)."""
        return tuple(range(self.seed, self.seed + self.num_seeds))  # type: ignore[attr-defined]

    @property
    def nets(self) -> str:
        """'64x64' (actor and critic alike) or 'actor 64x64, critic 256x256'."""
        actor = "x".join(map(str, self.actor_hidden))  # type: ignore[attr-defined]
        critic = "x".join(map(str, self.critic_hidden))  # type: ignore[attr-defined]
        return actor if actor == critic else f"actor {actor}, critic {critic}"

    @property
    def net_overrides(self) -> dict:
        return dict(actor_hidden=tuple(self.actor_hidden), critic_hidden=tuple(self.critic_hidden))  # type: ignore[attr-defined]


@config_flags()
@dataclass
class LoopFlags(BenchFlags):
    """What the loop benchmarks measure on: one env and backend, CPU-sized nets."""

    MEASURES_COMPILE: ClassVar[bool] = True

    env: EnvName = "hopper"
    backend: BackendName = "spring"
    actor_hidden: tuple[int, ...] = (64, 64)
    critic_hidden: tuple[int, ...] = (64, 64)
    matmul_precision: Literal["default", "float32", "tensorfloat32", "bfloat16"] = "default"
    """How float32 matrix products are computed (`jax_default_matmul_precision`): 'default'
    is JAX's choice (TF32 tensor cores on recent NVIDIA GPUs; a CPU computes float32 whatever
    is set). The section's Software line records it."""


A = TypeVar("A", bound=BenchFlags)


def parse(cls: type[A], argv, module: str, doc: str | None) -> A:
    """The benchmark's flags (tyro; a bad argument is one line and exit status 2)."""
    from aes_rl.flags import parse as parse_flags

    args = parse_flags(cls, argv, f"python -m {module}", (doc or "").splitlines()[0] or None)
    precision = getattr(args, "matmul_precision", "default")
    if precision != "default":
        os.environ["JAX_DEFAULT_MATMUL_PRECISION"] = precision  # for the benchmark's subprocesses
        jax.config.update("jax_default_matmul_precision", precision)
    if not Path(args.results).is_absolute():
        args.results = str(BENCH_DIR.parent / args.results)
    if getattr(args, "num_seeds", 1) < 1:
        from aes_rl.flags import fail

        fail(f"python -m {module}", f"num_seeds: must be >= 1, got {args.num_seeds}")
    return args


def quick(args: A, **budgets) -> A:
    """`--quick`: set the tiny `budgets` (by field name) on the flags still at their defaults;
    a flag given on the command line keeps its value (`--quick --num-rows 1 8` times 1 and 8
    rows on quick budgets). Without `--quick`, nothing changes."""
    if args.quick:
        fields = {f.name: f for f in dataclasses.fields(args)}
        for name, value in budgets.items():
            f = fields[name]  # a KeyError here is a typo in the benchmark
            default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
            if getattr(args, name) == default:
                setattr(args, name, value)
    return args


def command_line(module: str) -> str:
    """The command that ran this benchmark, as typed (without the suite's private flags)."""
    argv, out, skip = sys.argv[1:], [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--summary-json":
            skip = True
            continue
        if a.startswith("--summary-json="):
            continue
        out.append(_relative(a))
    return " ".join(["python", "-m", module] + ([shlex.join(out)] if out else []))


def _relative(arg: str) -> str:
    """A path argument inside the repository, written relative to it (no machine paths)."""
    root = str(BENCH_DIR.parent) + os.sep
    return arg.replace(root, "") if root in arg else arg


# ------------------------------------------------------------------ compile accounting


@dataclass
class CompileLog:
    """Process-wide compilation time and persistent-cache hits, from JAX's monitoring events.

    `backend_s` is XLA compile time (or the cache load time on a persistent-cache hit);
    `trace_s` and `lower_s` are jaxpr tracing and MLIR lowering.
    """

    trace_s: float = 0.0
    lower_s: float = 0.0
    backend_s: float = 0.0
    compiles: int = 0
    cache_hits: int = 0
    cache_misses: int = 0

    def install(self) -> CompileLog:
        jax.monitoring.register_event_duration_secs_listener(self._on_duration)
        jax.monitoring.register_event_listener(self._on_event)
        return self

    def _on_duration(self, event: str, duration: float, **_: Any) -> None:
        if event == "/jax/core/compile/jaxpr_trace_duration":
            self.trace_s += duration
        elif event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
            self.lower_s += duration
        elif event == "/jax/core/compile/backend_compile_duration":
            self.backend_s += duration
            self.compiles += 1

    def _on_event(self, event: str, **_: Any) -> None:
        if event == "/jax/compilation_cache/cache_hits":
            self.cache_hits += 1
        elif event == "/jax/compilation_cache/cache_misses":
            self.cache_misses += 1

    @property
    def total_s(self) -> float:
        return self.trace_s + self.lower_s + self.backend_s

    def as_dict(self) -> dict:
        return dict(trace_s=self.trace_s, lower_s=self.lower_s, backend_s=self.backend_s,
                    total_s=self.total_s, compiles=self.compiles, cache_hits=self.cache_hits,
                    cache_misses=self.cache_misses)


# ------------------------------------------------------------------ machine record


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _version(module: str) -> str:
    try:
        from importlib.metadata import version
        return version(module)
    except Exception:  # noqa: BLE001 - a missing package is reported, not fatal
        return "not installed"


def machine() -> dict:
    """Where and with what the figures were measured."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    mem = _memory_gib()
    return {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gib": round(mem, 1) if mem is not None else None,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": _version("jaxlib"),
        "brax": _version("brax"),
        "jax_backend": jax.default_backend(),
        "devices": ", ".join(str(d) for d in jax.devices()),
        "matmul_precision": jax.config.jax_default_matmul_precision or "JAX's default",
        "xla_flags": xla_flags(),
    }


def xla_flags() -> str:
    """`$XLA_FLAGS` as the section records it: a flag's value that is a path outside the
    checkout (`--xla_dump_to=/tmp/x`) is written `<path>`."""
    out = []
    for flag in os.environ.get("XLA_FLAGS", "").split():
        name, eq, value = _relative(flag).partition("=")
        out.append(f"{name}=<path>" if eq and value.startswith(("/", "~")) else name + eq + value)
    return " ".join(out)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ------------------------------------------------------------------ timing


def timed(fn: Callable, *args) -> tuple[Any, float]:
    """Call `fn(*args)`, wait for every output array, return (output, seconds)."""
    t0 = time.perf_counter()
    out = fn(*args)
    jax.block_until_ready(out)
    return out, time.perf_counter() - t0


def figures_dir(args: BenchFlags, quick_in_tmp: bool = True) -> Path:
    """Where a benchmark writes its figures and CSVs: `benchmarks/`, committed beside
    RESULTS.md; the temporary directory under `--no-write` (a run that does not write its
    section must not replace the figures the section shows either), and under `--quick` where
    `quick_in_tmp`."""
    if args.no_write or (args.quick and quick_in_tmp):
        return Path(tempfile.gettempdir())
    return BENCH_DIR


def compile_jitted(jitted: Callable, *args) -> tuple[Callable, float]:
    """Lower and compile `jitted` for `args` (not run): (compiled executable, seconds).

    Call the returned executable for steady-state timing: calling `jitted` itself would look
    up (or build) its own executable again. Before compiling, the programs JAX and the loop
    cache are dropped if the process nears Linux's limit on memory mappings
    (`program.bound_compiled_programs`): a benchmark compiles one program per configuration.
    """
    from aes_rl import program

    if program.bound_compiled_programs():
        log("dropped the cached compiled programs (the process neared Linux's limit on memory "
            "mappings); those still in use are rebuilt")
    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - t0


def time_repeats(step: Callable[[Any], Any], carry: Any, repeats: int) -> tuple[Any, list[float]]:
    """`carry = step(carry)` `repeats` times (threading donated state); per-call seconds."""
    times = []
    for _ in range(repeats):
        carry, dt = timed(step, carry)
        times.append(dt)
    return carry, times


@dataclass(frozen=True)
class Stats:
    median: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, xs: Sequence[float]) -> Stats:
        xs = list(xs)
        return cls(statistics.median(xs), min(xs), max(xs), len(xs))


# ------------------------------------------------------------------ statistics over seeds


def t_interval(xs: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): the mean over seeds and its 95% Student-t interval.

    With a handful of seeds a percentile bootstrap has too few distinct resamples to be
    honest (3 seeds give 10); the t-interval is wide where the data are few. One value gives
    NaN bounds (no interval). Values that are all equal give a zero-width interval: the seeds
    agreed at the data's resolution, which is all it says.
    """
    from scipy import stats

    xs = [float(x) for x in xs]
    mean = statistics.fmean(xs)
    if len(xs) < 2:
        return mean, float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(xs) - 1) * statistics.stdev(xs) / len(xs) ** 0.5
    return mean, mean - half, mean + half


def ratio_interval(ratios: Sequence[float]) -> tuple[float, float, float]:
    """(geometric mean, low, high) of ratios over seeds: the t-interval of their logarithms,
    mapped back. A ratio and its inverse then get mirrored figures (an arithmetic mean of
    ratios is biased upward), and the bounds stay positive."""
    import math

    mean, lo, hi = t_interval([math.log(r) for r in ratios])
    return math.exp(mean), math.exp(lo), math.exp(hi)


def fmt_interval(lo: float, hi: float, digits: int = 3) -> str:
    """A table cell for an interval: `[lo, hi]`, or n/a without one."""
    if lo != lo or hi != hi:
        return "n/a"
    return f"[{fmt(lo, digits)}, {fmt(hi, digits)}]"


# ------------------------------------------------------------------ tables


def fmt(x: Any, digits: int = 3) -> str:
    """A table cell: floats to `digits` significant figures (large ones as integers)."""
    if isinstance(x, bool) or x is None:
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if x != x:  # NaN
            return "n/a"
        if abs(x) >= 10 ** digits:
            return f"{x:,.0f}"
        return f"{x:.{digits}g}"
    return str(x)


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 3) -> str:
    cells = [[fmt(c, digits) for c in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


# ------------------------------------------------------------------ profiles


def traced(fn: Callable, arg, trace_dir: Path | str):
    """Run `fn(arg)` once under `jax.profiler.trace`, writing a Perfetto trace to trace_dir."""
    with jax.profiler.trace(str(trace_dir), create_perfetto_trace=True):
        out = jax.block_until_ready(fn(arg))
    return out


def _trace_events(trace_dir: Path | str) -> tuple[list[dict], dict]:
    """The events of the newest `perfetto_trace.json.gz` under trace_dir, and the names of the
    processes that recorded them (pid -> name)."""
    paths = sorted(Path(trace_dir).glob("**/perfetto_trace.json.gz"), key=os.path.getmtime)
    if not paths:
        raise FileNotFoundError(f"no perfetto_trace.json.gz under {trace_dir}")
    with gzip.open(paths[-1], "rt") as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    names = {e["pid"]: e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name"}
    return events, names


def trace_summary(trace_dir: Path | str, per: int, top: int = 12) -> list[dict]:
    """Where the time of a traced run went: the `top` events by total duration.

    Reads the newest `perfetto_trace.json.gz` under trace_dir. Events are grouped by the
    process that recorded them (the host's XLA thunks, a GPU's kernels and copies) and their
    name; `per` divides counts and durations (say, the ticks of the traced chunk). Events nest
    (a while loop holds its body's), so totals of different rows overlap.
    """
    events, names = _trace_events(trace_dir)
    total: dict[tuple[str, str], list[float]] = {}
    for e in events:
        if e.get("ph") != "X" or str(e.get("name", "")).startswith("$"):
            continue  # "$file:line" events are Python frames of the host, not the program
        key = (names.get(e.get("pid"), str(e.get("pid"))), e["name"])
        acc = total.setdefault(key, [0, 0.0])
        acc[0] += 1
        acc[1] += float(e.get("dur", 0.0))
    ranked = sorted(total.items(), key=lambda kv: -kv[1][1])[:top]
    return [dict(process=k[0], name=k[1], calls=v[0] / per, us=v[1] / per) for k, v in ranked]


# The parts of a tick, by the `jax.named_scope`s the engine's tick puts around them
# (`aes_rl.engine.SCOPES`, `ENV_SCOPES`), as an instruction's `op_name` carries them.
TICK_PARTS = (
    ("actor_steps", "actor steps"),
    ("env_steps", "env steps"),
    ("critic_steps", "critic steps"),
    ("job_ends", "job ends (tells, assignment, resets)"),
)
ENV_PARTS = (
    ("simulator", "env steps: the simulator"),
    ("actions", "env steps: the actors' actions"),
)
ENV_REST = "env steps: the rest (replay writes, bookkeeping)"
REST = "the rest (no part of the tick in its scope: the loop, a plain vmap's selects)"


def hlo_scopes(hlo_text: str) -> dict[str, str]:
    """Each instruction of an optimized HLO module (`compiled.as_text()`) with its `op_name`
    (the transforms and `jax.named_scope`s it was traced in, '/'-separated). Instructions
    without one are left out."""
    out = {}
    for line in hlo_text.splitlines():
        m = re.match(r'\s+(?:ROOT )?%([\w.\-]+) = .*?op_name="([^"]*)"', line)
        if m:
            out[m[1]] = m[2]
    return out


def tick_part(op_name: str) -> str:
    """Which part of the tick an instruction with this `op_name` belongs to: the first
    (outermost) tick scope in it, and inside the env steps the simulator's or the actions'."""
    scopes = op_name.split("/")
    for scope in scopes:
        for mark, part in TICK_PARTS:
            if scope != mark:
                continue
            if mark != "env_steps":
                return part
            for inner, sub in ENV_PARTS:
                if inner in scopes:
                    return sub
            return ENV_REST
    return REST


CONTROL_FLOW = ("while", "conditional", "call", "command_buffer")  # events that hold others


def kernel_parts(trace_dir: Path | str, hlo_text: str, per: int) -> list[dict]:
    """Where a traced chunk's device time went, by part of the tick (`TICK_PARTS`).

    Every device event (a GPU kernel or copy) is matched to the HLO instruction it runs (a
    kernel is named after its fusion, `loop_add_fusion_27` for `%loop_add_fusion.27`) and
    takes the part of that instruction's named scope (`tick_part`). An event with no
    instruction of its own (a copy, a library GEMM) takes the part that holds most of the
    matched time of its command buffer (the `hlo_op` it was launched by); what is left is
    'unattributed'. On a CPU, whose trace has no device, the host's events of the program's
    instructions (loops and other events that hold others left out) are split the same way.
    Rows: part, events and µs per `per` (say, per tick), share of the time of the events counted."""
    events, names = _trace_events(trace_dir)
    sources = hlo_scopes(hlo_text)
    device = [e for e in events if e.get("ph") == "X" and "/device:" in names.get(e.get("pid"), "")]
    if not device:  # a CPU: the host runs each instruction as its own event
        device = [
            e
            for e in events
            if e.get("ph") == "X"
            and e.get("name") in sources
            and not str(e["name"]).startswith(CONTROL_FLOW)
        ]
    found, by_buffer = [], {}
    for e in device:
        name, dur = str(e.get("name", "")), float(e.get("dur", 0.0))
        inst = re.sub(r"_(\d+)$", r".\1", name)
        inst = inst if inst in sources else name if name in sources else None
        part = tick_part(sources[inst]) if inst else None
        buffer = (e.get("args") or {}).get("hlo_op", "")
        if part:
            by_buffer.setdefault(buffer, {}).setdefault(part, 0.0)
            by_buffer[buffer][part] += dur
        found.append((part, buffer, dur))
    total: dict[str, list[float]] = {}
    for part, buffer, dur in found:
        if part is None:
            held = by_buffer.get(buffer)
            part = max(held, key=held.get) if held else "unattributed"
        acc = total.setdefault(part, [0, 0.0])
        acc[0] += 1
        acc[1] += dur
    busy = sum(v[1] for v in total.values()) or 1.0
    ranked = sorted(total.items(), key=lambda kv: -kv[1][1])
    return [dict(part=k, events=v[0] / per, us=v[1] / per, share=v[1] / busy) for k, v in ranked]


# ------------------------------------------------------------------ RESULTS.md


def section_key(name: str, quick: bool, backend: str, variant: Sequence[str] = ()) -> str:
    """The RESULTS.md section a run writes: quick runs get their own, so a smoke test never
    replaces real figures; so do runs on a backend other than the CPU (a GPU's sit beside),
    and runs of a `variant` (another physics backend, another matmul precision)."""
    return (name + ("-quick" if quick else "") + "".join(f"-{v}" for v in variant)
            + ("" if backend == "cpu" else f"-{backend}"))


def variant(args: BenchFlags) -> tuple[str, ...]:
    """What sets a run's figures apart from the defaults' so that it keeps its own section:
    a physics backend other than spring, a matmul precision other than JAX's default."""
    physics = getattr(args, "backend", "spring")
    precision = getattr(args, "matmul_precision", "default")
    return (() if physics == "spring" else (physics,)) + (
        () if precision == "default" else (precision,))


def write_section(name: str, body: str, path: Path | str = RESULTS) -> None:
    """Replace the text between this benchmark's markers (append the section if missing)."""
    path = Path(path)
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else RESULTS_HEADER
    i, j = text.find(start), text.find(end)
    if i >= 0 and j > i:
        text = text[:i] + block + text[j + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


@dataclass
class Session:
    """One benchmark run: its arguments, compile accounting, start time and load."""

    name: str
    args: BenchFlags
    compile_log: CompileLog
    cache: str
    started: float = field(default_factory=time.time)
    load_start: tuple[float, float, float] = field(default_factory=os.getloadavg)

    @classmethod
    def start(cls, name: str, args: BenchFlags) -> Session:
        """Persistent compilation cache on (fresh or shared), compile accounting installed."""
        measures = type(args).MEASURES_COMPILE
        cache = args.cache or ("fresh" if measures and not args.quick else "shared")
        if cache == "fresh":
            tmp = tempfile.mkdtemp(prefix="aes_rl_bench_cache_")
            atexit.register(shutil.rmtree, tmp, ignore_errors=True)
            os.environ["AES_RL_JAX_CACHE"] = tmp
        from aes_rl import run

        run.enable_compilation_cache()
        return cls(name, args, CompileLog().install(), cache)

    def header(self, title: str) -> str:
        m = machine()
        load_end = os.getloadavg()
        when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
        quick = ("**QUICK run (`--quick`): smoke-test budgets; these figures show the benchmark "
                 "runs, they are not results.**\n\n" if self.args.quick else "")
        suite = os.environ.get(SUITE_ENV)
        lines = [
            f"## {title}", "", quick.rstrip() if quick else None, "" if quick else None,
            f"- Command: `{command_line('benchmarks.' + self.name)}`"
            + (f" (run by `{suite}`)" if suite else ""),
            f"- Date: {when}; benchmark wall-clock {time.time() - self.started:.0f} s",
            f"- Machine: {m['platform']}; CPU {m['cpu']}; {m['cores']} cores "
            f"({m['usable_cores']} usable); {m['memory_gib']} GiB memory",
            f"- Software: Python {m['python']}, jax {m['jax']} (jaxlib {m['jaxlib']}), "
            f"brax {m['brax']}; JAX backend `{m['jax_backend']}` ({m['devices']}); float32 "
            f"matmul precision: {m['matmul_precision']}"
            + (f"; `XLA_FLAGS={m['xla_flags']}`" if m["xla_flags"] else ""),
            f"- Load average (1 min) at start / end: {self.load_start[0]:.2f} / {load_end[0]:.2f}",
            f"- Compilation: {self._compile_line()}",
            f"- Peak resident memory of the benchmark process: {peak_rss_mib():,.0f} MiB",
        ]
        return "\n".join(x for x in lines if x is not None)

    def _compile_line(self) -> str:
        c = self.compile_log
        line = (f"{c.total_s:.1f} s in all ({c.compiles} XLA compiles: trace {c.trace_s:.1f} s, "
                f"lower {c.lower_s:.1f} s, backend {c.backend_s:.1f} s); persistent cache "
                f"'{self.cache}' with {c.cache_hits} hits and {c.cache_misses} misses")
        if c.cache_hits:
            line += (" (compile times below include loads from the persistent cache, which "
                     "are faster than compiling; use `--cache fresh` for real compile times)")
        return line

    def finish(self, title: str, tables: Sequence[str], notes: Sequence[str] = (),
               extra: dict | None = None) -> str:
        """Print the tables, write the RESULTS.md section and the suite summary; return body."""
        notes = list(notes) + list(self.args.note)
        parts = [self.header(title)] + [t.strip() for t in tables]
        if notes:
            parts.append("\n".join(f"- {n}" for n in notes))
        body = "\n\n".join(parts) + "\n"
        print("\n" + body, flush=True)
        if not self.args.no_write:
            key = section_key(self.name, self.args.quick, jax.default_backend(),
                              variant(self.args))
            write_section(key, body, self.args.results)
            print(f"wrote section '{key}' of {self.args.results}", flush=True)
        if self.args.summary_json:
            summary = dict(name=self.name, wall_s=time.time() - self.started,
                           peak_rss_mib=peak_rss_mib(), compile=self.compile_log.as_dict(),
                           cache=self.cache, quick=bool(self.args.quick), **(extra or {}))
            Path(self.args.summary_json).write_text(json.dumps(summary, indent=2))
        return body


# ------------------------------------------------------------------ small shared helpers


_LOG_START = time.monotonic()


def log(*parts: Any) -> None:
    """Progress lines go to stderr so stdout holds only the tables, each after the seconds since
    the benchmark module was loaded (`[  12 s]`): a run cut off by a time limit still tells
    from its log how long each part took."""
    print(f"[{time.monotonic() - _LOG_START:5.0f} s]", *parts, file=sys.stderr, flush=True)


def counters(state) -> dict:
    """Host copies of the loop's counters for seed 0 (ints)."""
    c = jax.device_get(state.counters)
    return {k: int(getattr(c, k)[0]) for k in ("total_steps", "critic_steps", "actor_steps",
                                               "ticks", "busy", "arrivals")}


def timed_chunks(compiled: Callable, state, repeats: int):
    """Time `repeats` back-to-back chunks: (state, seconds per chunk, counters before, after)."""
    before = counters(state)
    times = []
    for _ in range(repeats):
        (state, _), dt = timed(compiled, state)
        times.append(dt)
    return state, times, before, counters(state)


# ------------------------------------------------------------------ learning runs


@dataclass
class LearningRun:
    """What a learning benchmark keeps from one `run.train` call (all seeds of one config)."""

    label: str
    rows: list[dict]  # per chunk and seed, as `run.read_metrics` returns them
    wall_s: float  # whole call: init, compiles, chunks, evaluations, checkpoint
    chunk_wall_s: float  # sum of the chunk calls (the first one includes its compile)
    run_dir: str
    final_returns: list[list[float]] = field(default_factory=list)  # [seed][episode], or []

    def seeds(self) -> list[int]:
        return sorted({r["seed"] for r in self.rows})

    def curve(self, seed: int) -> tuple[list[int], list[float]]:
        """(counted steps, eval_mean) of one seed, chunk by chunk."""
        rows = sorted((r for r in self.rows if r["seed"] == seed), key=lambda r: r["chunk"])
        return [int(r["total_steps"]) for r in rows], [float(r["eval_mean"]) for r in rows]

    def final(self, seed: int) -> dict:
        rows = sorted((r for r in self.rows if r["seed"] == seed), key=lambda r: r["chunk"])
        return rows[-1]


MADE_WITH = "made_with"  # the key of a kept run's settings in its `Partial` value


def run_settings(cfg, **extra) -> dict:
    """What a kept run is made with: every field of its config that its algorithm reads (a
    field declared for other algorithms only, e.g. AES-RL's P in a P-CEM-RL run, is left out,
    so changing AES-RL's preset keeps the other algorithms' runs) and the benchmark's own
    settings (`extra`: budget, evaluation), normalised through JSON so a reloaded file compares
    equal."""
    from aes_rl.config import FIELDS

    mine = {
        k: v for k, v in cfg.to_dict().items() if k not in FIELDS or FIELDS[k].read_by(cfg.algo)
    }
    return json.loads(json.dumps(dict(mine, **extra), sort_keys=True, default=str))


class Partial:
    """Finished runs kept on disk by key, so a crashed benchmark continues where it stopped.

    `path`: None (keep nothing), a `.json` file holding every key, or a directory holding one
    `<key>.json` per key (several processes may share a directory when their keys differ).
    Every write is atomic (a temporary file renamed into place).

    Keys name a run (env, algorithm, seed, ...); `settings` (`run_settings`: every config
    field and the benchmark's budget) say what made it. A run put with settings is returned
    only to a `get` with the same settings: other settings under the same key are an error
    naming the fields, never a silent reuse. Runs kept before settings were recorded are
    returned as they are (not checked).
    """

    def __init__(self, path: str | None):
        self.path = Path(path) if path else None
        self.one_file = self.path is not None and self.path.suffix == ".json"
        self.done: dict = {}
        if self.path is not None and self.one_file and self.path.exists():
            self.done = json.loads(self.path.read_text())
        elif self.path is not None and not self.one_file:
            self.path.mkdir(parents=True, exist_ok=True)

    def _file(self, key: str) -> Path:
        return self.path / (key.replace("/", "__") + ".json")

    def get(self, key: str, settings: dict | None = None):
        if key not in self.done and self.path is not None and not self.one_file:
            f = self._file(key)
            if f.exists():
                self.done[key] = json.loads(f.read_text())
        value = self.done.get(key)
        kept = value.get(MADE_WITH) if isinstance(value, dict) else None
        # compared over what the run reads now: a kept field the algorithm does not read (or
        # that no longer exists) does not matter; a field it reads that the run lacks does
        diff = []
        if settings is not None and kept is not None:
            diff = sorted(k for k in settings if kept.get(k) != settings[k])
        if diff:
            shown = "; ".join(f"{k}: {kept.get(k)!r} there, {settings.get(k)!r} here"
                              for k in diff[:4]) + ("; ..." if len(diff) > 4 else "")
            where = self.path if self.one_file else self._file(key)
            raise ValueError(
                f"--partial: the kept run {key!r} in {where} was made with other settings "
                f"({shown}); use another --partial directory, or delete that run to make it "
                "again")
        return value

    def put(self, key: str, value, settings: dict | None = None) -> None:
        if settings is not None:
            value = dict(value, **{MADE_WITH: settings})
        self.done[key] = value
        if self.path is None:
            return
        target = self.path if self.one_file else self._file(key)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(self.done if self.one_file else value))
        tmp.replace(target)


def train_run(label: str, cfg, steps: int, seeds: Sequence[int], eval_episodes: int,
              run_root: str | None, final_episodes: int = 0,
              eval_every_steps: int = 0) -> LearningRun:
    """One `run.train` in a fresh run directory under `run_root` (default: a /tmp dir).

    Checkpoints only at the end, without the replay buffer (the benchmark never resumes).
    `final_episodes` > 0: afterwards, evaluate each seed's final policy (ES mean, TD3 actor) on
    that many fresh deterministic episodes (a key unused by the per-chunk evaluations).
    """
    from aes_rl import program, run

    root = Path(run_root) if run_root else Path(tempfile.gettempdir()) / "aes_rl_bench"
    root.mkdir(parents=True, exist_ok=True)
    run_dir = tempfile.mkdtemp(prefix=f"{label}_", dir=root)
    settings = run.RunSettings(run_dir=run_dir, steps=steps, seeds=tuple(seeds),
                               eval_episodes=eval_episodes, save_every=10**9, keep=1,
                               eval_every_steps=eval_every_steps,
                               save_buffer=False, progress=False)
    log(f"training {label}: {cfg.algo} on {cfg.env}/{cfg.backend}, {steps} counted steps, "
        f"seeds {list(seeds)}, chunks of {cfg.ticks_per_chunk} ticks -> {run_dir}")
    t0 = time.perf_counter()
    result = run.train(cfg, settings)
    wall = time.perf_counter() - t0
    if result.interrupted:  # a stopped run is not a result (and must never be kept as one)
        raise SystemExit(f"{label}: interrupted at chunk {result.chunks}; nothing kept")
    rows = run.read_metrics(Path(run_dir))
    chunk_wall = max(r["wall_time"] for r in rows)
    log(f"  {label}: {result.chunks} chunks in {wall:.0f} s")
    finals: list[list[float]] = []
    if final_episodes > 0:
        evaluate = program.make_evaluate(cfg, final_episodes)
        rets = evaluate(program.mean_params(cfg, result.state), jax.random.key(987_654_321))
        finals = [[float(x) for x in row] for row in jax.device_get(rets)]
    return LearningRun(label, rows, wall, chunk_wall, run_dir, finals)
