"""Pure math of the two action kinds: the squashed Gaussian (Box) and categorical expectations (Discrete).

No SB3 import here: these functions are what the exact tests check against numerical integration.
"""

from __future__ import annotations

import math

import torch as th
from torch.nn import functional as F

# Clip of the Gaussian's log standard deviation, as in SAC's reference implementation and SB3.
LOG_STD_MIN = -20.0
LOG_STD_MAX = 2.0

_LOG_2 = math.log(2.0)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def tanh_log_abs_det_jacobian(pre_tanh: th.Tensor) -> th.Tensor:
    """
    ``log(1 - tanh(n)^2)`` computed from the pre-tanh value ``n``, element-wise.

    Uses the identity ``log(1 - tanh(n)^2) = 2 (log 2 - n - softplus(-2n))``, which is exact and stays
    finite (with finite gradients) for any finite ``n``. Computing it from ``a = tanh(n)`` instead
    (``log(1 - a^2 + eps)``) saturates once |n| > ~9 in float32 and biases the density.
    """
    return 2.0 * (_LOG_2 - pre_tanh - F.softplus(-2.0 * pre_tanh))


def gaussian_log_prob(value: th.Tensor, mean: th.Tensor, log_std: th.Tensor) -> th.Tensor:
    """Log-density of a diagonal Gaussian, summed over the last dimension (shape ``[..., 1]``)."""
    z = (value - mean) * th.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - _HALF_LOG_2PI).sum(dim=-1, keepdim=True)


def squashed_gaussian_log_prob(
    pre_tanh: th.Tensor, mean: th.Tensor, log_std: th.Tensor, jacobian_eps: float | None = None
) -> th.Tensor:
    """
    Log-density of ``a = tanh(n)``, ``n ~ N(mean, exp(log_std)^2)``, evaluated from ``n``.

    Change of variables (SAC paper, appendix C): ``log pi(a) = log N(n) - sum_i log(1 - tanh(n_i)^2)``.

    :param jacobian_eps: ``None``: the exact Jacobian (:func:`tanh_log_abs_det_jacobian`); a float ``eps``:
        ``log(1 - a_i^2 + eps)`` from the action, as SB3 computes it (``eps = 1e-6``), which bounds each
        dimension's correction by ``-log(eps)``: a saturated sample (``|n| >~ 7`` for SB3's eps) is given less
        density than it has, and its Jacobian no longer pulls ``n`` back toward 0
    :return: shape ``[..., 1]``
    """
    if jacobian_eps is None:
        jacobian = tanh_log_abs_det_jacobian(pre_tanh)
    else:
        jacobian = th.log(1.0 - th.tanh(pre_tanh).pow(2) + jacobian_eps)
    return gaussian_log_prob(pre_tanh, mean, log_std) - jacobian.sum(dim=-1, keepdim=True)


def categorical_expectation(probs: th.Tensor, values: th.Tensor) -> th.Tensor:
    """Exact ``E_{a ~ pi}[F(a)] = pi^T F`` over the last dimension (shape ``[..., 1]``)."""
    return (probs * values).sum(dim=-1, keepdim=True)
