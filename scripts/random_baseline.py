"""The baseline the demo and the learning tests compare a trained agent with: a uniformly random policy's return."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


def random_policy_return(env_id: str, n_episodes: int = 10, seed: int = 0) -> float:
    """Mean return of ``n_episodes`` episodes of ``env_id`` played with uniformly random actions (seeded)."""
    env = gym.make(env_id)
    env.action_space.seed(seed)
    returns = []
    for episode in range(n_episodes):
        env.reset(seed=seed + episode)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return float(np.mean(returns))
