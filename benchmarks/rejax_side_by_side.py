"""rollax's CartPole-v1 PPO preset and rejax 0.1.3 at its published CartPole hyperparameters,
on the same seeds: greedy-solved seeds (mean of 10 greedy episodes >= 475 after training) and
both learning curves (greedy mean return every 5,000 env steps) in one PNG.

    pip install -e '.[bench]'
    python benchmarks/rejax_side_by_side.py [--seeds 10] [--first-seed 0] [--out curves.png]

Each framework trains its seeds vmapped in one program. rejax 0.1.3 predates gymnax 1.0's
six-value `step`, so its env goes through gymnax's `LegacyStepAPIWrapper`.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

EVAL_EVERY = 5_000
EVAL_EPISODES = 10
SOLVED = 475.0
# rejax's configs/gymnax/cartpole.yaml, "ppo" entry (its published hyperparameters)
REJAX_PPO = {"agent_kwargs": {"activation": "tanh"}, "num_envs": 5, "num_steps": 100,
             "num_epochs": 5, "num_minibatches": 5, "learning_rate": 0.00075, "max_grad_norm": 0.5,
             "total_timesteps": 100_000, "gamma": 0.99, "gae_lambda": 0.95, "clip_eps": 0.2,
             "ent_coef": 0.01, "vf_coef": 0.5}


def train_rollax(seeds: int, first_seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(steps [E], curve [S, E], final greedy means [S], seconds) for the shipped preset."""
    import rollax
    from rollax.logging.callbacks import Callback

    class Curve(Callback):
        def __init__(self):
            self.steps, self.means = [], []

        def on_evaluation(self, run, evaluation):
            self.steps.append(evaluation.step)
            self.means.append(evaluation.returns.mean(axis=1))

    curve = Curve()
    experiment = rollax.load_experiment(
        "cartpole_ppo", ["budget.total_steps=100000", f"eval.every_steps={EVAL_EVERY}", "logging.enabled=false",
                         f"seed={first_seed}", f"eval.episodes={EVAL_EPISODES}"], seeds=seeds)
    start = time.perf_counter()
    result = rollax.train(experiment, callbacks=[curve], progress=False)
    seconds = time.perf_counter() - start
    return (np.array(curve.steps), np.stack(curve.means, axis=1), result.eval_returns.mean(axis=1),
            seconds)


def rejax_ppo(eval_every: int):
    """rejax's PPO at its published CartPole settings, evaluated greedily (the mode of its
    policy, 10 episodes) every `eval_every` steps, like rollax."""
    import gymnax
    from gymnax.wrappers import LegacyStepAPIWrapper
    from rejax import PPO
    from rejax.evaluate import evaluate

    class FiveValueStep(LegacyStepAPIWrapper):
        """rejax reads the five-value step of gymnax < 1.0; it also deep-copies its config, and
        a bare copy of the wrapper recurses in its `__getattr__`, so a copy is the wrapper."""

        def __deepcopy__(self, memo):
            return self

    env, env_params = gymnax.make("CartPole-v1")
    env = FiveValueStep(env)

    def greedy_returns(algo, ts, rng):
        def act(obs, _):
            logits = algo.actor.apply(ts.actor_ts.params, obs[None], method="_action_dist").logits
            return jnp.argmax(logits[0])
        return evaluate(act, rng, env, env_params, EVAL_EPISODES, env_params.max_steps_in_episode)

    algo = PPO.create(env=env, env_params=env_params, eval_freq=eval_every, **REJAX_PPO)
    return algo.replace(eval_callback=greedy_returns)


def train_rejax(seeds: int, first_seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The same figures for rejax."""
    algo = rejax_ppo(EVAL_EVERY)
    keys = jnp.stack([jax.random.PRNGKey(first_seed + s) for s in range(seeds)])
    start = time.perf_counter()
    _, (_, returns) = jax.block_until_ready(jax.jit(jax.vmap(algo.train))(keys))
    seconds = time.perf_counter() - start
    means = np.asarray(returns).mean(axis=-1)  # [S, evaluations], the first before training
    steps = np.arange(means.shape[1]) * EVAL_EVERY
    return steps[1:], means[:, 1:], means[:, -1], seconds


def plot(curves: dict, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, (steps, means, finals, _) in curves.items():
        line, = ax.plot(steps, means.mean(axis=0),
                        label=f"{name} ({int((finals >= SOLVED).sum())}/{len(finals)} solved)")
        ax.fill_between(steps, means.min(axis=0), means.max(axis=0), alpha=0.2, color=line.get_color())
    ax.axhline(SOLVED, color="grey", linestyle="--", linewidth=1)
    ax.set(xlabel="env steps", ylabel=f"greedy return ({EVAL_EPISODES} episodes)",
           title="PPO CartPole-v1: mean and min-max over seeds")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--out", default="rejax_side_by_side.png")
    args = parser.parse_args()
    curves = {"rollax preset": train_rollax(args.seeds, args.first_seed),
              "rejax 0.1.3": train_rejax(args.seeds, args.first_seed)}
    seeds = f"{args.first_seed}-{args.first_seed + args.seeds - 1}"
    print(f"PPO CartPole-v1, 1e5 env steps, seeds {seeds}, greedy eval of {EVAL_EPISODES} episodes")
    print(f"{'framework':<16} {'solved':>7} {'mean':>7} {'worst':>7} {'wall s':>7}  per seed")
    for name, (_, _, finals, seconds) in curves.items():
        print(f"{name:<16} {int((finals >= SOLVED).sum()):>3}/{len(finals):<3} {finals.mean():>7.1f} "
              f"{finals.min():>7.1f} {seconds:>7.1f}  {' '.join(f'{v:.0f}' for v in finals)}")
    plot(curves, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
