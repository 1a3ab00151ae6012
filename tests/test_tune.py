"""`rollax tune` end to end on a tiny budget: Optuna's asked trials train in batches, numbers side
by side in one program; each trial's value in the study is its runs' final evaluation as their
own results.json holds it; best.toml reads back as the best trial; the plots are written; a
search killed with trials running resumes without losing or repeating a finished trial; the
pruner's verdicts stop a program; bad spaces, metrics and storages are named."""

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from rollax import load_experiment, tune
from rollax.cli import main
from rollax.logging.callbacks import Evaluation
from rollax.sweeps import experiment_with
from rollax.tuning import TuneSettings, _Batch, _Reporter, distributions, parse_space, resume_tune

TINY = ["budget.total_steps=256", "budget.num_envs=4", "budget.num_steps=16",
        "budget.iterations_per_chunk=1", "agent.config.num_minibatches=2",
        "agent.network.hidden_sizes=[16]", "eval.episodes=2", "eval.every_steps=128"]
PARAMS = ["agent.optimizer.learning_rate=log:1e-4:1e-2", "agent.config.clip_param=float:0.1:0.3"]
SEARCH = {"agent.optimizer.learning_rate": "log:1e-4:3e-3", "agent.config.clip_param": "float:0.1:0.3",
          "agent.config.gae_lambda": "float:0.8:0.99"}


def tiny(root, *extra: str):
    return load_experiment("cartpole_ppo", [*TINY, f"logging.root='{root}'", *extra], seeds=2)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """`rollax tune` of 4 trials in batches of 2 x 2 seeds over the preset's [search] space;
    its folder and what it printed."""
    root = tmp_path_factory.mktemp("tune")
    sets = [arg for setting in [*TINY, f"logging.root='{root}'"] for arg in ("--set", setting)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["tune", "cartpole_ppo", "--trials", "4", "--batch", "2", "--seeds", "2",
                     "--quiet", *sets])
    printed = out.getvalue()
    assert code == 0, printed
    return Path(printed.split("search written to ")[1].split()[0]), printed


def load_study(folder: Path):
    return optuna.load_study(study_name="rollax", storage=f"sqlite:///{folder / 'study.db'}")


def test_each_trials_value_is_its_runs_final_evaluation(searched):
    folder, printed = searched
    study = load_study(folder)  # Optuna's own reader: the study outlives the process
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 4 and len({tuple(t.params.values()) for t in trials}) == 4
    assert "4 complete and 0 pruned trial(s) x 2 seed(s); this call: 2 compiled program(s)" in printed
    for trial in trials:
        results = json.loads((folder / f"trial_{trial.number}" / "results.json").read_text())
        assert results["seeds"] == [0, 1]
        assert trial.value == pytest.approx(np.mean(results["eval_mean_return"]))
        config = json.loads((folder / f"trial_{trial.number}" / "seed_0" / "config.json").read_text())
        assert set(trial.params) == set(SEARCH)  # the preset's [search] table
        assert config["agent"]["optimizer"]["learning_rate"] == trial.params["agent.optimizer.learning_rate"]
        assert config["agent"]["config"]["clip_param"] == trial.params["agent.config.clip_param"]
        assert config["agent"]["config"]["gae_lambda"] == trial.params["agent.config.gae_lambda"]
        assert 1e-4 <= trial.params["agent.optimizer.learning_rate"] <= 3e-3
        # every periodic evaluation was reported: 128 and 256 env steps
        assert sorted(trial.intermediate_values) == [128]


def test_best_preset_reads_back_as_the_best_trial_and_the_plots_are_written(searched):
    folder, _ = searched
    best = load_study(folder).best_trial
    experiment = load_experiment(folder / "best.toml")
    assert experiment.agent.optimizer.learning_rate == best.params["agent.optimizer.learning_rate"]
    assert experiment.agent.config.clip_param == best.params["agent.config.clip_param"]
    assert experiment.budget.total_steps == 256 and experiment.seeds == 2
    assert experiment.logging.root == "runs"  # where the new run goes is the user's
    for name in ("optimization_history.png", "param_importances.png"):
        assert (folder / name).stat().st_size > 10_000


