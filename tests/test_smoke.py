"""A learning smoke test that runs in the default suite: a change to the update rule that still runs, but no
longer learns, fails here within a minute instead of only in the ``learning`` marker's long runs.

Small networks (64, 64) and batches (64) keep each run under a minute on one core. The bars sit far below what
five seeds reached and far above a random policy (benchmarks of this test's settings, seeds 0-4: CartPole-v1
after 5000 steps 280-359, random 22; Pendulum-v1 after 4000 steps -312 to -79, random about -1200).
"""

from __future__ import annotations

import gymnasium as gym
import pytest
from random_baseline import random_policy_return  # scripts/, put on the path by conftest.py
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from sac_plus import SACPlus

SMOKE = {
    # env: (steps, extra keywords, bar)
    "CartPole-v1": (5000, {}, 150.0),
    "Pendulum-v1": (4000, {"learning_rate": 1e-3}, -700.0),
}


@pytest.mark.parametrize("env_id", list(SMOKE))
def test_a_few_thousand_steps_learn_far_above_random(env_id: str) -> None:
    steps, extra, bar = SMOKE[env_id]
    model = SACPlus(
        "MlpPolicy",
        env_id,
        learning_starts=500,
        batch_size=64,
        policy_kwargs=dict(net_arch=[64, 64]),
        seed=1,
        device="cpu",
        **extra,
    ).learn(steps)
    eval_env = Monitor(gym.make(env_id))
    eval_env.reset(seed=1001)
    mean_return, _ = evaluate_policy(model, eval_env, n_eval_episodes=5, deterministic=True)
    random_return = random_policy_return(env_id, n_episodes=5, seed=1001)
    assert random_return < bar - 100, random_return
    assert mean_return > bar, f"{env_id}: mean return {mean_return:.1f} after {steps} steps (random: {random_return:.1f})"
