"""The classes of the second adversarial pass, for `tools/adversarial.py`: run folders written by
two processes or edited by hand, numbers that overflow or are not flags, user code that breaks on
rows or prompts a small check never tries, env params of the wrong kind or sign, evaluations that
never end, machine limits, API edges, and normalisation and search settings. Each case is judged as `adversarial.py` judges its own
(a clear error, a handled case, a traceback, a silent acceptance, a hang)."""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def run_trust(root: Path, adversarial) -> None:
    """Every class below, recorded through `adversarial.record`; a part that itself fails (on
    an older rollax, say) is recorded as one traceback and the others still run."""
    for part in (_run_folders, _read_only, _numbers, _user_code, _env_params, _evaluation,
                 _resources, _api, _normalisation_and_tune):
        try:
            part(root, adversarial)
        except Exception as error:  # noqa: BLE001 - what a user of that rollax would meet
            adversarial.record(f"(a part that crashed) {part.__name__}", repr(error)[:200],
                               "traceback")


# -- one writer, tamper-proof run folders ------------------------------------------------------
def _run_folders(root: Path, adv) -> None:
    from test_resume import tiny

    import rollax

    category = "run folders and resume"
    finished = rollax.run.train(tiny(root / "trust_finished").replace(seeds=2), progress=False).run_dir

    def copy(name: str) -> Path:
        return Path(shutil.copytree(finished, root / f"trust_{name}" / "cartpole_ppo" / finished.name))

    # two resumes of one run at once: the second must be refused while the first holds the lock
    run = copy("two_writers")
    extend = ["--set", "budget.total_steps=1600"]
    first = subprocess.Popen([sys.executable, "-m", "rollax", "train", "--resume", str(run),
                              "--quiet", *extend], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    lock = run / ".writer.lock"  # it keeps the last holder's pid: wait for the first's
    for _ in range(1200):
        if lock.exists() and lock.read_text().strip() == str(first.pid):
            break
        if first.poll() is not None:
            break
        time.sleep(0.05)
    second = adv.subprocess_cli(["train", "--resume", str(run), "--quiet", *extend], timeout=300)
    first.communicate(timeout=300)
    adv.record(category, "a second resume while the first runs", second)
    adv.record(category, "the first resume of the two", "handled" if first.returncode == 0 else
               "traceback")
    adv.LOST[category] += _duplicated_steps(run)

    def edited(change) -> Path:
        run = copy(f"edit_{len(list(root.glob('trust_edit_*')))}")
        path = run / "seed_0" / "config.json"
        config = json.loads(path.read_text())
        change(config)
        path.write_text(json.dumps(config))
        return run

    edits = {
        "config.json: clip_param edited": lambda c: c["agent"]["config"].update(clip_param=0.01),
        "config.json: profiler log_dir outside": lambda c: c["logging"].update(
            profiler={"log_dir": "/tmp/outside_the_working_folder"}),
        "config.json: anneal_lr edited": lambda c: c["agent"]["optimizer"].update(anneal_lr=True),
    }
    for change in edits.values():
        adv.try_cli(category, ["train", "--resume", str(edited(change)), "--quiet"])
    # an edited total is not a change of the run: the checkpoint's recorded total is trained to
    run = edited(lambda c: c["budget"].update(total_steps=10**6))
    code, _, err = adv.cli("train", "--resume", str(run), "--quiet")
    outcome = adv.judge_cli(code, err, expect_error=False)
    if outcome == "handled" and json.loads((run / "results.json").read_text())["env_steps"] != \
            json.loads((finished / "results.json").read_text())["env_steps"]:
        outcome = "silent"
    adv.record(category, "config.json: total_steps edited (the checkpoint's total holds)", outcome)
    run = copy("deleted_log")
    (run / "seed_1" / "metrics.jsonl").unlink()
    adv.try_cli(category, ["train", "--resume", str(run), "--quiet", *extend])
    run = copy("truncated_log")
    log = run / "seed_1" / "metrics.jsonl"
    log.write_text("".join(log.read_text().splitlines(keepends=True)[:1]))
    adv.try_cli(category, ["train", "--resume", str(run), "--quiet", *extend])


def _duplicated_steps(run: Path) -> int:
    from readback import read_jsonl

    steps = [r["step"] for r in read_jsonl(run / "seed_0" / "metrics.jsonl") if "train/loss" in r]
    return len(steps) - len(set(steps))


# -- a read-only run folder (a read-only tmpfs, where this user may mount one) -----------------
def _read_only(root: Path, adv) -> None:
    from test_faults import can_mount_tmpfs

    finished = next(root.glob("trust_finished/cartpole_ppo/*"))
    mounted = root / "trust_read_only"
    if not can_mount_tmpfs(mounted, "20m"):
        return
    try:
        run = Path(shutil.copytree(finished, mounted / finished.name))
        subprocess.run(["mount", "-o", "remount,ro", str(mounted)], check=True)
        category = "read-only run folders"
        for argv in (["plot", str(run)], ["plot", str(run), "--out", str(run / "x")],
                     ["train", "--resume", str(run), "--quiet"],
                     ["eval", str(run), "--episodes", "1", "--video", str(run / "v.gif")]):
            adv.record(category, " ".join(argv), adv.subprocess_cli(argv, timeout=300))
        adv.record(category, "eval (a reader)", adv.subprocess_cli(
            ["eval", str(run), "--episodes", "1"], timeout=300, expect_error=False))
    finally:
        subprocess.run(["umount", str(mounted)], check=False)


# -- numbers where they enter ------------------------------------------------------------------
def _numbers(root: Path, adv) -> None:
    import optax
    import test_batch_checks as reported
    from flax import nnx

    category = "numbers in train_step"
    rng = np.random.default_rng(0)
    for name, (trainer_class, model_class) in reported.TRAINERS.items():
        model = model_class(nnx.Rngs(0))
        trainer = trainer_class(model, nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param))
        batch = reported.valid_batch(name, rng)
        cases = {}
        if "rewards" in batch:
            cases["rewards of 3e38"] = {**batch, "rewards": np.full_like(batch["rewards"], 3e38)}
            cases["rewards of -1e30"] = {**batch, "rewards": np.full_like(batch["rewards"], -1e30)}
        for flag in ("dones", "terminated", "truncated"):
            if flag in batch:
                cases[f"{flag} of 2.0"] = {**batch, flag: np.full(batch[flag].shape, 2.0, np.float32)}
                cases[f"{flag} of 0.5"] = {**batch, flag: np.full(batch[flag].shape, 0.5, np.float32)}
        for key in [k for k in batch if k.endswith("mask")]:
            cases[f"{key} all False"] = {**batch, key: np.zeros_like(batch[key], bool)}
            cases[f"{key} of 3"] = {**batch, key: np.full(batch[key].shape, 3, np.int32)}
        for case, bad in cases.items():
            adv.try_call(category, f"{name}: {case}", lambda t=trainer, b=bad: t.train_step(b))
        if "rewards" in batch:  # integer rewards are rewards: the step must succeed
            ints = {**batch, "rewards": np.rint(batch["rewards"]).astype(np.int32)}
            adv.try_call(category, f"{name}: integer rewards",
                         lambda t=trainer, b=ints: t.train_step(b), expect_error=False)


