"""`make demo`: train SACPlus on Pendulum-v1, compare it with a random policy, save the model and a learning curve."""

from __future__ import annotations

import argparse
import pathlib

import gymnasium as gym
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from random_baseline import random_policy_return  # beside this script
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from sac_plus import SACPlus


class EpisodeReturns(BaseCallback):
    """Collects (timestep, return) of every finished training episode from the Monitor wrapper."""

    def __init__(self) -> None:
        super().__init__()
        self.points: list[tuple[int, float]] = []

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            if "episode" in info:
                self.points.append((self.num_timesteps, float(info["episode"]["r"])))
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/demo"))
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    model = SACPlus("MlpPolicy", args.env, seed=args.seed, verbose=0)
    curve = EpisodeReturns()
    model.learn(args.steps, callback=curve, progress_bar=True)
    model_path = args.out / f"sac_plus_{args.env}.zip"
    model.save(model_path)

    eval_env = Monitor(gym.make(args.env))
    mean, std = evaluate_policy(SACPlus.load(model_path), eval_env, n_eval_episodes=10, deterministic=True)
    random_mean = random_policy_return(args.env, n_episodes=10, seed=args.seed)

    steps, returns = zip(*curve.points, strict=False)
    plt.figure(figsize=(6, 4))
    plt.plot(steps, returns, alpha=0.4, label="training episode return")
    window = min(10, len(returns))
    plt.plot(steps[window - 1 :], np.convolve(returns, np.ones(window) / window, mode="valid"), label=f"mean of {window}")
    plt.axhline(random_mean, color="gray", linestyle="--", label="random policy")
    plt.xlabel("environment steps")
    plt.ylabel("return")
    plt.title(f"SACPlus on {args.env}")
    plt.legend()
    plt.tight_layout()
    curve_path = args.out / f"learning_curve_{args.env}.png"
    plt.savefig(curve_path, dpi=100)

    print(f"\nSACPlus on {args.env} after {args.steps} steps (10 evaluation episodes, deterministic):")
    print(f"  SACPlus      : {mean:9.1f} +/- {std:.1f}")
    print(f"  random policy: {random_mean:9.1f}")
    print(f"model: {model_path}\nlearning curve: {curve_path}")


if __name__ == "__main__":
    main()
