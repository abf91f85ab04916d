"""Normalisation layers of the CrossQ- and SimBa-style networks.

- :class:`BatchRenorm`: batch renormalisation (Ioffe 2017, https://arxiv.org/abs/1702.03275), what CrossQ puts
  in its critic and actor (Bhatt et al. 2024, https://arxiv.org/abs/1902.05605).
- :class:`RunningObservationNorm`: SimBa's running statistics normalisation of the observations (Lee et al. 2025,
  https://arxiv.org/abs/2410.09754, section 4.1), as a features extractor.

Both keep their statistics in buffers whose names start with ``running_``: they are saved and restored with the
state dict, and a target critic *copies* them from its critic instead of averaging them (SB3 issue #996).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.preprocessing import get_flattened_obs_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn
from torch.nn import functional as F

__all__ = ["BatchRenorm", "RunningObservationNorm", "batch_renorm_layers", "frozen_statistics"]


class BatchRenorm(nn.Module):
    """
    Batch renormalisation of ``[B, num_features]`` inputs.

    In train mode the input is normalised with the batch's mean and standard deviation, as batch norm does; after
    ``warmup_steps`` train-mode batches the result is corrected toward the running statistics,
    ``x_hat = (x - mean_B) / std_B * r + d`` with ``r = std_B / std`` clipped to ``[1/r_max, r_max]`` and
    ``d = (mean_B - mean) / std`` clipped to ``[-d_max, d_max]``, both without gradient (Ioffe 2017, algorithm 1),
    so that train and eval outputs agree once the running statistics are good. Each train-mode call moves the
    running statistics by ``momentum`` toward the batch's. In eval mode, only the running statistics are used and
    nothing changes. ``y = weight * x_hat + bias``.

    The parameter and buffer names are ``nn.BatchNorm1d``'s (``weight``, ``bias``, ``running_mean``,
    ``running_var``, ``num_batches_tracked``).

    :param num_features: size of the last dimension
    :param momentum: weight of each batch in the running statistics (sb3-contrib's CrossQ: 0.01)
    :param eps: added to the variances before the square root
    :param warmup_steps: train-mode batches normalised by their own statistics only (plain batch norm)
    :param r_max: bound of the scale correction ``r``
    :param d_max: bound of the shift correction ``d``
    """

    running_mean: th.Tensor
    running_var: th.Tensor
    num_batches_tracked: th.Tensor

    def __init__(
        self,
        num_features: int,
        momentum: float = 0.01,
        eps: float = 1e-3,
        warmup_steps: int = 100_000,
        r_max: float = 3.0,
        d_max: float = 5.0,
    ):
        super().__init__()
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"batch_norm_momentum={momentum!r} is not valid; accepted: a float in (0, 1]")
        if not eps > 0.0:
            raise ValueError(f"batch_norm_eps={eps!r} is not valid; accepted: a float > 0")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, (int, np.integer)) or warmup_steps < 0:
            raise ValueError(f"renorm_warmup_steps={warmup_steps!r} is not valid; accepted: an integer >= 0")
        self.num_features = num_features
        self.momentum = momentum
        self.eps = eps
        self.warmup_steps = int(warmup_steps)
        self.r_max = r_max
        self.d_max = d_max
        self.weight = nn.Parameter(th.ones(num_features))
        self.bias = nn.Parameter(th.zeros(num_features))
        self.register_buffer("running_mean", th.zeros(num_features))
        self.register_buffer("running_var", th.ones(num_features))
        self.register_buffer("num_batches_tracked", th.tensor(0, dtype=th.long))

    def forward(self, x: th.Tensor) -> th.Tensor:
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        if x.device.type == "cpu" and int(self.num_batches_tracked) < self.warmup_steps:
            # during the warm-up r = 1 and d = 0: plain batch norm, without the corrections' extra pass over x
            # (reading the counter is free on the CPU; elsewhere _corrections tests it as a tensor)
            self.num_batches_tracked += 1
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, True, self.momentum, self.eps)
        r, d = self._corrections(x)
        # (x - mean_B) / std_B * r + d, then the affine map, is batch norm with weight * r and bias + weight * d:
        # PyTorch's fused kernel, which also moves the running statistics (by the unbiased batch variance)
        out = F.batch_norm(
            x, self.running_mean, self.running_var, self.weight * r, th.addcmul(self.bias, self.weight, d), True,
            self.momentum, self.eps,
        )  # fmt: skip
        self.num_batches_tracked += 1
        return out

    @th.no_grad()
    def _corrections(self, x: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """``r`` and ``d`` of this batch against the running statistics before it; 1 and 0 during the warm-up."""
        batch_var, batch_mean = th.var_mean(x, dim=0, correction=0)
        running_std = th.sqrt(self.running_var + self.eps)
        # a tensor test, not a Python one, so that a GPU does not synchronise on the counter at every layer
        warm = self.num_batches_tracked >= self.warmup_steps
        r = th.where(warm, (th.sqrt(batch_var + self.eps) / running_std).clamp(1.0 / self.r_max, self.r_max), 1.0)
        d = th.where(warm, ((batch_mean - self.running_mean) / running_std).clamp(-self.d_max, self.d_max), 0.0)
        return r, d

    def extra_repr(self) -> str:
        return f"{self.num_features}, momentum={self.momentum}, eps={self.eps}, warmup_steps={self.warmup_steps}"


def batch_renorm_layers(module: nn.Module) -> list[BatchRenorm]:
    """
    The :class:`BatchRenorm` layers of ``module`` (e.g. an actor or a critic), found once and kept on it (a layer
    assigned into it afterwards is not seen: assign a new actor or critic instead).
    """
    found = module.__dict__.get("_batch_renorm_layers")
    if found is None:
        found = module.__dict__["_batch_renorm_layers"] = [m for m in module.modules() if isinstance(m, BatchRenorm)]
    return found


@contextlib.contextmanager
def frozen_statistics(modules: list[BatchRenorm]) -> Iterator[None]:
    """
    The given batch renormalisation layers in eval mode (running statistics, none updated) inside the block,
    whatever the mode of the network around them; their mode is restored afterwards.
    """
    modes = [module.training for module in modules]
    for module in modules:
        module.training = False
    try:
        yield
    finally:
        for module, mode in zip(modules, modes, strict=True):
            module.training = mode


class RunningObservationNorm(BaseFeaturesExtractor):
    """
    Flattened observations standardised by running statistics of the observations seen so far (SimBa's RSNorm),
    ``(obs - mean) / sqrt(var + eps)``.

    The statistics are not updated by ``forward``: :meth:`update` adds a batch of observations (SACPlus calls it,
    through ``policy.update_observation_statistics``, with the observations of every env step), so that actor,
    critics and target critics normalise alike, and evaluation or replay does not move the statistics.

    :param observation_space: a Box observation space (Dict observations: flatten them first)
    :param eps: added to the variance before the square root
    """

    running_mean: th.Tensor
    running_var: th.Tensor
    running_count: th.Tensor

    def __init__(self, observation_space: spaces.Space, eps: float = 1e-8):
        if not isinstance(observation_space, spaces.Box):
            raise TypeError(
                f"RunningObservationNorm normalises Box observations, got {observation_space}; accepted: a Box "
                "observation space (wrap Dict observations in gymnasium's FlattenObservation)"
            )
        features_dim = get_flattened_obs_dim(observation_space)
        super().__init__(observation_space, features_dim)
        self.eps = eps
        self.flatten = nn.Flatten()
        self.register_buffer("running_mean", th.zeros(features_dim))
        self.register_buffer("running_var", th.ones(features_dim))
        self.register_buffer("running_count", th.zeros((), dtype=th.float64))

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return (self.flatten(observations) - self.running_mean) * th.rsqrt(self.running_var + self.eps)

    @th.no_grad()
    def update(self, observations: th.Tensor) -> None:
        """Merge the statistics of a batch ``[B, ...]`` into the running ones (Chan et al.'s parallel update)."""
        batch = self.flatten(observations.float())
        n = batch.shape[0]
        if n == 0:
            return
        batch_var, batch_mean = th.var_mean(batch, dim=0, correction=0)
        # all in tensors: no host synchronisation per env step on a GPU
        count = self.running_count.to(batch.dtype)
        total = count + n
        delta = batch_mean - self.running_mean
        # the mean of squared deviations of everything seen so far; the prior var of 1 has no weight at count 0
        merged_var = (self.running_var * count + batch_var * n + delta.square() * (count * n / total)) / total
        self.running_mean.add_(delta * (n / total))
        self.running_var.copy_(merged_var)
        self.running_count.add_(n)
