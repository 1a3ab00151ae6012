"""Learning-curve plots from metrics.jsonl files written by the Logger."""

import matplotlib.figure
import numpy as np
import pytest
from matplotlib.image import imread

from rollax.logging import Logger
from rollax.logging.plot import aggregate_seeds, load_curve, plot_runs


def write_runs(root, experiment: str, slope: float, seeds: int = 3, folder="20250101-000000"):
    for seed in range(seeds):
        with Logger(root / experiment / folder / f"seed_{seed}") as logger:
            for step in range(0, 1000 + 100 * seed, 100):  # seeds cover different ranges
                value = slope * step / 100 + seed
                logger.log_scalars({"rollout/ep_rew_mean": value, "train/loss": 1.0}, step)
    return root / experiment


def test_plot_has_coloured_curves_and_bands(tmp_path):
    runs = [write_runs(tmp_path, "cartpole_ppo", 2.0), write_runs(tmp_path, "cartpole_pg", 0.5)]
    png = plot_runs(runs, tmp_path / "curves.png")
    assert png.stat().st_size > 1000
    image = imread(png)[..., :3]
    assert image.shape[0] > 100 and image.shape[1] > 100
    colours = np.unique((image * 255).round().astype(np.uint8).reshape(-1, 3), axis=0)
    chroma = colours.max(axis=1).astype(int) - colours.min(axis=1)
    assert (chroma > 60).sum() >= 4  # line colours and translucent bands, not only greys
    assert plot_runs(runs[0], tmp_path / "std.png", band="std").stat().st_size > 1000


def test_two_runs_of_one_experiment_are_two_labelled_curves(tmp_path, monkeypatch):
    write_runs(tmp_path, "cartpole_ppo", 2.0, seeds=3)
    write_runs(tmp_path, "cartpole_ppo", 0.5, seeds=2, folder="20250102-000000_lr=0.001")
    drawn = {}

    def record(figure, *args, **kwargs):  # what the PNG shows, read from the figure itself
        axes = figure.axes[0]
        drawn.update({text.get_text(): line.get_ydata()[-1] for text, line in
                      zip(axes.get_legend().get_texts(), axes.get_lines())})

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    plot_runs([tmp_path / "cartpole_ppo"], tmp_path / "two.png")
    # each run's mean over its own seeds at the last step all of them reach (step 900)
    assert drawn == {"cartpole_ppo/20250101-000000 (3 seeds)": 2.0 * 9 + 1.0,
                     "cartpole_ppo/20250102-000000_lr=0.001 (2 seeds)": 0.5 * 9 + 0.5}


def test_aggregate_matches_a_hand_computed_mean_and_band():
    curves = [(np.array([0, 10, 20]), np.array([0.0, 1.0, 2.0])),
              (np.array([0, 20, 30]), np.array([2.0, 4.0, 9.0]))]
    grid, mean, low, high = aggregate_seeds(curves)
    assert grid.tolist() == [0, 10, 20]  # 30 lies beyond the first seed's range
    second = [2.0, 3.0, 4.0]  # linear interpolation at step 10
    assert mean.tolist() == [(a + b) / 2 for a, b in zip([0.0, 1.0, 2.0], second)]
    assert low.tolist() == [0.0, 1.0, 2.0] and high.tolist() == second
    _, mean, low, high = aggregate_seeds(curves, band="std")
    np.testing.assert_allclose(high - mean, [1.0, 1.0, 1.0])


def test_load_curve_drops_non_finite_and_sorts(tmp_path):
    with Logger(tmp_path) as logger:
        logger.log_scalars({"m": 3.0}, 20)
        with pytest.warns(RuntimeWarning):
            logger.log_scalars({"m": float("nan")}, 30)
        logger.log_scalars({"m": 1.0}, 10)
    steps, values = load_curve(tmp_path / "metrics.jsonl", "m")
    assert steps.tolist() == [10, 20] and values.tolist() == [1.0, 3.0]


def test_plot_errors_name_the_problem(tmp_path):
    run = write_runs(tmp_path, "exp", 1.0, seeds=1)
    with pytest.raises(ValueError, match=r"'eval/mean_reward' not found.*'rollout/ep_rew_mean'"):
        plot_runs([run], tmp_path / "x.png", metric="eval/mean_reward")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plot_runs([tmp_path / "missing"], tmp_path / "y.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no seed_"):
        plot_runs([tmp_path / "empty"], tmp_path / "y.png")
