"""How a run setting is declared: one `field(...)` per setting, with its meaning, range or
choices, its mark (traced, structural or neither) and its value on particular envs.

A leaf module (it imports nothing of aes_rl): `aes_rl.config` declares the settings every
algorithm reads, and each algorithm's own numbers are declared beside the code that reads them
(`OPTIONS` in `aes_rl.es.aes`, `es.cem`, `es.acem`, `es.one_plus_one`, `es.strategies` and
`aes_rl.td3`, as evosax keeps each strategy's parameters with the strategy). `aes_rl.config`
assembles them into one `Config`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

INT_MAX = 2**31 - 1  # counters and sizes live in int32 arrays inside the compiled loop


@dataclasses.dataclass(frozen=True)
class Field:
    """What a Config field means, which values it takes, its value on particular envs and how
    the compiled loop holds it: validation, presets, CLI help, sweeps and docs read it."""

    help: str
    low: float | None = None  # inclusive bound, unless low_open
    high: float | None = None  # inclusive bound, unless high_open
    low_open: bool = False
    high_open: bool = False
    # the allowed strings; a function is called when asked (the registry's algorithms)
    options: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None
    # traced: a number or rule choice that fixes no shape; the compiled program takes it as a
    # traced value (`engine.HParams`, carried in the state), so rows of one program may differ
    # in it (a sweep) and changing it never recompiles (docs/algorithm.md §10)
    traced: bool = False
    # structural: it fixes the compiled program's shapes (the state's layout); a continued
    # run may not change it. Neither mark: static under jit, but a continued run may change
    # it (the program recompiles).
    structural: bool = False
    # env -> the presets' value there, over the algorithm's preset (`preset`)
    per_env: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # the algorithms that read it, as a label ("" for every algorithm; set by `options`)
    owner: str = ""

    def __post_init__(self):
        if self.traced and self.structural:
            raise ValueError("Field: a field is traced or structural, not both")

    def read_by(self, algo: str) -> bool:
        """Whether `algo` reads this field: every algorithm reads a shared field (no owner)."""
        return not self.owner or algo in self.owner.split(", ")

    def help_text(self, ranged: bool = True, note: str = "") -> str:
        """The help, then `note`, then the allowed range when `ranged` and there are no
        choices: how every front end (the CLI, the benchmarks) describes the field."""
        text = f"{self.help} {note}" if note else self.help
        if ranged and self.choices is None:
            text += f" Allowed: {self.range_text()}."
        return text

    @property
    def choices(self) -> tuple[str, ...] | None:
        return self.options() if callable(self.options) else self.options

    def range_text(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(self.choices)
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            high = "2^31-1" if self.high == INT_MAX else f"{self.high:g}"
            return f"in {left}{self.low:g}, {high}{right}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return "any value"


def field(
    default: Any,
    help: str,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None,
    traced: bool = False,
    structural: bool = False,
    per_env: Mapping[str, Any] | None = None,
) -> Any:
    """Declare a Config field: its default (Config()'s value) and its `Field`, kept in the
    dataclass field's metadata (`FIELDS` reads it there)."""
    spec = Field(
        help, low, high, low_open, high_open, choices, traced, structural, dict(per_env or {})
    )
    return dataclasses.field(default=default, metadata={"spec": spec})


def options(owner: str, **declared: Any) -> dict[str, Any]:
    """An algorithm's own settings: `field(...)` declarations by name, labelled with `owner`
    (the algorithms that read them, for help texts and the reference), for `aes_rl.config`."""
    out = {}
    for name, f in declared.items():
        spec = dataclasses.replace(f.metadata["spec"], owner=owner)
        out[name] = dataclasses.field(default=f.default, metadata={"spec": spec})
    return out