# -- user code checked the way it is used ------------------------------------------------------
def _user_code(root: Path, adv) -> None:
    import jax
    import jax.numpy as jnp

    from rollax.generative.latent_env import from_model
    from rollax.tokens import register_task
    from rollax.tokens.tasks import DIGITS, TokenTask
    from rollax.tokens.tokenizer import EOS

    category = "user code"

    def decoder(latents):
        return latents @ jnp.array([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]])

    rewards = {"sums over the batch": lambda s, c: s.sum(-1) - s.sum() / 2,
               "normalises over the batch": lambda s, c: s.sum(-1) / (1 + s.sum(-1).std()),
               "one value for the batch": lambda s, c: s.sum(),
               "NaN on some rows": lambda s, c: jnp.log(s.sum(-1))}
    for name, reward in rewards.items():
        adv.try_call(category, f"latent env reward that {name}",
                     lambda r=reward: from_model(decoder, r, 2))

    def sample_with(rate):
        def sample(key):
            prompt = jnp.append(2 + jax.random.randint(key, (3,), 0, 10), DIGITS.encode("=")[0])
            return jnp.where(jax.random.uniform(jax.random.fold_in(key, 7)) < rate, 40, prompt)
        return sample

    for index, rate in enumerate((0.01, 0.003, 1.0)):
        name = f"trustoov{index}"
        register_task(name, lambda n=name, r=rate: TokenTask(
            n, DIGITS, 4, 4, sample_with(r), lambda prompt: jnp.append(prompt[:3], EOS)))
        adv.try_call(category, f"token task sampling id 40 for {rate:.1%} of prompts",
                     lambda n=name: __import__("rollax").make(f"rollax/Tokens-{n.capitalize()}-v0"))
    modules = {"raises RuntimeError": "raise RuntimeError('boom')\n",
               "has a syntax error": "def broken(:\n", "exits": "raise SystemExit(3)\n",
               "raises KeyError": "{}['x']\n"}
    folder = root / "trust_modules"
    folder.mkdir()
    sys.path.insert(0, str(folder))
    for index, text in enumerate(modules.values()):
        (folder / f"trust_module_{index}.py").write_text(text)
        adv.try_cli(category, ["train", "cartpole_ppo", "--no-log", "--quiet", "--import-module",
                               f"trust_module_{index}"])

    from rollax.rl.rewards import ThresholdReward

    def threshold_keeps_nan():
        value = ThresholdReward(lambda s, c: jnp.full(s.shape[:1], jnp.nan), 0.5)(
            jnp.zeros((2, 3)), None)
        if not np.isnan(np.asarray(value)).all():
            raise AssertionError("silent")

    adv.try_call(category, "ThresholdReward of a NaN score stays NaN", threshold_keeps_nan,
                 expect_error=False)


