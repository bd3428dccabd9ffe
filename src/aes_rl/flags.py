"""The flags every front end shares, as tyro dataclasses.

`aes-rl train` / `aes-rl sweep`, the experiment modules (`python -m experiments.NAME`) and the
benchmarks (`python -m benchmarks.NAME`) spell a setting the same way: `--seed 0 --num-seeds 3`,
`--actor-hidden 64 64 --critic-hidden 64 64`, `--num-slots 5`, `--steps 100000`,
`--rows map`, every Config field as `--field-name`. A front end composes:

- `RunFlags`: how a run is driven (budget, seeds, evaluation and checkpoint cadence, output);
- `Overrides` (or `SweepOverrides`, where a traced field takes several values): every Config
  field but algo/env/backend, default None = the authors' preset (`config.preset`);
- its own options (`--envs`, `--out-dir`, ...),

flattened into one flat set of flags (`tyro.conf.arg(name="")`). `parse` runs tyro with the
house error style: a bad argument is ONE line (`PROG: error: ...`) and exit status 2, before
any work starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import sys
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

import tyro

from aes_rl import algorithms
from aes_rl.config import FIELDS, Config, preset_default_text, whole_number
from aes_rl.envs import BACKENDS, ENV_NAMES
from aes_rl.program import ROW_MODES

# An algorithm's name: the registry's names when a command line is parsed (so that one added
# with `algorithms.register` can be chosen), `{aes-rl,acem-rl,...}` in the help.
Algo = Annotated[
    str,
    tyro.conf.arg(
        constructor_factory=lambda: Literal[algorithms.names()],  # type: ignore[valid-type]
        # tyro labels a swapped type's default as a list (['aes-rl']): show the word
        help_behavior_hint=lambda label: "(default: " + label.strip("[]'") + ")",
    ),
]
EnvName = Literal[ENV_NAMES]  # type: ignore[valid-type]
RowMode = Literal[ROW_MODES]  # type: ignore[valid-type]
BackendName = Literal[BACKENDS]  # type: ignore[valid-type]
Flag = tyro.conf.FlagCreatePairsOff[bool]  # --quiet, not --quiet/--no-quiet


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# Every plain `int` flag (the CLI's, the experiments' and the benchmarks') also takes `1e5`
# and `100_000`, as budgets are often written; a bad word is reported as "expected a whole
# number, got 'abc'". Pass REGISTRY to tyro (`parse` and the CLI do).
_WHOLE_NUMBER = tyro.constructors.PrimitiveConstructorSpec(
    nargs=1,
    metavar="INT",
    instance_from_str=lambda words: whole_number(words[0]),
    is_instance=_is_int,
    str_from_instance=lambda x: [str(x)],
)
REGISTRY = tyro.constructors.ConstructorRegistry()


@REGISTRY.primitive_rule
def _whole_number_rule(info: tyro.constructors.PrimitiveTypeInfo):
    return _WHOLE_NUMBER if info.type is int else None


# The same for an override whose default None means the preset's value.
OptionalCount = Annotated[
    int | None,
    tyro.constructors.PrimitiveConstructorSpec(
        nargs=1,
        metavar="INT",
        instance_from_str=lambda words: None if words[0] == "None" else whole_number(words[0]),
        is_instance=lambda x: x is None or _is_int(x),
        str_from_instance=lambda x: [str(x)],
    ),
]
Backend = Annotated[
    Literal[BACKENDS] | None,  # type: ignore[valid-type]
    tyro.conf.arg(
        metavar="{" + ",".join(BACKENDS) + "}",
        help_behavior_hint=f"(default: {preset_default_text('backend')})",
    ),
]
# The multi-process flags (`aes_rl.hosts`): absent on a one-process run.
Coordinator = Annotated[
    str | None,
    tyro.conf.arg(metavar="HOST:PORT|auto", help_behavior_hint="(default: one process)"),
]
ProcessCount = Annotated[
    int | None, tyro.conf.arg(metavar="INT", help_behavior_hint="(with --coordinator)")
]
# Config fields a front end sets through its own options, or that have no command-line form.
OWN = {"algo", "env", "backend", "env_kwargs"}
HIDDEN = ("actor_hidden", "critic_hidden")


class UsageError(ValueError):
    """A bad argument: reported as one line, exit status 2."""


# ------------------------------------------------------------------ how a run is driven


@dataclasses.dataclass(frozen=True)
class RunFlags:
    """How a run is driven (not what it computes): `rundir.RunSettings` from the command line."""

    steps: int = 100_000
    """Budget in counted env steps per row (individual rollouts only)."""
    seed: int = 0
    """First seed."""
    num_seeds: int = 1
    """Seeds seed, seed+1, ... (for every setting of a sweep), rows of one compiled program."""
    eval_episodes: int = 5
    """Deterministic episodes of the mean policy per evaluation."""
    eval_every: int = 1
    """Evaluate the mean policy every this many chunks."""
    eval_every_steps: int = 0
    """Instead, evaluate each row when its counted steps pass a multiple of this (and at the
    end): every algorithm on the same schedule of counted steps, whatever its chunk covers.
    0: by chunks."""
    save_every: int = 1
    """Checkpoint every this many chunks (and always at the end or on Ctrl-C)."""
    keep: int = 3
    """Checkpoints kept."""
    no_buffer: Flag = False
    """Leave the replay buffers out of checkpoints (smaller; resume is then inexact)."""
    tensorboard: Flag = False
    """Also write TensorBoard events (test/mean, train/individuals, train/p), one per row."""
    quiet: Flag = False
    """No progress bar."""
    debug_nans: Flag = False
    """Turn on JAX's NaN checks (slow) to find the operation that makes a NaN."""
    rows: RowMode = "auto"
    """map (rows one after another, each with its real branches), vmap (side by side, a
    branch becomes a select; fills a GPU); auto: map on CPU, vmap elsewhere."""
    coordinator: Coordinator = None
    """HOST:PORT of process 0 to split the rows over several processes (hosts), or auto (a
    cluster JAX detects: SLURM, Open MPI, TPU). Every process runs the same command."""
    num_processes: ProcessCount = None
    """Processes of a --coordinator run (the rows must be a multiple of it)."""
    process_id: ProcessCount = None
    """This process's index in [0, num_processes) (0 writes the run directory's files)."""

    def join_hosts(self) -> None:
        """Join the multi-process run these flags name (nothing without --coordinator);
        before any JAX computation."""
        from aes_rl import hosts

        try:
            hosts.initialize(self.coordinator, self.num_processes, self.process_id)
        except hosts.HostsError as err:
            raise UsageError(str(err)) from None

    @property
    def seeds(self) -> tuple[int, ...]:
        if self.num_seeds < 1 or self.seed < 0:
            raise UsageError(
                f"num_seeds/seed: need num_seeds >= 1 and seed >= 0, got {self.num_seeds}, "
                f"{self.seed}"
            )
        return tuple(range(self.seed, self.seed + self.num_seeds))

    def settings(self, run_dir, grid=(), **extra):
        """The run settings of these flags for `run_dir` (and a sweep's grid)."""
        from aes_rl.rundir import RunSettings

        return RunSettings(
            str(run_dir),
            steps=self.steps,
            seeds=self.seeds,
            grid=grid,
            eval_episodes=self.eval_episodes,
            eval_every=self.eval_every,
            eval_every_steps=self.eval_every_steps,
            save_every=self.save_every,
            keep=self.keep,
            save_buffer=not self.no_buffer,
            progress=not self.quiet,
            tensorboard=self.tensorboard,
            debug_nans=self.debug_nans,
            rows=self.rows,
            **extra,
        )


