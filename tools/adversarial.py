"""Bad inputs and faults, tried as a user would meet them; one table of what happened.

    python tools/adversarial.py            # a few minutes on 2 CPU cores
    python tools/adversarial.py trust      # only the second pass's classes (adversarial_trust.py)

Each case is classified as a clear error (a ValueError, or exit 1/2 with one `rollax ...:
error:` line naming the thing, argparse's usage line allowed), a handled case (a case that must
succeed, e.g. a plot past a torn line), a traceback (an uncaught exception, or a traceback on
stderr), a silent acceptance (no error where there must be one) or a hang (timeout). After each
kill -9 it counts the records lost: metrics.jsonl records TensorBoard does not show, and after
the resume, steps missing or duplicated in metrics.jsonl.

The cases come from lists: the bad preset values of tests/presets/test_preset_validation.py plus
every key of the shipped CartPole experiment crossed with values of the wrong kind (in-process
through `rollax.cli.main`, with training replaced by building the plan; a sample as real
subprocesses), the bad batches of tests/rl/test_batch_checks.py through the trainers'
`train_step`, bad calls on rollax's Gymnasium ids, bad command lines, damaged run folders, a full
disk (injected, and on a small tmpfs where this user may mount one), and kill -9 at several
points.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # tools/ -> the repository root
# the test modules whose cases and helpers this reuses, and their shared `readback` helpers
for folder in ("run", "rl", "presets", "rollout", ""):
    sys.path.insert(0, str(ROOT / "tests" / folder))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("ROLLAX_CACHE_DIR", str(Path(tempfile.gettempdir()) / "rollax-test-cache"))

import numpy as np

import rollax.run
from rollax.cli import main
from rollax.logging.logger import flatten_dotted

sys.path.insert(0, str(ROOT / "tools"))
from adversarial_trust import run_trust

RESULTS: dict[str, Counter] = defaultdict(Counter)
LOST: dict[str, int] = defaultdict(int)
PROBLEMS: list[str] = []
PRESET = ROOT / "experiments" / "cartpole_ppo.toml"


def record(category: str, name: str, outcome: str) -> None:
    RESULTS[category][outcome] += 1
    RESULTS[category]["cases"] += 1
    if outcome not in ("clear", "handled"):
        PROBLEMS.append(f"{category}: {outcome}: {name}")


def judge_cli(code: int | None, err: str, expect_error: bool) -> str:
    """The outcome of one command from its exit code and stderr."""
    if code is None or "Traceback" in err:
        return "traceback"
    if not expect_error:
        return "handled" if code == 0 else "traceback"
    if code == 0:
        return "silent"
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(
        ("WARNING:absl", "usage:", " ")) and "Warning" not in line]
    clear = code in (1, 2) and len(lines) == 1 and lines[0].startswith("rollax") and "error" in lines[0]
    return "clear" if clear else "traceback"


def cli(*argv: str) -> tuple[int | None, str, str]:
    """`rollax ARGV` in this process: (exit code, stdout, stderr); None for an escaped exception
    (its traceback is appended to stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            code = main(list(argv))
        except SystemExit as stop:  # argparse
            code = stop.code if isinstance(stop.code, int) else 2
        except BaseException as escaped:  # noqa: BLE001 - what the user would see
            import traceback

            traceback.print_exception(escaped, file=err)
            code = None
    return code, out.getvalue(), err.getvalue()


def try_cli(category: str, argv: list[str], expect_error: bool = True) -> None:
    code, _, err = cli(*argv)
    record(category, " ".join(argv), judge_cli(code, err, expect_error))


def try_call(category: str, name: str, call, expect_error: bool = True) -> None:
    """A Python call: a ValueError (or TypeError for a wrong kind of value, Gymnasium's own
    ResetNeeded for a step before reset) is a clear error."""
    from gymnasium.error import ResetNeeded

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            call()
        except (ValueError, TypeError, FileNotFoundError, ResetNeeded) as err:
            # JAX's own errors from inside a trace, not a message that names jax.random.key
            internal = any(word in str(err) for word in ("jax._src", "jaxlib", "Traced", "XLA",
                                                          "tracer", "Concretization"))
            record(category, name, "traceback" if internal or not expect_error else "clear")
            return
        except Exception:  # noqa: BLE001
            record(category, name, "traceback")
            return
    record(category, name, "silent" if expect_error else "handled")


# -- bad presets and command lines ------------------------------------------------------------
class Accepted(Exception):
    """Raised instead of training: the preset loaded and its plan was built."""


def plan_only(experiment, **kwargs):
    from rollax.run.plan import make_plan

    make_plan(experiment)
    raise Accepted


WRONG_KIND = {int: ["'x'", "1.5", "nan", "[1]", "true", "{a=1}"],
              float: ["'x'", "nan", "inf", "-inf", "[1.0]", "{a=1}"],
              bool: ["'yes'", "1", "nan", "[true]"],
              str: ["42", "[1]", "true", "{a=1}"],
              list: ["'x'", "5", "[1.5]", "[-1]", "[[1]]"]}  # [] is valid: no hidden layer, no tag


def preset_cases() -> list[str]:
    """The reported cases, then every scalar key of the experiment with values of the wrong kind."""
    import test_preset_validation as reported

    from rollax.presets import load_experiment

    cases = [c[0] for c in reported.test_bad_values_are_rejected_at_load_naming_key_and_value.pytestmark[0].args[1]]
    flat = flatten_dotted(load_experiment(PRESET).to_dict())
    for key, value in sorted(flat.items()):
        if key in ("logging.root", "name", "description") or value is None:
            continue  # any string is a valid root or name below the log root
        kind = list if isinstance(value, (list, tuple)) else type(value)
        cases += [f"{key}={bad}" for bad in WRONG_KIND.get(kind, [])]
    cases += [f"{table}.no_such_key=1" for table in ("budget", "eval", "logging", "agent.config",
                                                       "agent.optimizer", "agent.network", "env")]
    return cases


def run_presets(root: Path) -> None:
    cases = preset_cases()
    import rollax.api

    real_train, rollax.api.train = rollax.api.train, plan_only  # what the command line calls
    try:
        for case in cases:
            code, _, err = cli("train", str(PRESET), "--set", f"logging.root='{root}'",
                               "--set", case, "--quiet")
            if "Accepted" in err:  # the preset loaded and its plan was built
                code, err = 0, ""
            record("bad preset values (in-process)", case, judge_cli(code, err, True))
    finally:
        rollax.api.train = real_train
    for case in cases[:: max(1, len(cases) // 6)]:  # a sample as real commands
        record("bad preset values (subprocess)", case, subprocess_cli(
            ["train", str(PRESET), "--set", case, "--no-log", "--quiet"], timeout=120))


def subprocess_cli(argv: list[str], timeout: float, expect_error: bool = True) -> str:
    try:
        child = subprocess.run([sys.executable, "-m", "rollax", *argv], capture_output=True,
                               text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return "hang"
    return judge_cli(child.returncode if child.returncode >= 0 else None, child.stderr, expect_error)


def run_command_lines(root: Path) -> None:
    missing = str(root / "no_such_run")
    bad = [["train", "no_such_preset"], ["train", str(PRESET), "--seeds", "0"],
           ["train", str(PRESET), "--seeds", "-3"], ["train", str(PRESET), "--seeds", "x"],
           ["train", str(PRESET), "--set", "no_equals_sign"], ["train", str(PRESET), "--set", "=1"],
           ["train", str(PRESET), "--set", "budget.total_steps="], ["train"],
           ["train", "--resume", missing], ["train", str(PRESET), "--import-module", "no_such_mod"],
           ["train", str(PRESET), "--dir", missing], ["eval", missing], ["eval", missing, "--episodes", "0"],
           ["plot", missing], ["plot", str(root), "--out", "/no_such_folder/x.png"],
           ["plot", str(root), "--band", "wide"], ["presets", "--dir", missing],
           ["baselines", "--dir", missing], ["pretrain", "nosuchmodel"], ["no_such_command"], []]
    for argv in bad:
        try_cli("bad command lines", argv)
    for argv in bad[:6]:
        record("bad command lines (subprocess)", " ".join(argv), subprocess_cli(argv, timeout=120))
    assert not Path("/no_such_folder").exists(), "rollax plot created a folder at the root"


# -- bad batches ------------------------------------------------------------------------------
def batch_corruptions(batch: dict, spec) -> list[tuple[str, dict]]:
    """Corruptions every trainer must refuse (optional keys may be left out; a key whose shape
    kind admits the policy's parts axis, `STEP_OR_PART` or `PER_PART`, may carry one)."""
    from rollax.rl.batch import PER_PART, STEP_OR_PART

    out = []
    for key, value in batch.items():
        if not isinstance(value, np.ndarray):  # group_size
            out += [(f"{key}={bad!r}", {**batch, key: bad}) for bad in (0, -1, 3, 1.5, "2")]
            continue
        if key in spec.required:
            out.append((f"{key} missing", {k: v for k, v in batch.items() if k != key}))
        out.append((f"{key} one row short", {**batch, key: value[:-1]}))
        if spec.shapes.get(key) not in (STEP_OR_PART, PER_PART):
            out.append((f"{key} extra axis", {**batch, key: value[..., None]}))
        out.append((f"{key} as strings", {**batch, key: value.astype(str)}))
        if value.dtype.kind == "f":
            for bad in (np.nan, np.inf):
                spoiled = value.copy()
                spoiled.flat[0] = bad
                out.append((f"{key} with {bad}", {**batch, key: spoiled}))
    return out


def run_batches() -> None:
    import optax
    import test_batch_checks as reported
    from flax import nnx

    from rollax.rl.batch import resolve_keys

    for name, (trainer_class, model_class) in reported.TRAINERS.items():
        model = model_class(nnx.Rngs(0))
        trainer = trainer_class(model, nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param))
        batch = reported.valid_batch(name, np.random.default_rng(0))
        formats = trainer.algorithm.batch_formats(trainer.config, trainer.reference_model is not None)
        batch_format, _, _ = resolve_keys(batch, formats)  # the layout the valid batch has
        for case, bad in batch_corruptions(batch, batch_format):
            try_call("bad trainer batches", f"{name}: {case}", lambda t=trainer, b=bad: t.train_step(b))


# -- Gymnasium ids ----------------------------------------------------------------------------
def run_gymnasium() -> None:
    import gymnasium

    for env_id in ("rollax/CartPole-v1", "rollax/Acrobot-v1", "rollax/Pendulum-v1",
                   "rollax/MountainCarContinuous-v0"):
        env = gymnasium.make(env_id)
        discrete = isinstance(env.action_space, gymnasium.spaces.Discrete)
        try_call("bad Gymnasium calls", f"{env_id} step before reset",
                 lambda i=env_id: gymnasium.make(i).step(0))
        for seed in (-1, 1.5, "x", 2**64, [1, 2]):
            try_call("bad Gymnasium calls", f"{env_id} reset(seed={seed!r})", lambda e=env, s=seed: e.reset(seed=s))
        size = env.action_space.n if discrete else None
        actions = ([size, -1, 1.5, "a", None, [0, 1], np.array([[0]]), np.nan] if discrete else
                   [np.array([np.nan], np.float32), np.array([np.inf], np.float32), "a", None,
                    np.zeros((2, 2), np.float32), np.zeros(3, np.float32)])
        for action in actions:
            env.reset(seed=0)
            try_call("bad Gymnasium calls", f"{env_id} step({action!r})", lambda e=env, a=action: e.step(a))


# -- damaged run folders ----------------------------------------------------------------------
def finished_run(root: Path) -> Path:
    from test_resume import tiny

    return rollax.run.train(tiny(root), progress=False).run_dir


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])
    path.write_bytes(bytes(data))


def _largest(folder: Path) -> Path:
    return max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _edit_config(run: Path, change) -> None:
    path = run / "seed_0" / "config.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


DAMAGE = {  # name -> (change to a copy of a finished run, whether resume/eval must fail)
    "flipped bytes in the array data": (lambda r: _flip(_largest(next((r / "checkpoints").iterdir()) / "state")), True),
    "a checkpoint data file deleted": (lambda r: _largest(next((r / "checkpoints").iterdir()) / "state").unlink(), True),
    "garbage checksum manifest": (lambda r: next((r / "checkpoints").iterdir()).joinpath("rollax_sha256.json").write_text("{"), True),
    "garbage orbax metadata": (lambda r: next((r / "checkpoints").iterdir()).joinpath("state", "_METADATA").write_text("x"), True),
    "checkpoints emptied": (lambda r: [shutil.rmtree(p) for p in (r / "checkpoints").iterdir()], True),
    "config.json not JSON": (lambda r: (r / "seed_0" / "config.json").write_text("{not json"), True),
    "config.json missing": (lambda r: (r / "seed_0" / "config.json").unlink(), True),
    "config.json with a string for a size": (lambda r: _edit_config(r, lambda c: c["budget"].update(num_envs="x")), True),
    "config.json with other network shapes": (lambda r: _edit_config(r, lambda c: c["agent"]["network"].update(hidden_sizes=[12])), True),
    "config.json with an unknown key": (lambda r: _edit_config(r, lambda c: c.update(surprise=1)), True),
    "seed folder missing": (lambda r: shutil.rmtree(r / "seed_0"), True),
}


def run_damaged(root: Path) -> None:
    finished = finished_run(root / "finished")
    for number, (name, (damage, must_fail)) in enumerate(DAMAGE.items()):
        run = Path(shutil.copytree(finished, root / f"damaged_{number}" / "cartpole_ppo" / finished.name))
        damage(run)
        try_cli("damaged run folders", ["train", "--resume", str(run), "--quiet"], must_fail)
        try_cli("damaged run folders", ["eval", str(run), "--episodes", "1"], must_fail)
    metrics = [json.dumps({"step": s, "rollout/ep_rew_mean": 1.0}) for s in (10, 20, 30)]
    for name, lines, must_fail in [("torn last line", [*metrics, '{"step": 4'], False),
                                   ("garbage middle line", [metrics[0], "{x", metrics[1]], True),
                                   ("empty file", [], True), ("a list per line", ["[1, 2]"], True),
                                   ("step as text", ['{"step": "ten", "rollout/ep_rew_mean": 1}'], True)]:
        seed_dir = root / "plots" / name.replace(" ", "_") / "run" / "seed_0"
        seed_dir.mkdir(parents=True)
        (seed_dir / "metrics.jsonl").write_text("\n".join(lines))
        try_cli("damaged run folders", ["plot", str(seed_dir.parent), "--out", str(root / "p.png")], must_fail)


# -- kill -9 ----------------------------------------------------------------------------------
KILLS = [("compile", 0, 600), ("chunk", 200, 1000), ("chunk", 600, 1000), ("chunk", 1000, 1000),
         ("final-save", 600, 600)]


def run_kills(root: Path) -> None:
    from readback import read_jsonl
    from test_faults import KILLED, seen_by_tensorboard
    from test_resume import TINY

    for where, at, total in KILLS:
        name, folder = f"kill -9 at {where} {at}", root / f"kill_{where}_{at}"
        overrides = [*TINY, f"budget.total_steps={total}", f"logging.root='{folder}'",
                     "logging.checkpoint_every_seconds=1e-9"]
        subprocess.run([sys.executable, "-c", KILLED, where, str(at), str(PRESET), *overrides],
                       capture_output=True, timeout=300, check=False)
        runs = list((folder / "cartpole_ppo").iterdir()) if (folder / "cartpole_ppo").exists() else []
        run = runs[0] if runs else None
        has_checkpoint = run is not None and any((run / "checkpoints").glob("[0-9]*"))
        if has_checkpoint:
            seed_dir = run / "seed_0"
            shown = {(s, t) for s, t, _ in seen_by_tensorboard(seed_dir)}
            records = {(r["step"], t) for r in read_jsonl(seed_dir / "metrics.jsonl") for t in r if t != "step"}
            LOST["kill -9"] += len(records - shown)  # in metrics.jsonl, not in TensorBoard
            code, _, err = cli("train", "--resume", str(run), "--quiet")
        else:  # nothing to resume: a fresh run must work
            argv = ["train", str(PRESET), "--quiet", *[a for o in overrides for a in ("--set", o)]]
            code, out, err = cli(*argv)
            run = Path(out.split("run written to ")[1].split()[0]) if code == 0 else None
        outcome = judge_cli(code, err, expect_error=False)
        if run is not None and outcome == "handled":
            LOST["kill -9"] += _steps_lost(run, total, read_jsonl, seen_by_tensorboard)
        record("kill -9, then resume", name, outcome)


def _steps_lost(run: Path, total: int, read_jsonl, seen_by_tensorboard) -> int:
    """Steps missing or duplicated in metrics.jsonl, and its records TensorBoard does not show."""
    records = read_jsonl(run / "seed_0" / "metrics.jsonl")
    steps = Counter(r["step"] for r in records if "train/loss" in r)
    expected = set(range(200, total + 1, 200))
    wrong = sum(abs(steps[s] - 1) for s in expected) + sum(n for s, n in steps.items() if s not in expected)
    shown = Counter((s, t) for s, t, _ in seen_by_tensorboard(run / "seed_0"))
    logged = Counter((r["step"], t) for r in records for t in r if t != "step")
    return wrong + sum((logged - shown).values()) + sum((shown - logged).values())


# -- a full disk ------------------------------------------------------------------------------
def run_full_disk(root: Path) -> None:
    """The disk fills after N metrics.jsonl writes (injected), or for real on a small tmpfs
    (root only): one clear line and exit 1 each time."""
    from test_faults import FullAfter, can_mount_tmpfs
    from test_resume import TINY

    import rollax.logging.logger as logger_module

    real_init = logger_module.Logger.__init__
    for room in (0, 1, 4, 12):
        def init_on_a_small_disk(self, *args, room=room, **kwargs):
            real_init(self, *args, **kwargs)
            self._jsonl = FullAfter(self._jsonl, room=room)

        logger_module.Logger.__init__ = init_on_a_small_disk
        try:
            sets = [a for o in [*TINY, f"logging.root='{root / f'full_{room}'}'"] for a in ("--set", o)]
            try_cli("a full disk", ["train", str(PRESET), "--quiet", *sets])
        finally:
            logger_module.Logger.__init__ = real_init
    for size in ("16k", "24k", "300k"):
        small = root / f"tmpfs_{size}"
        if not can_mount_tmpfs(small, size):
            continue
        try:
            record("a full disk (real tmpfs)", size, subprocess_cli(
                ["train", str(PRESET), "--quiet", "--set", "budget.total_steps=4096",
                 "--set", f"logging.root='{small}'"], timeout=300))
        finally:
            subprocess.run(["umount", str(small)], check=False)


# -- the table --------------------------------------------------------------------------------
def print_table(seconds: float) -> None:
    columns = ["cases", "clear", "handled", "traceback", "silent", "hang"]
    print(f"{'category':<34}" + "".join(f"{c:>10}" for c in columns) + f"{'lost':>8}")
    totals = Counter()
    for category, counts in RESULTS.items():
        totals.update(counts)
        lost = LOST.get(category.split(",")[0], "")
        print(f"{category:<34}" + "".join(f"{counts[c]:>10}" for c in columns) + f"{lost!s:>8}")
    print(f"{'total':<34}" + "".join(f"{totals[c]:>10}" for c in columns) + f"{sum(LOST.values()):>8}")
    print(f"({seconds:.0f} s; clear = a clear error where one is due; handled = a case that must "
          "succeed did; lost = records lost after kill -9 and resume)")
    for problem in PROBLEMS:
        print("  " + problem)


def main_() -> None:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if sys.argv[1:] == ["trust"]:
            run_trust(root, sys.modules[__name__])
            print_table(time.perf_counter() - start)
            return
        for part in (run_command_lines, run_presets, run_damaged, run_full_disk, run_kills):
            part(root)
        run_batches()
        run_gymnasium()
        run_trust(root, sys.modules[__name__])
    print_table(time.perf_counter() - start)


if __name__ == "__main__":
    main_()
