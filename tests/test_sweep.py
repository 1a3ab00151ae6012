"""`rollax sweep` end to end on a tiny budget: every combination x seed trained, numbers side by
side in one program, each run equal to the same combination trained on its own by `rollax
train` (the plain program, no swept numbers), one run folder per combination with its values in
config.json and TensorBoard's HPARAMS, the table, sweep.json and sweep.png; bad grids named."""

import contextlib
import io
import json
from pathlib import Path

import jax
import matplotlib.image
import numpy as np
import pytest
from flax import nnx
from readback import hparams_plugin_data, train_metrics

from rollax import SweepResult, TrainResult, load_agent, load_experiment, sweep, train
from rollax.cli import main
from rollax.sweeps import parse_grid, traced_keys

TINY = ["budget.total_steps=128", "budget.num_envs=4", "budget.num_steps=16",
        "budget.iterations_per_chunk=1", "agent.config.num_minibatches=2",
        "agent.network.hidden_sizes=[16]", "eval.episodes=2"]
GRID = {"agent.optimizer.learning_rate": [1e-3, 3e-3], "agent.config.clip_param": [0.1, 0.3],
        "agent.config.num_epochs": [1, 2]}


def tiny(root, *extra: str):
    return load_experiment("cartpole_ppo", [*TINY, f"logging.root='{root}'", *extra], seeds=2)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """`rollax sweep` of 2 x 2 x 2 combinations x 2 seeds; its folder and what it printed."""
    root = tmp_path_factory.mktemp("sweep")
    grids = [f"--grid={key}={','.join(map(str, values))}" for key, values in GRID.items()]
    sets = [arg for setting in [*TINY, f"logging.root='{root}'"] for arg in ("--set", setting)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["sweep", "cartpole_ppo", *grids, "--seeds", "2", "--quiet", *sets])
    printed = out.getvalue()
    assert code == 0, printed
    return Path(printed.split("sweep written to ")[1].split()[0]), printed


def folder(values: dict) -> str:
    return ",".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in values.items())


def test_numbers_share_a_program_and_each_combination_gets_a_run_folder(swept):
    sweep_dir, printed = swept
    # num_epochs changes the update's loop: one program per value; the rest side by side
    assert "8 combinations x 2 seed(s) = 16 runs in 2 compiled program(s)" in printed
    summary = json.loads((sweep_dir / "sweep.json").read_text())
    assert summary["programs"] == 2 and summary["keys"] == list(GRID)
    rows = summary["combinations"]
    assert [row["values"] for row in rows] == [
        dict(zip(GRID, values)) for values in
        [(lr, clip, epochs) for lr in (1e-3, 3e-3) for clip in (0.1, 0.3) for epochs in (1, 2)]]
    for row in rows:
        run = sweep_dir / row["folder"]
        assert row["folder"] == folder(row["values"])
        assert sorted(p.name for p in run.glob("seed_*")) == ["seed_0", "seed_1"]
        config = json.loads((run / "seed_1" / "config.json").read_text())
        assert config["agent"]["optimizer"]["learning_rate"] == row["values"]["agent.optimizer.learning_rate"]
        assert config["agent"]["config"]["clip_param"] == row["values"]["agent.config.clip_param"]
        results = json.loads((run / "results.json").read_text())
        assert results["seeds"] == [0, 1] and results["eval_mean_return"] == row["eval_mean_return"]
        printed_row = f"{row['values']['agent.config.clip_param']:>10}"
        assert printed_row in printed
    assert matplotlib.image.imread(sweep_dir / "sweep.png").shape[0] > 100
    assert (sweep_dir / "learning_curves.png").exists()


def test_tensorboard_hparams_show_each_runs_values(swept):
    sweep_dir, _ = swept
    run = sweep_dir / "learning_rate=0.003,clip_param=0.1,num_epochs=2" / "seed_1"
    values = hparams_plugin_data(run)["_hparams_/session_start_info"].session_start_info.hparams
    assert values["agent.optimizer.learning_rate"].number_value == pytest.approx(3e-3)
    assert values["agent.config.clip_param"].number_value == pytest.approx(0.1)
    assert values["agent.config.num_epochs"].number_value == 2
    assert values["seed"].number_value == 1


@pytest.mark.parametrize("values", [{"lr": 3e-3, "clip": 0.3, "epochs": 1},
                                    {"lr": 1e-3, "clip": 0.1, "epochs": 2}])
