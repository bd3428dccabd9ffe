"""Sweeps: one run made of rows, each row one (hyper-parameter setting, seed), in ONE program.

A grid names traced fields (`config.HYPER`: numbers and rule choices that fix no shape) and
the values each takes; the settings are the product of the value lists (the first field
varies slowest) and every setting runs with every seed. All rows share the structure, so the
compiled chunk is the same program for all of them and the hyper-parameters travel in the
state (docs/algorithm.md §10). A grid of nothing is an ordinary run: one setting, its seeds.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

from aes_rl.config import FIELDS, HYPER, Config, whole_number

Grid = tuple[tuple[str, tuple[Any, ...]], ...]  # ((field, (value, ...)), ...)


class SweepError(ValueError):
    """A bad grid, reported (one line, naming the field) before any work starts."""


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of a run: its index in the state's row axis, config, seed and swept values."""

    index: int
    cfg: Config
    seed: int
    setting: tuple[tuple[str, Any], ...]  # (field, value) of every swept field

    @property
    def label(self) -> str:
        if not self.setting:
            return f"seed {self.seed}"
        values = ", ".join(f"{k}={v}" for k, v in self.setting)
        return f"row {self.index} ({values}, seed {self.seed})"

    @property
    def policy_file(self) -> str:
        """Exported policy name: policy_seed<k>.npz (no sweep), policy_row<i>.npz (sweep)."""
        return f"policy_row{self.index}.npz" if self.setting else f"policy_seed{self.seed}.npz"

    @property
    def tb_name(self) -> str:
        return f"row{self.index}" if self.setting else f"seed{self.seed}"


def choices(name: str) -> tuple[str, ...] | None:
    return FIELDS[name].choices


def parse_values(name: str, texts: Sequence[str]) -> tuple[Any, ...]:
    """Command-line words of a swept field as typed values; `all` = every choice of a rule."""
    kind = next(f.type for f in dataclasses.fields(Config) if f.name == name)
    allowed = choices(name)
    if not texts:
        raise SweepError(f"{name}: give at least one value" + (" (or all)" if allowed else ""))
    if "all" in texts and len(texts) > 1:
        raise SweepError(f"{name}: 'all' stands alone (every choice), got {' '.join(texts)}")
    if list(texts) == ["all"]:
        if allowed is None:
            raise SweepError(f"{name}: 'all' is only for fields with choices; give the values")
        return tuple(allowed)
    out = []
    for text in texts:
        if allowed is not None or kind == "str":
            out.append(text)
            continue
        try:
            out.append(whole_number(text) if kind == "int" else float(text))
        except ValueError:
            raise SweepError(f"{name}: expected {kind} values, got {text!r}") from None
    return tuple(out)


def check_grid(cfg: Config, grid: Grid) -> None:
    """One-line errors: unknown or structural fields, empty or repeated values, bad values."""
    names = [name for name, _ in grid]
    for name in names:
        if name not in FIELDS:
            raise SweepError(f"sweep: unknown field {name!r}")
        if name not in cfg.hyper_fields:
            allowed = ", ".join(cfg.hyper_fields)
            raise SweepError(
                f"sweep: {name} fixes the program's shapes or structure and cannot vary across "
                f"rows of one program (run separate programs); sweepable: {allowed}"
            )
    if len(set(names)) != len(names):
        raise SweepError(f"sweep: a field is given twice in {names}")
    for name, values in grid:
        if not values:
            raise SweepError(f"{name}: no values to sweep")
        if len(set(values)) != len(values):
            raise SweepError(f"{name}: repeated values {list(values)}")
    for setting in settings_of(grid):
        try:
            cfg.replace(**dict(setting))
        except ValueError as err:
            raise SweepError(f"sweep setting {dict(setting)}: {err}") from None


def settings_of(grid: Grid) -> list[tuple[tuple[str, Any], ...]]:
    names = [name for name, _ in grid]
    return [tuple(zip(names, combo)) for combo in itertools.product(*(v for _, v in grid))]


def expand(cfg: Config, grid: Grid, seeds: Sequence[int]) -> list[Row]:
    """Every (setting, seed) row, settings in grid order, seeds innermost."""
    rows = []
    for setting in settings_of(grid):
        row_cfg = cfg.replace(**dict(setting)) if setting else cfg
        for seed in seeds:
            rows.append(Row(len(rows), row_cfg, int(seed), setting))
    return rows


def grid_to_json(grid: Grid) -> list:
    return [[name, list(values)] for name, values in grid]


def grid_from_json(data) -> Grid:
    return tuple((str(name), tuple(values)) for name, values in data or ())


__all__ = ["HYPER", "Grid", "Row", "SweepError", "check_grid", "expand", "parse_values"]
