"""The table of registered algorithms: name -> `aes_rl.algorithms.Algorithm`.

A leaf module (it imports nothing of aes_rl), so that every layer can read which algorithms
exist (config validation, the CLI's `--algo`, presets) without importing what builds them.
`aes_rl.algorithms` defines the record and registers the built-in ones; importing `aes_rl`
imports it, so the table is full before any config is made.
"""

from __future__ import annotations

from typing import Any

FAMILY_NAMES = ("async", "generation", "td3")  # the families of `aes_rl.families`
REGISTRY: dict[str, Any] = {}


def register(algorithm: Any, replace: bool = False) -> Any:
    """Add an algorithm (by its name) to the registry; `replace` to overwrite one."""
    if algorithm.family not in FAMILY_NAMES:
        raise ValueError(
            f"family: unknown {algorithm.family!r}; allowed: {', '.join(FAMILY_NAMES)}"
        )
    if algorithm.name in REGISTRY and not replace:
        raise ValueError(f"algo: {algorithm.name!r} is already registered")
    REGISTRY[algorithm.name] = algorithm
    return algorithm


def unregister(name: str) -> None:
    REGISTRY.pop(name, None)


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def get(name: str) -> Any:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"algo: unknown {name!r}; allowed: {', '.join(REGISTRY)}") from None
