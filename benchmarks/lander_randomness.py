"""
Why a Discrete SAC can hover on LunarLander-v3: how often a *good* lander still earns the +100 landing reward
when it acts as randomly as a given target entropy asks (study e of RESULTS.md).

LunarLander-v3 gives +100 and ends the episode only when the lander's Box2D body falls asleep, which needs it to
rest for about 0.5 s (25 steps at 50 FPS) with no engine impulse; any engine firing wakes it. A SAC policy is kept
at the target entropy ``scale * log|A|`` on average over states, so while it learns it fires random engines on the
pad and may never see that reward.

This script takes gymnasium's hand-written ``heuristic`` lander and, at each step, replaces its action with a
uniformly random one with probability ``q``. That policy's entropy in every state is
``H(q) = -(1 - 3q/4) log(1 - 3q/4) - 3 (q/4) log(q/4)``; the script reports it as a fraction of ``log 4`` (the
``target_entropy_scale`` it corresponds to), with the fraction of episodes that end at rest (+100), the fraction
that crash or fly off (-100), and the mean return. One CSV row per ``q`` in ``benchmarks/results/lander_randomness.csv``.

Example::

    python benchmarks/lander_randomness.py --episodes 100
"""

from __future__ import annotations

import argparse
import csv
import math

import gymnasium as gym
import numpy as np
from gymnasium.envs.box2d.lunar_lander import heuristic
from returns import RESULTS_DIR

N_ACTIONS = 4
LANDED_REWARD = 100.0


def entropy_scale(q: float) -> float:
    """Entropy of "heuristic action w.p. 1 - q, uniform w.p. q" over 4 actions, as a fraction of log 4."""
    probs = np.array([1 - q + q / N_ACTIONS] + [q / N_ACTIONS] * (N_ACTIONS - 1))
    probs = probs[probs > 0]
    return float(-(probs * np.log(probs)).sum() / math.log(N_ACTIONS)) + 0.0  # + 0.0 turns -0.0 into 0.0


def run_episode(env: gym.Env, q: float, rng: np.random.Generator, seed: int) -> tuple[float, str]:
    """One episode of the randomised heuristic; returns its return and how it ended: landed, crashed or time limit."""
    obs, _ = env.reset(seed=seed)
    episode_return = 0.0
    while True:
        action = int(rng.integers(N_ACTIONS)) if rng.random() < q else int(heuristic(env.unwrapped, obs))
        obs, reward, terminated, truncated, _ = env.step(action)
        episode_return += float(reward)
        if terminated:
            return episode_return, "landed" if reward == LANDED_REWARD else "crashed"
        if truncated:
            return episode_return, "time_limit"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=100, help="episodes per randomness level")
    parser.add_argument(
        "--q", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.2, 0.3, 0.45, 0.6], help="random-action probabilities"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    env = gym.make("LunarLander-v3")
    rows = []
    for q in args.q:
        rng = np.random.default_rng(args.seed)
        outcomes = [run_episode(env, q, rng, seed=args.seed * 100_000 + episode) for episode in range(args.episodes)]
        returns = np.array([episode_return for episode_return, _ in outcomes])
        ends = [end for _, end in outcomes]
        row = {
            "q": q,
            "entropy_scale": round(entropy_scale(q), 3),
            "episodes": args.episodes,
            "landed_fraction": ends.count("landed") / args.episodes,
            "crashed_fraction": ends.count("crashed") / args.episodes,
            "time_limit_fraction": ends.count("time_limit") / args.episodes,
            "mean_return": round(float(returns.mean()), 1),
            "std_return": round(float(returns.std()), 1),
        }
        rows.append(row)
        print(row, flush=True)

    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / "lander_randomness.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
