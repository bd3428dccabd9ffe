"""aes_rl.stats: rliable's aggregates on scores whose answers are known by hand."""

import numpy as np
import pytest

from aes_rl import stats


def test_iqm_mean_median_and_gap_by_hand():
    # 8 runs of one task. IQM trims 2 at each end: mean of 2, 3, 4, 5 = 3.5.
    x = np.array([100.0, 1, 2, 3, 4, 5, 6, -50])
    out = stats.aggregates({"a": x[:, None]}, gamma=4.0, reps=200)["a"]
    assert out["iqm"][0] == pytest.approx(3.5)
    assert out["mean"][0] == pytest.approx(71 / 8)
    assert out["median"][0] == pytest.approx(71 / 8)  # one task: median of task means
    # gap = 4 - mean(min(x, 4)) = 4 - (4 + 1 + 2 + 3 + 4 + 4 + 4 - 50) / 8
    assert out["optimality_gap"][0] == pytest.approx(4 - (-28) / 8)
    lo, hi = out["iqm"][1:]
    assert lo <= 3.5 <= hi and lo < hi


def test_identical_runs_give_a_point_interval_and_the_bootstrap_is_seeded():
    out = stats.aggregates({"c": np.full((5, 2), 7.0)}, reps=100)["c"]["iqm"]
    assert out == (7.0, 7.0, 7.0)
    x = {"a": np.arange(10.0)[:, None]}
    assert stats.aggregates(x, reps=300, seed=1) == stats.aggregates(x, reps=300, seed=1)


def test_probability_of_improvement_by_counting_pairs():
    x, y = np.array([[3.0], [4.0]]), np.array([[1.0], [3.5]])
    # pairs X > Y: (3>1), (4>1), (4>3.5); 3 vs 3.5 loses: 3 of 4
    p, lo, hi = stats.probability_of_improvement(x, y, reps=200)
    assert p == pytest.approx(0.75) and 0 <= lo <= p <= hi <= 1
    assert stats.probability_of_improvement(y, y, reps=50)[0] == 0.5


def test_profiles_count_runs_above_each_threshold():
    prof, ci = stats.performance_profiles({"a": np.array([1.0, 2, 3, 4])}, [0, 2.5, 5], reps=50)
    np.testing.assert_allclose(prof["a"], [1.0, 0.5, 0.0])
    assert ci["a"].shape == (2, 3)


def test_bad_scores_and_normalisation_are_refused():
    with pytest.raises(ValueError, match="scores: 'a'"):
        stats.aggregates({"a": np.array([1.0, np.nan])})
    with pytest.raises(ValueError, match="high must be > low"):
        stats.normalise([1.0], 5.0, 5.0)
    np.testing.assert_allclose(stats.normalise([0.0, 50.0], -50.0, 50.0), [0.5, 1.0])


def test_probability_and_profiles_are_seeded_and_leave_numpy_alone():
    x, y = np.arange(6.0)[:, None], np.arange(1.0, 7.0)[:, None]
    np.random.seed(5)
    before = np.random.get_state()[1].copy()
    a = stats.probability_of_improvement(x, y, reps=100, seed=2)
    assert a == stats.probability_of_improvement(x, y, reps=100, seed=2)
    p1 = stats.performance_profiles({"x": x}, [2.5], reps=100, seed=3)[1]["x"]
    np.testing.assert_array_equal(
        p1, stats.performance_profiles({"x": x}, [2.5], reps=100, seed=3)[1]["x"]
    )
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # the caller's stream