# -- env params --------------------------------------------------------------------------------
def _env_params(root: Path, adv) -> None:
    category = "env params"
    cases = ["length=-1.0", "gravity='heavy'", "gravity=nan", "masscart=0", "x_threshold=true",
             "max_steps_in_episode=0", "max_steps_in_episode=2.5", "force_mag=[1.0]", "tau=-0.02",
             "theta_threshold_radians=inf"]
    for case in cases:
        adv.try_cli(category, ["train", "cartpole_ppo", "--no-log", "--quiet", "--set",
                               f"env.params.{case}"])
    for env_id, case in (("Pendulum-v1", "max_speed=-8.0"), ("Acrobot-v1", "available_torque=[1.0]"),
                         ("Acrobot-v1", "link_mass_1='x'"), ("MountainCar-v0", "max_position=-0.6")):
        adv.try_cli(category, ["train", "cartpole_ppo", "--no-log", "--quiet", "--set",
                               f"env.id='{env_id}'", "--set", f"env.params.{case}"])


# -- bounded evaluation ------------------------------------------------------------------------
def _evaluation(root: Path, adv) -> None:
    import gymnasium
    from test_host_collector import EndlessEnv

    class NaNReward(EndlessEnv):
        def step(self, action):
            return np.zeros(4, np.float32), float("nan"), True, False, {}

    gymnasium.register("TrustEndless-v0", entry_point=EndlessEnv)
    gymnasium.register("TrustNaNReward-v0", entry_point=NaNReward)
    category = "evaluation"
    # an env that never ends must evaluate within the cap; one whose rewards are NaN is named
    for env_id, must_fail in (("TrustEndless-v0", False), ("TrustNaNReward-v0", True)):
        folder = root / f"trust_eval_{env_id}"
        code, _out, err = adv.cli("train", "gymnasium_cartpole_ppo", "--quiet", "--seeds", "1",
                                 "--set", f"env.id='gymnasium:{env_id}'", "--set",
                                 "budget.total_steps=1000", "--set", "eval.episodes=2",
                                 "--set", f"logging.root='{folder}'", "--set", "logging.plot=false")
        outcome = adv.judge_cli(code, err, expect_error=must_fail)
        results = list(folder.rglob("results.json"))
        if outcome == "handled":
            text = results[0].read_text() if results else ""
            # strict JSON (NaN is not JSON) and no non-finite number passed as a result
            try:
                json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
            except ValueError:
                outcome = "silent"
        adv.record(category, f"final evaluation of {env_id}", outcome)


# -- machine limits ----------------------------------------------------------------------------
def _limited(kind: int, value: int):
    def apply():
        resource.setrlimit(kind, (value, resource.getrlimit(kind)[1]))
    return apply


