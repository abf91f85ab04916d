"""Shared helpers of the test suite: small custom environments and a fast configuration of SACPlus."""

from __future__ import annotations

import pathlib
import sys
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces

# scripts/random_baseline.py: the random-policy baseline the demo and the learning tests share
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "scripts"))

# Two CPU cores are shared by several processes: one intra-op thread keeps the small nets of the tests from
# oversubscribing them (and makes their timings steadier).
th.set_num_threads(1)


class SpaceEnv(gym.Env):
    """
    A tiny environment with any action space: observations are random vectors of ``obs_dim``, episodes last
    ``episode_length`` steps, and the reward prefers small (Box) or zero (Discrete) actions, so that there
    is something to learn.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, action_space: spaces.Space, obs_dim: int = 3, episode_length: int = 20):
        super().__init__()
        self.action_space = action_space
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(obs_dim,), dtype=np.float32)
        self.episode_length = episode_length
        self._t = 0

    def _obs(self) -> np.ndarray:
        return self.np_random.uniform(-1.0, 1.0, size=self.observation_space.shape).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        self._t += 1
        if isinstance(self.action_space, spaces.Discrete):
            reward = 1.0 if int(np.asarray(action).item()) == 0 else 0.0
        else:
            reward = -float(np.sum(np.square(np.asarray(action, dtype=np.float64))))
        return self._obs(), reward, False, self._t >= self.episode_length, {}


def _fast_kwargs(**overrides: Any) -> dict[str, Any]:
    """Keywords for a SACPlus that trains in a fraction of a second: small nets, small batches, early start."""
    kwargs: dict[str, Any] = dict(
        learning_starts=50,
        batch_size=32,
        buffer_size=10_000,
        policy_kwargs=dict(net_arch=[32, 32]),
        seed=0,
        device="cpu",
    )
    kwargs.update(overrides)
    return kwargs


@pytest.fixture
def space_env() -> type[SpaceEnv]:
    """The :class:`SpaceEnv` class (a fixture, so that test modules need not import conftest)."""
    return SpaceEnv


@pytest.fixture
def fast_kwargs():
    """``fast_kwargs(**overrides)``: keywords for a SACPlus that trains in a fraction of a second."""
    return _fast_kwargs