# ------------------------------------------------------------------ what a run computes


def _hint(name: str, defaults: dict) -> str:
    if name in defaults:
        value = defaults[name]
        shown = " ".join(map(str, value)) if isinstance(value, tuple) else str(value)
        return f"(default: {shown})"
    return f"(default: {preset_default_text(name)})"


def _override_type(f: dataclasses.Field, defaults: dict):
    """`X | None` (None: the preset's value), with help, choices and the default shown."""
    spec = FIELDS[f.name]
    if spec.choices is not None:  # a str checked by Config: its one-line error, no 'None' choice
        kind = str
        metavar = "{" + ",".join(spec.choices) + "}"
    else:
        kind = {"int": int, "float": float, "bool": bool, "str": str}.get(f.type, tuple[int, ...])
        metavar = {"int": "INT", "float": "FLOAT", "bool": "{True,False}", "str": "STR"}.get(
            f.type, "INT [INT ...]"
        )
    hint = _hint(f.name, defaults)
    if f.type == "bool":
        return Annotated[bool, tyro.conf.arg(help=spec.help, help_behavior_hint=hint)]
    text = spec.help_text(ranged=f.type in ("int", "float"))
    arg = tyro.conf.arg(help=text, help_behavior_hint=hint, metavar=metavar)
    if kind is int:
        return Annotated[OptionalCount, arg]
    return Annotated[kind | None, arg]