def _resources(root: Path, adv) -> None:
    category = "resource limits"
    big = ", ".join(["65536"] * 8)
    for case in (["--devices", "65536"], ["--set", f"agent.network.hidden_sizes=[{big}]"],
                 ["--set", "budget.num_envs=33554432", "--set", "budget.num_steps=1",
                  "--set", "budget.total_steps=33554432"],
                 ["--seeds", "64", "--set", "budget.num_envs=262144", "--set", "budget.num_steps=2",
                  "--set", "budget.total_steps=524288"]):
        adv.record(category, " ".join(case), adv.subprocess_cli(
            ["train", "cartpole_ppo", "--quiet", "--set", f"logging.root='{root / 'trust_big'}'",
             *case], timeout=300))
    # 64 seeds under a 64-file limit; a 40 KiB file-size limit; each in a process of its own
    for name, limit, args in (
            ("64 seeds under ulimit -n 64", _limited(resource.RLIMIT_NOFILE, 64),
             ["--seeds", "64"]),
            ("ulimit -f 40 KiB", _limited(resource.RLIMIT_FSIZE, 40 * 1024), [])):
        try:
            child = subprocess.run(
                [sys.executable, "-m", "rollax", "train", "cartpole_ppo", "--quiet", *args,
                 "--set", "budget.total_steps=1024", "--set",
                 f"logging.root='{root / 'trust_limits'}'"],
                capture_output=True, text=True, timeout=300, preexec_fn=limit, check=False)
            outcome = adv.judge_cli(child.returncode if child.returncode >= 0 else None,
                                    child.stderr, expect_error=True)
            if outcome == "silent":  # a limit the run fits under: it must have succeeded whole
                outcome = "handled"
        except subprocess.TimeoutExpired:
            outcome = "hang"
        adv.record(category, name, outcome)
    constant_rate = ["train", "gymnasium_cartpole_ppo", "--seeds", "1", "--quiet", "--set",
                     "agent.optimizer.anneal_lr=false", "--set", "budget.total_steps=2000",
                     "--set", f"logging.root='{root / 'trust_constant_rate'}'"]
    adv.record("shipped presets, valid settings", " ".join(constant_rate[:2] + constant_rate[4:7]),
               adv.subprocess_cli(constant_rate, timeout=300, expect_error=False))
    adv.record(category, "wandb named in a preset, not installed", adv.subprocess_cli(
        ["train", "cartpole_ppo", "--no-log", "--quiet", "--set", "logging.wandb.project='p'"],
        timeout=120))


# -- API edges ---------------------------------------------------------------------------------
def _api(root: Path, adv) -> None:
    import jax

    import rollax
    from rollax.presets import load_experiment

    category = "Python API edges"
    run = next(root.glob("trust_finished/cartpole_ppo/*"))
    agent = rollax.load_agent(run, checkpoint="last")
    observations = {"NaN": np.full((2, 4), np.nan, np.float32), "inf": np.full((1, 4), np.inf),
                    "complex": np.ones((1, 4), complex), "empty batch": np.zeros((0, 4)),
                    "strings": np.array([["a"] * 4]), "a dict": {"x": 1}, "None": None}
    for name, value in observations.items():
        adv.try_call(category, f"predict({name})", lambda v=value: agent.predict(v))
        adv.try_call(category, f"act({name})", lambda v=value: agent.act(v))
    for name, key in (("an int", 3), ("a float array", np.zeros(2)), ("a string", "k"),
                      ("a uint32 of shape (3,)", jax.numpy.zeros(3, jax.numpy.uint32))):
        adv.try_call(category, f"act(key={name})",
                     lambda k=key: agent.act(np.zeros((1, 4), np.float32), key=k,
                                             deterministic=False))
    experiment = load_experiment("cartpole_ppo")
    for name, change in (("an unknown field", {"no_such_field": 1}),
                         ("an unknown budget key", {"budget": {"no_such_key": 1}}),
                         ("a wrong type", {"seeds": "two"}), ("a section of the wrong kind",
                                                              {"budget": 5})):
        adv.try_call(category, f"experiment.replace with {name}",
                     lambda c=change: experiment.replace(**c))
    adv.try_call(category, "load_experiment(dirs='/a/path')",
                 lambda: load_experiment("cartpole_ppo", dirs=str(root)))
    adv.try_call(category, "load_experiment(dirs=[a missing folder])",
                 lambda: load_experiment("cartpole_ppo", dirs=[str(root / "missing")]))
    out = root / "trust_plot"
    code, printed, err = adv.cli("plot", str(run), "--out", str(out))
    reported = Path(printed.strip().removeprefix("wrote ")) if code == 0 else None
    adv.record(category, "plot --out without a suffix",
               "handled" if reported is not None and reported.is_file() else
               adv.judge_cli(code, err, expect_error=False))
    token_run = rollax.run.train(load_experiment("tokens_reverse_grpo", [
        "budget.total_steps=64", "budget.num_envs=32", "eval.episodes=16",
        "agent.network.width=16", "agent.network.layers=1", "agent.network.heads=2",
        "agent.network.warm_start=false", "agent.config.num_generations=4",
        "logging.plot=false", f"logging.root='{root / 'trust_tokens'}'"]), progress=False).run_dir
    token_agent = rollax.load_agent(token_run, checkpoint="last")
    for name, prompts in (("an empty list", []), ("an empty prompt", [""]), ("a string", "12="),
                          ("a number", [12]), ("a letter outside the vocabulary", ["ab="])):
        adv.try_call(category, f"generate({name})", lambda p=prompts: token_agent.generate(p))
    for name, options in (("temperature=0", {"temperature": 0}), ("top_k=-1", {"top_k": -1}),
                          ("temperature=nan", {"temperature": float("nan")})):
        adv.try_call(category, f"generate(['12='], {name})",
                     lambda o=options: token_agent.generate(["12="], greedy=False,
                                                            key=jax.random.key(0), **o))