def test_each_run_equals_its_combination_trained_alone(swept, values, tmp_path):
    """The reference is `rollax.train` of the combination: the plain program, its learning rate
    and clip range as constants. Same metrics at every step, same parameters at the end."""
    sweep_dir, _ = swept
    combination = {"agent.optimizer.learning_rate": values["lr"],
                   "agent.config.clip_param": values["clip"], "agent.config.num_epochs": values["epochs"]}
    alone = train(tiny(tmp_path, *(f"{k}={v}" for k, v in combination.items())), progress=False)
    run = sweep_dir / folder(combination)
    for seed in (0, 1):
        mine, theirs = train_metrics(run, seed), train_metrics(alone.run_dir, seed)
        assert mine.keys() == theirs.keys() and len(mine) == 2
        for step in theirs:
            assert theirs[step]["train/learning_rate"] < values["lr"]  # annealed from it
            for name, value in theirs[step].items():
                assert mine[step][name] == pytest.approx(value, rel=1e-3, abs=1e-5), (seed, step, name)
        ours, reference = (jax.tree.leaves(nnx.state(load_agent(r, seed=seed).model, nnx.Param))
                           for r in (run, alone.run_dir))
        for a, b in zip(ours, reference, strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_a_stopped_sweep_resumes_to_what_the_uninterrupted_one_logged(swept, tmp_path):
    """Each program stops after its first iteration with a checkpoint; `--resume` continues
    both; every logged metric then equals the uninterrupted sweep's (the module fixture), with
    no record written twice."""
    # the module fixture's grid, so its two programs come from the compilation cache
    stopped = sweep(tiny(tmp_path), GRID, stop_at_step=64, progress=False)
    assert stopped.programs == 2 and [r.env_steps for r in stopped.results] == [64] * 8
    assert len(list(stopped.folder.glob("program_*/checkpoints/64"))) == 2
    assert main(["sweep", "--resume", str(stopped.folder), "--quiet"]) == 0
    resumed = sweep(resume=stopped.folder, progress=False)  # all finished: read back
    assert [r.env_steps for r in resumed.results] == [128] * 8
    assert [r.start_step for r in resumed.results] == [64] * 8  # continued, not started again
    for label in resumed.labels:
        for seed in (0, 1):
            records = (stopped.folder / label / f"seed_{seed}" / "metrics.jsonl").read_text()
            assert records.count('"train/loss"') == 2  # steps 64 and 128, once each
            mine, theirs = (train_metrics(folder / label, seed) for folder in (stopped.folder, swept[0]))
            assert mine.keys() == theirs.keys()
            for step in theirs:
                for name, value in theirs[step].items():
                    assert mine[step][name] == pytest.approx(value, rel=1e-3, abs=1e-5), (label, seed, step, name)
    uninterrupted = json.loads((swept[0] / "sweep.json").read_text())["combinations"]
    finals = {row["folder"]: row["eval_mean_return"] for row in uninterrupted}
    for label, returns in zip(resumed.labels, resumed.final_returns()):
        np.testing.assert_allclose(returns, finals[label], rtol=1e-3)


def test_a_gymnasium_env_sweeps_one_program_per_combination(tmp_path):
    """Host-stepped envs take no per-run numbers: each learning rate is its own program, and
    each combination still gets its folder and its own config."""
    experiment = load_experiment("gymnasium_cartpole_ppo", [
        "budget.total_steps=64", "budget.num_envs=2", "budget.num_steps=16", "eval.episodes=1",
        "agent.config.num_minibatches=2", "agent.network.hidden_sizes=[8]",
        f"logging.root='{tmp_path}'"])
    result = sweep(experiment, {"agent.optimizer.learning_rate": [1e-3, 3e-3]}, progress=False)
    assert result.programs == 2 and result.final_returns().shape == (2, 1)
    for label, rate in zip(result.labels, (1e-3, 3e-3)):
        config = json.loads((result.folder / label / "seed_0" / "config.json").read_text())
        assert config["agent"]["optimizer"]["learning_rate"] == rate
        assert train_metrics(result.folder / label, 0)[64]["train/learning_rate"] < rate  # annealed


def test_resume_takes_nothing_but_the_folder(tmp_path, capsys):
    assert main(["sweep", "cartpole_ppo", "--resume", str(tmp_path), "--grid", "seed=1,2"]) == 2
    assert "drop EXPERIMENT, --grid" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="has no sweep.json"):
        sweep(resume=tmp_path)


def test_a_number_that_decides_the_programs_structure_is_not_traced(tmp_path):
    """PPO computes reference log-probs only when kl_coeff > 0, so the field is declared static:
    its values need a program each, while the entropy coefficient stays a per-run number."""
    experiment = tiny(tmp_path)
    keys = ["agent.config.kl_coeff", "agent.config.entropy_coeff"]
    combos = [dict.fromkeys(keys, value) for value in (0.0, 0.1)]
    assert traced_keys(experiment, keys, combos) == ("agent.config.entropy_coeff",)


