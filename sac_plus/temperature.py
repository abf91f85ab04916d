"""The temperature alpha: fixed or learned, and the target-entropy heuristics (Haarnoja et al. 2018b, sec. 5)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.type_aliases import Schedule

from sac_plus.policies import check_positive_int

# Christodoulou's heuristic for Discrete actions is 0.98 * log|A| ("Soft Actor-Critic for Discrete Action
# Settings", 2019). Measured in benchmarks/RESULTS.md: a constant 0.98 keeps the policy too
# random (CartPole-v1: one seed in three collapsed at the end; LunarLander-v3: -779); a constant 0.6 solves CartPole-v1
# but hovers on LunarLander-v3, whose +100 landing reward needs the lander at rest for ~25 steps without an engine
# impulse: at scale 0.56 even gymnasium's heuristic lander lands in 1% of episodes (benchmarks/lander_randomness.py).
# Annealing the target (Xu et al. 2021, https://arxiv.org/abs/2112.02852) from 0.6 to 0.1 over the first 100k
# gradient updates keeps 0.6's early exploration and lets the policy become nearly deterministic where it must
# (it is the schedule measured on LunarLander-v3 at 200k steps, there 0.6 -> 0.1 over the first half of training).
# It counts the model's updates, so it does not depend on how training is split into learn() calls or resumed.
# 0.98 stays one keyword away.
ACCEPTED_SCALES = (
    "accepted: a float in (0, 1], an UpdateSchedule, or a schedule of the remaining progress with values in (0, 1]"
)


@dataclasses.dataclass(frozen=True)
class UpdateSchedule:
    """
    A target-entropy scale that goes linearly from ``start`` to ``end`` over the model's first ``updates`` gradient
    updates and stays at ``end`` afterwards. The updates are counted over the model's whole life (``_n_updates``,
    saved with it), so the scale does not depend on how training is split into ``learn()`` calls, on
    ``reset_num_timesteps``, or on a save and load in between (a schedule of the remaining progress, as SB3's
    ``LinearSchedule``, restarts with every ``learn()`` call).

    :param start: the scale at update 0, in (0, 1]
    :param end: the scale from update ``updates`` on, in (0, 1]
    :param updates: how many gradient updates the annealing lasts (>= 1)
    """

    start: float = 0.6
    end: float = 0.1
    updates: int = 100_000

    def at(self, n_updates: int) -> float:
        fraction = min(max(n_updates, 0) / self.updates, 1.0)
        return self.start + fraction * (self.end - self.start)


DEFAULT_DISCRETE_TARGET_ENTROPY_SCALE = UpdateSchedule(0.6, 0.1, 100_000)


def parse_ent_coef(ent_coef: str | float) -> tuple[bool, float]:
    """
    Read SB3's ``ent_coef`` convention.

    :param ent_coef: ``"auto"`` (learned, starts at 1.0), ``"auto_X"`` (learned, starts at X > 0),
        or a positive number (fixed alpha)
    :return: whether alpha is learned, and its initial value
    """
    accepted = "accepted: 'auto', 'auto_<initial value>' such as 'auto_0.1', or a positive float"
    if isinstance(ent_coef, str):
        if ent_coef == "auto":
            return True, 1.0
        if ent_coef.startswith("auto_"):
            try:
                init_value = float(ent_coef[len("auto_") :])
            except ValueError:
                raise ValueError(f"ent_coef={ent_coef!r} has no number after 'auto_'; {accepted}") from None
            if not (math.isfinite(init_value) and init_value > 0):
                raise ValueError(f"ent_coef={ent_coef!r}: the initial value must be finite and > 0; {accepted}")
            return True, init_value
        raise ValueError(f"ent_coef={ent_coef!r} is not understood; {accepted}")
    if isinstance(ent_coef, bool) or not isinstance(ent_coef, (int, float, np.floating, np.integer)):
        raise TypeError(f"ent_coef={ent_coef!r} has type {type(ent_coef).__name__}; {accepted}")
    if not (math.isfinite(float(ent_coef)) and ent_coef > 0):
        raise ValueError(f"ent_coef={ent_coef!r} must be finite and > 0; {accepted}")
    return False, float(ent_coef)


def _check_scale_value(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name}={value!r} has type {type(value).__name__}; {ACCEPTED_SCALES}")
    if not (0.0 < float(value) <= 1.0):
        raise ValueError(
            f"{name}={value!r} is outside (0, 1]; {ACCEPTED_SCALES} "
            "(the target entropy is scale * log|A|, and log|A| is the largest entropy a policy over |A| actions has)"
        )
    return float(value)


# Where a schedule is checked when it is given; every value read during training is checked too.
_CHECKED_PROGRESS = tuple(i / 20 for i in range(20, -1, -1))


def check_target_entropy_scale(scale: float | Schedule | UpdateSchedule) -> float | Schedule | UpdateSchedule:
    """
    Validate ``target_entropy_scale``: a float in (0, 1], an :class:`UpdateSchedule`, or a schedule (a function of
    the remaining progress, 1 -> 0, like SB3's learning-rate schedules) whose values lie in (0, 1], checked at 21
    points from 1 to 0 here and at every value :func:`auto_target_entropy` reads.
    """
    if isinstance(scale, UpdateSchedule):
        _check_scale_value(scale.start, "target_entropy_scale.start")
        _check_scale_value(scale.end, "target_entropy_scale.end")
        check_positive_int(scale.updates, "target_entropy_scale.updates")
        return scale
    if callable(scale):
        for progress_remaining in _CHECKED_PROGRESS:
            _check_scale_value(scale(progress_remaining), f"target_entropy_scale({progress_remaining:g})")
        return scale
    return _check_scale_value(scale, "target_entropy_scale")


def auto_target_entropy(
    action_space: spaces.Space,
    discrete_scale: float | Schedule | UpdateSchedule,
    progress_remaining: float = 1.0,
    n_updates: int = 0,
) -> float:
    """
    The "auto" target entropy: ``-dim(A)`` for Box actions (SAC paper), ``scale * log|A|`` for Discrete ones,
    with ``scale`` read from its schedule when it is one: an :class:`UpdateSchedule` at ``n_updates``, a schedule
    of the remaining progress at ``progress_remaining``.
    """
    if isinstance(action_space, spaces.Discrete):
        if isinstance(discrete_scale, UpdateSchedule):
            scale = discrete_scale.at(n_updates)
        elif callable(discrete_scale):
            scale = _check_scale_value(discrete_scale(progress_remaining), f"target_entropy_scale({progress_remaining:g})")
        else:
            scale = float(discrete_scale)
        return scale * math.log(int(action_space.n))
    assert action_space.shape is not None  # a Box (check_action_space accepts only Box and Discrete)
    return -float(np.prod(action_space.shape))


def resolve_target_entropy(
    target_entropy: str | float,
    action_space: spaces.Space,
    discrete_scale: float | Schedule | UpdateSchedule,
    progress_remaining: float = 1.0,
    n_updates: int = 0,
) -> float:
    """``"auto"`` gives the heuristic of :func:`auto_target_entropy`; a number is used as it is."""
    if isinstance(target_entropy, str):
        if target_entropy != "auto":
            raise ValueError(f"target_entropy={target_entropy!r} is not understood; accepted: 'auto' or a float")
        return auto_target_entropy(action_space, discrete_scale, progress_remaining, n_updates)
    if not math.isfinite(float(target_entropy)):
        raise ValueError(f"target_entropy={target_entropy!r} must be finite; accepted: 'auto' or a finite float")
    return float(target_entropy)


def current_target_entropy(
    target_entropy: str | float,
    given: str | float,
    action_space: spaces.Space,
    discrete_scale: float | Schedule | UpdateSchedule,
    progress_remaining: float,
    n_updates: int,
) -> float:
    """
    The target entropy in use: ``target_entropy`` itself when it is a number, except for Discrete actions with
    ``given == "auto"`` (what the user asked for) and a ``discrete_scale`` schedule (the default), where the
    schedule is read (at ``n_updates`` or ``progress_remaining``). So a number a user assigns to ``target_entropy``
    stays, as in SB3, unless the target follows a schedule.
    """
    is_schedule = isinstance(discrete_scale, UpdateSchedule) or callable(discrete_scale)
    scheduled = isinstance(action_space, spaces.Discrete) and is_schedule and given == "auto"
    spec = "auto" if target_entropy == "auto" or scheduled else target_entropy
    return resolve_target_entropy(spec, action_space, discrete_scale, progress_remaining, n_updates)


def keep_given_target_entropy(load_kwargs: dict[str, object]) -> dict[str, object]:
    """A ``target_entropy`` passed to ``load`` stays (no "auto" heuristic or schedule overwrites it)."""
    if "target_entropy" in load_kwargs:
        return {"_target_entropy_spec": load_kwargs["target_entropy"], **load_kwargs}
    return load_kwargs


def temperature_loss(log_ent_coef: th.Tensor, mean_log_prob: th.Tensor, target_entropy: float) -> th.Tensor:
    """
    Loss of the temperature: ``E[-log(alpha) * (log pi(a|s) + H_target)]``.

    The SAC paper's loss (Haarnoja et al. 2018b, eq. 18) is ``E[-alpha (log pi + H_target)]``; we differentiate
    with respect to ``log alpha`` through ``log alpha`` itself rather than through ``alpha = exp(log alpha)``.
    Both have the same fixed point (entropy = target) and the same sign of step, but the gradient of the alpha
    form is scaled by alpha and vanishes as alpha -> 0, so a collapsed temperature could not recover; the log
    form keeps a step size independent of alpha (softlearning issue #37, also SB3's choice).

    :param mean_log_prob: ``E_pi[log pi(.|s)]`` per state (detached here: this loss only moves alpha)
    """
    return -(log_ent_coef * (mean_log_prob.detach() + target_entropy)).mean()


def temperature_gradient(log_ent_coef: th.Tensor, mean_log_prob: th.Tensor, target_entropy: float) -> th.Tensor:
    """
    The gradient of :func:`temperature_loss` with respect to ``log_ent_coef``, in closed form:
    ``-mean(log pi + H_target)``, summed as autograd sums it (each term times ``-1/N``). Writing it to ``.grad``
    saves the autograd graph and backward pass of a one-parameter loss in every update.
    """
    shift = mean_log_prob.detach() + target_entropy
    grad = (shift * th.full_like(shift, -1.0).div_(shift.numel())).sum()
    return grad.reshape(log_ent_coef.shape)
