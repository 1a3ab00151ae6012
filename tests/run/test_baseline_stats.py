"""`rollax baselines` aggregates: the interquartile mean and its bootstrap interval, checked
against plain Python/NumPy loops."""

import numpy as np
import pytest

from rollax.run.baselines import BaselineRow, baseline_table, interquartile_mean, iqm_interval


def _iqm_by_hand(scores):
    """Sort, drop a quarter (rounded down) from each end, average the rest."""
    ordered = sorted(scores)
    cut = len(ordered) // 4
    middle = ordered[cut:len(ordered) - cut]
    return sum(middle) / len(middle)


@pytest.mark.parametrize("scores", [[500, 500, 500, 208, 500], list(range(10)), [3.0, -1.0, 7.5, 2.0],
                                    [9.0, 1.0, 4.0, 4.0, 2.0, 8.0, 7.0, 3.0]])
def test_iqm_is_the_mean_of_the_middle_half(scores):
    assert interquartile_mean(np.array(scores, dtype=float)) == pytest.approx(_iqm_by_hand(scores))


def test_iqm_interval_matches_a_plain_percentile_bootstrap():
    scores = np.array([500.0, 208.0, 500.0, 431.0, 476.0, 122.0, 500.0, 499.0, 350.0, 500.0])
    rng = np.random.default_rng(1)
    resampled = [_iqm_by_hand(rng.choice(scores, size=scores.size)) for _ in range(20_000)]
    low, high = np.percentile(resampled, [2.5, 97.5])
    got_low, got_high = iqm_interval(scores)
    spread = scores.max() - scores.min()
    assert abs(got_low - low) < 0.03 * spread and abs(got_high - high) < 0.03 * spread
    assert got_low <= interquartile_mean(scores) <= got_high


def test_iqm_interval_of_identical_scores_is_a_point():
    assert iqm_interval(np.full(5, 500.0)) == (500.0, 500.0)


def test_table_shows_iqm_interval_and_solved_count():
    row = BaselineRow("cartpole_ppo", "CartPole-v1", np.array([500.0, 500.0, 500.0, 208.0, 500.0]),
                      475.0, 60.0)
    line = baseline_table([row]).splitlines()[1]
    low, high = iqm_interval(row.means)
    assert f"500.0 [{low:.1f}, {high:.1f}]" in line and "4/5" in line and line.endswith("PASS")


def test_table_columns_line_up_for_long_names():
    rows = [BaselineRow("mountaincar_continuous_ppo", "MountainCarContinuous-v0", np.full(3, 94.0),
                        75.0, 10.0),
            BaselineRow("cartpole_ppo", "CartPole-v1", np.full(3, 500.0), 475.0, 30.0)]
    lines = baseline_table(rows).splitlines()
    starts = [line.index("PASS") for line in lines[1:]]
    assert starts[0] == starts[1] == lines[0].index("result")
