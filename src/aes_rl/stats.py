"""Aggregate statistics of RL runs with `rliable` (Agarwal et al., NeurIPS 2021), the field's
library for them: interquartile mean (IQM), mean, median and optimality gap with stratified
bootstrap 95% intervals, probability of improvement, performance profiles.

Scores are arrays [runs, tasks] per method (a run is a seed; a task an env, or one setting of
one env). Scores of different envs are on different scales: normalise them (`normalise`)
before aggregating over tasks. rliable is an optional dependency (`pip install -e '.[stats]'`,
included in `.[dev]`); the import is checked with a one-line error.

Every bootstrap here is seeded (`seed`), so a report made twice from the same runs is the same.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import numpy as np

REPS = 2000  # bootstrap replications: the intervals' last digit moves below 1% of their width


def _rliable():
    try:
        from rliable import library, metrics
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError(
            f"rliable is needed for aggregate statistics: pip install -e '.[stats]' ({err})"
        ) from None
    return library, metrics


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """rliable 1.2 draws its resamples from NumPy's global generator (its `random_state`
    argument does not reach them): seed that, and give the caller's state back after."""
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(saved)


def _check(scores: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for name, s in scores.items():
        s = np.asarray(s, dtype=np.float64)
        if s.ndim == 1:
            s = s[:, None]
        if s.ndim != 2 or s.shape[0] < 1 or not np.all(np.isfinite(s)):
            raise ValueError(f"scores: {name!r} must be a finite [runs, tasks] array, got {s}")
        out[name] = s
    return out


def aggregates(
    scores: Mapping[str, np.ndarray], gamma: float = 1.0, reps: int = REPS, seed: int = 0
) -> dict[str, dict[str, tuple[float, float, float]]]:
    """Per method: {"iqm", "mean", "median", "optimality_gap"} -> (point, low, high), the
    intervals 95% stratified-bootstrap percentile intervals over runs. `gamma` is the
    optimality gap's threshold (1 for normalised scores)."""
    library, metrics = _rliable()
    names = ("iqm", "mean", "median", "optimality_gap")

    def agg(x: np.ndarray) -> np.ndarray:
        return np.array(
            [
                metrics.aggregate_iqm(x),
                metrics.aggregate_mean(x),
                metrics.aggregate_median(x),
                metrics.aggregate_optimality_gap(x, gamma),
            ]
        )

    with _seeded(seed):
        point, interval = library.get_interval_estimates(_check(scores), agg, reps=reps)
    return {
        m: {
            n: (float(point[m][i]), float(interval[m][0, i]), float(interval[m][1, i]))
            for i, n in enumerate(names)
        }
        for m in point
    }


def probability_of_improvement(
    x: np.ndarray, y: np.ndarray, reps: int = REPS, seed: int = 0
) -> tuple[float, float, float]:
    """P(X > Y): the chance that a run of X on a task beats a run of Y on it (Mann-Whitney U
    statistic / (n_x n_y), averaged over tasks), with its 95% bootstrap interval."""
    library, metrics = _rliable()
    x, y = _check({"x": x, "y": y}).values()
    with _seeded(seed):
        point, interval = library.get_interval_estimates(
            {"p": [x, y]},
            lambda a, b: np.array([metrics.probability_of_improvement(a, b)]),
            reps=reps,
        )
    return float(point["p"][0]), float(interval["p"][0, 0]), float(interval["p"][1, 0])


def performance_profiles(
    scores: Mapping[str, np.ndarray], taus: np.ndarray, reps: int = REPS, seed: int = 0
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per method: the fraction of runs scoring above each tau (its score distribution), and
    [2, len(taus)] 95% intervals."""
    library, _ = _rliable()
    with _seeded(seed):
        return library.create_performance_profile(_check(scores), np.asarray(taus), reps=reps)


def normalise(scores: np.ndarray, low: float, high: float) -> np.ndarray:
    """(scores - low) / (high - low): 0 at `low` (e.g. a random policy), 1 at `high`."""
    if not high > low:
        raise ValueError(f"normalise: high must be > low, got low={low}, high={high}")
    return (np.asarray(scores, dtype=np.float64) - low) / (high - low)


def fmt(cell: tuple[float, float, float], digits: int = 0) -> str:
    """'412 [300, 688]'."""
    p, lo, hi = cell
    return f"{p:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