def test_a_search_left_with_running_trials_asks_them_again_and_keeps_the_finished(searched, tmp_path):
    folder, _ = searched
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(folder), str(copy)], check=True)
    study = load_study(copy)
    finished = {t.number: t.params for t in study.trials}
    interrupted = study.ask(distributions(SEARCH))  # what a killed search leaves: a running trial
    (copy / f"trial_{interrupted.number}").mkdir()  # and its partial folder
    settings = json.loads((copy / "tune.json").read_text())
    settings["settings"]["trials"] = 5
    (copy / "tune.json").write_text(json.dumps(settings))
    resume_tune(copy, progress=False)
    after = load_study(copy).trials
    assert {t.number: t.params for t in after if t.number in finished} == finished
    assert after[interrupted.number].state == TrialState.FAIL
    rerun = [t for t in after if t.number > interrupted.number]
    assert len(rerun) == 1 and rerun[0].state == TrialState.COMPLETE
    assert rerun[0].params == interrupted.params
    assert (copy / f"trial_{rerun[0].number}" / "results.json").is_file()
    assert not (copy / f"trial_{interrupted.number}").exists()


def test_the_reporter_asks_for_a_stop_once_the_pruner_prunes_a_trial():
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(lower=100.0),
                                direction="maximize")
    trials = [study.ask() for _ in range(2)]
    reporter = _Reporter(trials, 2, TuneSettings(space={"agent.config.clip_param": "float:0.1:0.3"}))
    returns = np.array([[150.0, 150.0], [140.0, 160.0], [20.0, 40.0], [30.0, 30.0]])
    reporter.on_evaluation(None, Evaluation(step=64, returns=returns, metrics={}))
    assert reporter.pruned == [False, True] and reporter.should_stop
    assert study.trials[0].intermediate_values == {64: 150.0}
    assert study.trials[1].intermediate_values == {64: 30.0}
    returns[:2] = 10.0
    reporter.on_evaluation(None, Evaluation(step=128, returns=returns, metrics={}))
    assert reporter.pruned == [True, True]
    assert study.trials[1].intermediate_values == {64: 30.0}  # a pruned trial reports no more


def batch_of_two(root, pruner):
    """Two asked trials of a search with `pruner`, trained side by side by `_Batch`."""
    settings = TuneSettings(space=parse_space(PARAMS))
    experiment = tiny(root, "budget.total_steps=256")
    study = optuna.create_study(pruner=pruner, direction="maximize")
    for values in ({"agent.optimizer.learning_rate": 3e-3, "agent.config.clip_param": 0.2},
                   {"agent.optimizer.learning_rate": 1e-4, "agent.config.clip_param": 0.1}):
        study.enqueue_trial(values)
    trials = [study.ask(distributions(settings.space)) for _ in range(2)]
    combos = [dict(trial.params) for trial in trials]
    experiments = [experiment_with(experiment, combo, "trial") for combo in combos]
    folder = root / "search"
    folder.mkdir(parents=True)
    batch = _Batch(study, settings, folder, trials, combos, experiments, progress=False)
    programs = batch.train([0, 1], tuple(settings.space))
    return study, folder, programs


def learning_records(seed_dir):
    """metrics.jsonl without its wall-clock figures (`time/*`)."""
    records = [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")}
               for line in (seed_dir / "metrics.jsonl").read_text().splitlines()]
    return [record for record in records if len(record) > 1]


