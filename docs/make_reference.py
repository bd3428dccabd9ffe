"""Render the flag tables of docs/reference.md from the declarations in the code.

    python docs/make_reference.py            # rewrite the block between the FLAGS markers
    python docs/make_reference.py --check    # exit 1 if the block is stale, 0 if current

The block between `<!-- FLAGS -->` and `<!-- /FLAGS -->` is generated; the rest of the page
is written by hand. Two tables:

- what a run computes, one row per field of `aes_rl.config.Config`;
- how a run is driven, one row per field of `aes_rl.flags.RunFlags`.

What this script reads, so that a refactor of the config knows what to keep (everything else
in those modules may change freely):

- `dataclasses.fields(aes_rl.config.Config)`: each field's name, type (a string under
  `from __future__ import annotations`, else a type) and default;
- `aes_rl.config.FIELDS[name].help`, `.choices` and `.range_text()`: meaning and allowed values
  (a field missing from FIELDS, or a spec without `range_text`, gets an empty cell);
- `aes_rl.config.HYPER` (traced, sweepable fields) and `aes_rl.config.STRUCTURAL` (fields a
  continued run may not change), as collections of field names (absent: no field marked);
- `aes_rl.config.preset_default_text(name)`: the default across the authors' presets (absent:
  the dataclass default);
- `dataclasses.fields(aes_rl.flags.RunFlags)` and the attribute docstrings in its source (the
  strings tyro shows as help).

Run it with the package importable (`pip install -e .`, or `PYTHONPATH=src`).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import sys
import textwrap
from pathlib import Path

REFERENCE = Path(__file__).resolve().with_name("reference.md")
START, END = "<!-- FLAGS -->", "<!-- /FLAGS -->"
# Config fields with no command-line form, and those whose default is the CLI's, not a preset's.
NO_FLAG = {"env_kwargs"}
CLI_DEFAULT = {"algo", "env"}


def _cell(text: object) -> str:
    """Text for one markdown table cell: one line, no column breaks, no stray emphasis."""
    out = " ".join(str(text).split())
    for ch in ("|", "*"):
        out = out.replace(ch, "\\" + ch)
    return out


def _type_name(f: dataclasses.Field) -> str:
    return f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))


def _flag(name: str, kind: str, pair: bool) -> str:
    flag = "--" + name.replace("_", "-")
    if kind == "bool":
        return f"`{flag}` / `--no-{flag[2:]}`" if pair else f"`{flag}`"
    return f"`{flag}`"


def _value(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    return "unset" if value is None else str(value)


def config_rows() -> list[str]:
    """One table row per Config field: flag, meaning, allowed values, preset default, marks."""
    from aes_rl import config

    specs = getattr(config, "FIELDS", {})
    traced = set(getattr(config, "HYPER", ()))
    fixed = set(getattr(config, "STRUCTURAL", ()))
    preset_text = getattr(config, "preset_default_text", None)
    rows = [
        "| flag | meaning | read by | allowed | default (the presets) | traced (sweepable) "
        "| fixed when continued |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in dataclasses.fields(config.Config):
        if f.name in NO_FLAG:
            continue
        spec = specs.get(f.name)
        kind = _type_name(f)
        choices = getattr(spec, "choices", None)
        allowed = spec.range_text() if hasattr(spec, "range_text") else ""
        if kind == "bool":
            allowed = "a flag"
        elif kind == "str" and choices is None:
            allowed = "a string"
        elif kind.startswith("tuple"):
            allowed = f"one or more, each {allowed}".strip()
        if f.name in CLI_DEFAULT or preset_text is None:
            default = _value(f.default)
        else:
            default = preset_text(f.name)
        sweep = ""
        if f.name in traced:
            sweep = "yes, or `all`" if choices else "yes"
        owner = getattr(spec, "owner", "") or "shared"
        text = [_cell(t) for t in (getattr(spec, "help", ""), owner, allowed, default)]
        cells = [_flag(f.name, kind, pair=True), *text, sweep, "yes" if f.name in fixed else ""]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _attribute_docs(cls: type) -> dict[str, str]:
    """The docstring under each annotated attribute of a class (what tyro shows as help)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for stmt, after in zip(body, body[1:]):
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[stmt.target.id] = after.value.value
    return docs


def run_flag_rows() -> list[str]:
    """One table row per RunFlags field: flag, default, meaning."""
    from aes_rl.flags import RunFlags

    docs = _attribute_docs(RunFlags)
    rows = ["| flag | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(RunFlags):
        kind = "bool" if isinstance(f.default, bool) else _type_name(f)
        meaning = _cell(docs.get(f.name, ""))
        cells = [_flag(f.name, kind, pair=False), _cell(_value(f.default)), meaning]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def block() -> str:
    """The generated text between the markers (markers excluded)."""
    lines = [
        "<!-- Generated by docs/make_reference.py from aes_rl.config and aes_rl.flags.RunFlags;"
        " edit those, then run it. -->",
        "",
        "What a run computes: every field of `aes_rl.config.Config` (`aes_rl.config.FIELDS`),"
        " the same flag in `train`, `sweep`, the experiment modules and the benchmarks.",
        "",
        *config_rows(),
        "",
        "How a run is driven (`aes_rl.flags.RunFlags`; `train`, `sweep` and the experiment"
        " modules):",
        "",
        *run_flag_rows(),
    ]
    return "\n".join(lines)


def render(text: str) -> str:
    """`text` with the block between the FLAGS markers replaced by the generated one."""
    i, j = text.find(START), text.find(END)
    if i < 0 or j < i:
        raise ValueError(f"no {START} ... {END} block")
    return text[: i + len(START)] + "\n" + block() + "\n" + text[j:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    parser.add_argument("path", nargs="?", type=Path, default=REFERENCE)
    args = parser.parse_args(argv)
    text = args.path.read_text()
    try:
        new = render(text)
    except ValueError as err:
        print(f"{args.path}: {err}", file=sys.stderr)
        return 2
    if args.check:
        if new != text:
            print(
                f"{args.path}: the flag tables are stale; run python docs/make_reference.py",
                file=sys.stderr,
            )
            return 1
        return 0
    if new != text:
        args.path.write_text(new)
        print(f"{args.path}: flag tables rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