# -- normalisation settings and searches ---------------------------------------------------------
def _normalisation_and_tune(root: Path, adv) -> None:
    category = "normalisation and rollax tune"
    where = ["--set", f"logging.root='{root / 'trust_tune'}'", "--quiet"]
    for setting in ("env.clip_observations=0", "env.clip_rewards=-1", "env.clip_observations=nan",
                    "env.normalize_rewards=1", "env.normalize_observations='yes'"):
        adv.try_cli(category, ["train", "mountaincar_ppo", "--set", setting, *where])
    for experiment, setting in (("gymnasium_cartpole_ppo", "env.normalize_rewards=true"),
                                ("vae_grpo", "env.normalize_rewards=true"),
                                ("vae_grpo", "env.normalize_observations=true"),
                                ("tokens_reverse_grpo", "env.normalize_observations=true")):
        adv.try_cli(category, ["train", experiment, "--set", setting, *where])
    for params in (["agent.optimizer.learning_rate=log:0:1e-2"],
                   ["agent.optimizer.learning_rate=log:-1e-3:1e-2"],
                   ["agent.config.clip_param=float:0.3:0.1"], ["agent.config.num_epochs=int:4:4"],
                   ["agent.config.clip_param=float:0.1"], ["agent.config.clip_param=normal:0:1"],
                   ["agent.config.clip_param=float:nan:1"], ["agent.config.clip_param=cat:"],
                   ["agent.config.clip_param=cat:0.1,0.1"], ["agent.config.no_such=float:0:1"],
                   ["no_such_section.x=float:0:1"], ["seeds=int:1:3"], ["logging.root=cat:a,b"],
                   ["agent.config.clip_param=float:-1:0.3"], ["agent.config.clip_param"]):
        adv.try_cli(category, ["tune", "cartpole_ppo", *[a for p in params for a in ("--param", p)],
                               *where])
    adv.try_cli(category, ["tune", "acrobot_ppo", *where])  # no --param and no [search] table
    ok = ["--param", "agent.config.clip_param=float:0.1:0.3"]
    for options in (["--metric", "eval/no_such_metric"], ["--metric", "train/loss"],
                    ["--storage", "notadb://x"], ["--storage", f"sqlite:///{root}/missing/dir/s.db"],
                    ["--trials", "0"], ["--batch", "-1"], ["--aggregate", "median"],
                    ["--resume", str(root)], ["--resume", str(root / "missing")]):
        adv.try_cli(category, ["tune", "cartpole_ppo", *ok, *options, *where]
                    if options[0] != "--resume" else ["tune", *options])
