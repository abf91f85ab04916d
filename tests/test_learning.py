"""Learning checks: SACPlus solves Pendulum-v1 (Box) and CartPole-v1 (Discrete) within the usual budgets.

These take minutes, so they are deselected by default; run them with ``pytest -m learning``. Hyperparameters
are rl-zoo3's SAC entry for Pendulum and SACPlus's defaults for CartPole.
"""

from __future__ import annotations

import gymnasium as gym
import pytest
from random_baseline import random_policy_return  # scripts/, put on the path by conftest.py
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from sac_plus import SACPlus

pytestmark = pytest.mark.learning


def _evaluate(model: SACPlus, env_id: str, seed: int, n_episodes: int = 10) -> float:
    eval_env = Monitor(gym.make(env_id))
    eval_env.reset(seed=seed)
    mean_return, _ = evaluate_policy(model, eval_env, n_eval_episodes=n_episodes, deterministic=True)
    eval_env.close()
    return float(mean_return)


def test_pendulum_20k_steps():
    model = SACPlus("MlpPolicy", "Pendulum-v1", learning_rate=1e-3, seed=0, device="cpu")
    model.learn(20_000)
    mean_return = _evaluate(model, "Pendulum-v1", seed=1000)
    random_return = random_policy_return("Pendulum-v1", seed=1000)
    assert random_return < -900, random_return  # the bar below is far above chance (about -1200)
    assert mean_return > -400, f"mean eval return {mean_return:.1f} after 20k steps (random: {random_return:.1f})"


def test_cartpole_50k_steps_with_default_keywords():
    """A user's first try: no hyperparameter but the seed."""
    model = SACPlus("MlpPolicy", "CartPole-v1", seed=0, device="cpu")
    model.learn(50_000)
    mean_return = _evaluate(model, "CartPole-v1", seed=1000)
    random_return = random_policy_return("CartPole-v1", seed=1000)
    assert random_return < 50, random_return  # about 22
    assert mean_return > 300, f"mean eval return {mean_return:.1f} after 50k steps (random: {random_return:.1f})"