def test_the_table_adds_env_metrics_as_mean_and_std_over_seeds():
    def result(returns, metric):
        return TrainResult(name="x", run_dir=None, seeds=[0, 1], eval_returns=np.asarray(returns)[:, None],
                           eval_metrics={"judge": np.asarray(metric)}, ep_rew_mean=[0.0, 0.0],
                           env_steps=1, compile_seconds=0.0, train_seconds=0.0, solved_threshold=None)

    outcome = SweepResult(keys=["agent.config.clip_param"], values=[{"agent.config.clip_param": 0.1},
                                                                    {"agent.config.clip_param": 0.2}],
                          labels=["a", "b"], experiments=[], results=[result([1.0, 3.0], [0.5, 1.0]),
                                                                      result([4.0, 4.0], [0.0, 0.0])],
                          folder=None, programs=1, seconds=1.0)
    lines = outcome.table(["eval/judge"]).splitlines()
    assert lines[0].split() == ["clip_param", "eval", "return", "±", "std", "worst", "judge"]
    assert lines[1].split() == ["0.1", "2.00", "1.00", "1.00", "0.750", "±", "0.250"]
    assert lines[2].split() == ["0.2", "4.00", "0.00", "4.00", "0.000", "±", "0.000"]
    with pytest.raises(ValueError, match=r"'eval/judges' is not an evaluation metric.*\['eval/judge'\]"):
        outcome.table(["eval/judges"])


def test_an_unknown_metric_is_named_before_anything_runs(capsys, tmp_path):
    code = main(["sweep", "cartpole_ppo", "--grid", "agent.config.clip_param=0.1,0.2",
                 "--metric", "eval/judge_success", "--set", f"logging.root='{tmp_path}'"])
    assert code == 2
    assert "'eval/judge_success' is not an evaluation metric of CartPole-v1" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_grid_values_are_read_as_toml_literals():
    assert parse_grid(["agent.optimizer.learning_rate=1e-4, 3e-4", "agent.optimizer.name=adam,sgd",
                       "agent.network.hidden_sizes=[16],[32, 32]"]) == {
        "agent.optimizer.learning_rate": [1e-4, 3e-4], "agent.optimizer.name": ["adam", "sgd"],
        "agent.network.hidden_sizes": [[16], [32, 32]]}


@pytest.mark.parametrize("grid, message", [
    ({}, r"at least one --grid"),
    ({"agent.config.clip_parm": [0.1, 0.2]}, r"clip_parm"),
    ({"agent.optimizer.learning_rate": [1e-3, -1.0]}, r"learning_rate=-1.0: .*learning_rate"),
    ({"agent.config.clip_param": []}, r"clip_param: expected a non-empty list"),
    ({"agent.optimizer.name": "adam"}, r"name: expected a non-empty list of values, got 'adam'"),
    ([("agent.config.clip_param", [0.1])], r"the grid must map keys to lists"),
    ({"agent.config.clip_param": [0.1, 0.1]}, r"clip_param: a value is listed twice"),
    ({"seed": [1, 2]}, r"--grid seed: 'seed' is not swept \(--seeds"),
    ({"logging.root": ["a", "b"]}, r"'logging' is not swept"),
])
def test_bad_grids_are_named_before_anything_runs(grid, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        sweep(tiny(tmp_path), grid)
    assert list(tmp_path.iterdir()) == []


def test_cli_names_a_bad_grid_and_exits_2(capsys, tmp_path):
    code = main(["sweep", "cartpole_ppo", "--grid", "agent.config.clip_param", "--set",
                 f"logging.root='{tmp_path}'"])
    assert code == 2
    assert "rollax sweep: error: " in capsys.readouterr().err
    with pytest.raises(ValueError, match="given twice"):
        parse_grid(["agent.config.clip_param=0.1", "agent.config.clip_param=0.2"])


def test_gamma_is_a_program_per_value_when_it_also_discounts_the_reward_scaler(tmp_path):
    keys = ["agent.config.gamma", "agent.config.clip_param"]
    combos = [dict.fromkeys(keys, value) for value in (0.9, 0.2)]
    assert traced_keys(tiny(tmp_path), keys, combos) == tuple(keys)
    normalised = tiny(tmp_path, "env.normalize_rewards=true")
    assert traced_keys(normalised, keys, combos) == ("agent.config.clip_param",)