def _sweep_type(f: dataclasses.Field, defaults: dict):
    """A traced field of a sweep: one value or several (swept), or `all` (rules)."""
    spec = FIELDS[f.name]
    if not spec.traced:  # parsed as words too, so that several get a clear error
        # the help of the one-value form (its last annotation), not its parser
        return Annotated[tuple[str, ...] | None, _override_type(f, defaults).__metadata__[-1]]
    words = "{" + ",".join(spec.choices) + "} [...] | all" if spec.choices else "VALUE [VALUE ...]"
    text = spec.help_text(
        ranged=f.type in ("int", "float"),
        note="Several values are swept (the grid is the product of all swept lists).",
    )
    arg = tyro.conf.arg(help=text, help_behavior_hint=_hint(f.name, defaults), metavar=words)
    return Annotated[tuple[str, ...] | None, arg]


def overrides_class(name: str = "Overrides", sweep: bool = False, **defaults: Any) -> type:
    """A frozen dataclass with every Config field but `OWN` as an optional override, default
    None (the preset's value) or the given `defaults` (a front end's own, e.g. small nets on a
    CPU). With `sweep`, the traced fields take several values (words, see `sweep_values`).
    Booleans are flags (--parallel-critic, --no-stagger) whose default is the Config's."""
    unknown = set(defaults) - {f.name for f in dataclasses.fields(Config)} | (set(defaults) & OWN)
    if unknown:
        raise ValueError(f"overrides_class: no override field(s) {sorted(unknown)}")
    fields = []
    for f in dataclasses.fields(Config):
        if f.name in OWN:
            continue
        swept = sweep and f.type in ("int", "float", "str")
        kind = _sweep_type(f, defaults) if swept else _override_type(f, defaults)
        default = f.default if f.type == "bool" else None
        if f.name in defaults:
            value = defaults[f.name]
            if swept:  # words, as the command line gives them
                default = tuple(str(v) for v in (value if isinstance(value, tuple) else (value,)))
            else:
                default = value
        fields.append((f.name, kind, dataclasses.field(default=default)))
    return dataclasses.make_dataclass(name, fields, frozen=True)


Overrides = overrides_class()
Overrides.__doc__ = (
    "Hyper-parameter overrides. Each default is the authors' per-algorithm, per-environment "
    "preset (aes_rl.config.preset), shown as 'value; other value for algo/env'."
)
SweepOverrides = overrides_class("SweepOverrides", sweep=True)
SweepOverrides.__doc__ = (
    "Overrides as for train; a traced hyper-parameter given several values (or `all`, for a "
    "rule) is swept. Each default is the authors' per-algorithm, per-environment preset."
)


def chosen(overrides) -> dict[str, Any]:
    """The overrides that were set (None: the preset decides)."""
    return {k: v for k, v in dataclasses.asdict(overrides).items() if v is not None}


def sweep_values(overrides) -> tuple[dict[str, Any], tuple]:
    """(single values, grid) of sweep overrides: a field given several values (or `all`) is
    swept; structural fields given several values land in the grid too, where the grid check
    refuses them naming the field."""
    from aes_rl.sweep import parse_values

    single, grid = {}, []
    for name, value in chosen(overrides).items():
        if isinstance(value, tuple) and name not in HIDDEN:
            values = parse_values(name, value)
            if len(values) > 1:
                grid.append((name, values))
                continue
            value = values[0]
        single[name] = value
    return single, tuple(grid)


# ------------------------------------------------------------------ parsing


def one_line(text: str) -> str:
    """tyro's boxed error message folded into one line."""
    lines = []
    for raw in text.splitlines():
        if "───" in raw or "For full helptext" in raw:
            if lines:
                break
            continue
        line = raw.strip().strip("│╭╮╰╯─").strip()
        if line:
            lines.append(line)
    message = re.sub(r"\s+", " ", " ".join(lines)).strip()
    return message or text.strip().splitlines()[-1]


def fail(prog: str, message: str) -> None:
    """Print `PROG: error: MESSAGE` and exit with status 2."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


T = TypeVar("T")


def parse(
    target: Callable[..., T] | type[T],
    argv: list[str] | None,
    prog: str,
    description: str | None = None,
    default: T | None = None,
) -> T:
    """tyro.cli with one-line errors: a bad argument prints `PROG: error: ...` and exits 2;
    `--help` prints the help and exits 0."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            out = tyro.cli(target, args=argv, prog=prog, description=description,
                           default=default, registry=REGISTRY)
    except SystemExit as exit_:
        if exit_.code not in (0, None) and err.getvalue().strip():
            fail(prog, one_line(err.getvalue()))
        sys.stderr.write(err.getvalue())
        raise
    sys.stderr.write(err.getvalue())
    run_flags = getattr(out, "flags", None)
    if isinstance(run_flags, RunFlags):  # a front end of runs joins its processes first
        try:
            run_flags.join_hosts()
        except UsageError as error:
            fail(prog, str(error))
    return out


def flag_names(target: Callable | type) -> set[str]:
    """Every `--flag` a front end accepts (for tests of the shared spelling)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        tyro.cli(target, args=["--help"])
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", out.getvalue()))