def test_a_pruned_trial_leaves_the_program_and_the_other_trains_on_as_if_alone(tmp_path):
    """Pruned at the first evaluation (128 steps of 256), the second trial's slot is dropped:
    the first continues in a program of its own from that chunk's checkpoint and ends exactly
    where it ends beside an unpruned second trial."""

    class PruneTheSecond(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return trial.number == 1

    pruned_study, pruned_folder, programs = batch_of_two(tmp_path / "a", PruneTheSecond())
    full_study, full_folder, _ = batch_of_two(tmp_path / "b", optuna.pruners.NopPruner())
    assert programs == 2 and not list(pruned_folder.glob("program_*"))
    assert [t.state for t in pruned_study.trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert pruned_study.trials[0].value == full_study.trials[0].value
    ours, alone = (learning_records(folder / "trial_0" / "seed_1") for folder in (pruned_folder, full_folder))
    assert ours == alone and max(record["step"] for record in ours) == 256
    stopped = [json.loads(line)["step"] for line in
               (pruned_folder / "trial_1" / "seed_0" / "metrics.jsonl").read_text().splitlines()]
    assert max(stopped) == 128  # the pruned trial trained no further


@pytest.mark.parametrize(("params", "message"), [
    (["agent.optimizer.learning_rate=log:0:1e-2"], "a log range must stay above 0"),
    (["agent.optimizer.learning_rate=float:0.1:0.1"], "low must be below high"),
    (["agent.config.num_epochs=int:5:2"], "low must be below high"),
    (["agent.config.clip_param=uniform:0.1:0.3"], "expected log:LOW:HIGH"),
    (["agent.config.clip_param=float:a:0.3"], "the bounds must be float numbers"),
    (["agent.config.clip_param=float:0.1:0.3", "agent.config.clip_param=float:0.2:0.3"],
     "given twice"),
    (["seeds=int:1:4"], "not a searchable key"),
    ([], "at least one --param"),
])
def test_bad_spaces_are_named(params, message):
    with pytest.raises(ValueError, match=message):
        parse_space(params)


@pytest.mark.parametrize(("space", "settings", "message"), [
    ({"agent.config.no_such_key": "float:0.1:0.3"}, {}, "no_such_key"),
    ({"agent.config.clip_param": "float:0.1:0.3"}, {"metric": "eval/no_such_metric"},
     "'eval/no_such_metric' is not an evaluation metric"),
    ({"agent.config.clip_param": "float:0.1:0.3"}, {"metric": "train/loss"},
     "must be an evaluation metric"),
    ({"agent.config.clip_param": "float:0.1:0.3"}, {"trials": 0}, "trials must be an integer >= 1"),
    ({"agent.config.clip_param": "float:-1:0.3"}, {}, "clip_param"),
])
def test_bad_searches_are_named_before_anything_is_written(tmp_path, space, settings, message):
    with pytest.raises(ValueError, match=message):
        tune(tiny(tmp_path), space, progress=False, **settings)
    assert not (tmp_path / "cartpole_ppo").exists()


def test_a_preset_without_a_search_table_needs_a_space_and_a_bad_table_is_named(tmp_path):
    assert load_experiment("cartpole_ppo").search == SEARCH
    with pytest.raises(ValueError, match=r"at least one --param KEY=SPEC .* or a \[search\] table"):
        tune(load_experiment("acrobot_ppo", [f"logging.root='{tmp_path}'"]), progress=False)
    with pytest.raises(ValueError, match="search.agent.config.clip_param must be a range"):
        load_experiment("cartpole_ppo", ["search={'agent.config.clip_param' = 0.2}"])


def test_a_storage_that_cannot_be_opened_is_named(tmp_path):
    url = f"sqlite:///{tmp_path}/no/such/folder/study.db"
    with pytest.raises(ValueError, match="storage='sqlite:///.*' cannot be opened"):
        tune(tiny(tmp_path), {"agent.config.clip_param": "float:0.1:0.3"}, progress=False,
             storage=url, trials=1)
    assert not (tmp_path / "cartpole_ppo").exists()  # refused before the tune folder is made


@pytest.mark.slow
def test_a_killed_search_resumes_with_no_trial_lost_or_repeated(tmp_path):
    """SIGKILL `rollax tune` once its first batch is told, mid-way through the second; resume."""
    sets = [arg for setting in [*TINY, "budget.total_steps=2048", f"logging.root='{tmp_path}'"]
            for arg in ("--set", setting)]
    params = [arg for param in PARAMS for arg in ("--param", param)]
    process = subprocess.Popen([sys.executable, "-m", "rollax", "tune", "cartpole_ppo", *params,
                                "--trials", "6", "--batch", "2", "--seeds", "2", "--quiet", *sets],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, folder = time.monotonic() + 300, None
    while time.monotonic() < deadline and process.poll() is None:
        found = list((tmp_path / "cartpole_ppo").glob("*_tune/study.db"))
        if found:
            folder = found[0].parent
            states = [t.state for t in load_study(folder).trials]
            if states.count(TrialState.COMPLETE) >= 2 and TrialState.RUNNING in states:
                break
        time.sleep(0.5)
    assert process.poll() is None, "the search ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    before = {t.number: (t.state, t.params, t.value) for t in load_study(folder).trials}
    resumed = resume_tune(folder, progress=False)
    after = load_study(folder).trials
    finished = [t for t in after if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 6 == len(resumed.finished)
    for number, (state, params, value) in before.items():  # nothing finished is lost or redone
        if state == TrialState.COMPLETE:
            assert (after[number].state, after[number].params, after[number].value) == (state, params, value)
        elif state == TrialState.RUNNING:  # failed, and its values asked again
            assert after[number].state == TrialState.FAIL
            assert [t.params for t in finished].count(params) == 1
    assert len({tuple(t.params.values()) for t in finished}) == 6
