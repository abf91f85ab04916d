"""Training statistics and divergence detection, kept on the device so that training needs no host synchronisation.

:class:`TrainingMonitor` is the one object :class:`~sac_plus.SACPlus` keeps for both: each gradient step hands it
one detached vector of statistics (:data:`TRAIN_STATS`); it sums them for the logger and remembers, per
statistic, the first update at which it was non-finite. Reading either back is a host synchronisation, which on
a GPU is done only every :data:`DIVERGENCE_CHECK_INTERVAL` updates and at each log dump.
"""

from __future__ import annotations

import numpy as np
import torch as th

# What each gradient step reports, in this order: (logger key, name in a divergence message).
TRAIN_STATS = (
    ("train/critic_loss", "the critic loss"),
    ("train/actor_loss", "the actor loss"),
    ("train/ent_coef", "the temperature alpha (ent_coef)"),
    ("train/entropy", "the policy entropy"),
    ("train/q_mean", "the mean Q-value"),
    ("train/ent_coef_loss", "the temperature loss"),
    ("train/tanh_saturation", "the fraction of saturated tanh units"),
)
# Reading the non-finite flags back costs a host synchronisation on a GPU: there, do it this rarely (and at each
# log dump). On the CPU there is nothing to synchronise, so the flags are read after every train() call.
DIVERGENCE_CHECK_INTERVAL = 1000
_NEVER = th.iinfo(th.int64).max


class DivergenceError(RuntimeError):
    """A loss, Q-value, the temperature or the policy's outputs became NaN or infinite during training."""


def first_nonfinite_row(array: np.ndarray) -> int | None:
    """Index of the first row (env) of ``array`` holding a NaN or inf, ``None`` if all are finite or not floats."""
    if not np.issubdtype(array.dtype, np.floating):
        return None
    finite = np.isfinite(array.reshape(array.shape[0], -1)).all(axis=1) if array.ndim > 0 else np.isfinite(array)
    if np.all(finite):
        return None
    return int(np.flatnonzero(~np.atleast_1d(finite))[0])


class TrainingMonitor:
    """
    Sums of the training statistics since the last log dump, and the first non-finite update of each.

    :param device: where the statistics live (that of the model)
    :param check_interval: read the non-finite flags every this many updates (see :meth:`check_due`)
    """

    def __init__(self, device: th.device, check_interval: int | None = None):
        self.device = device
        if check_interval is None:
            check_interval = 1 if device.type == "cpu" else DIVERGENCE_CHECK_INTERVAL
        self.check_interval = check_interval
        self.first_nonfinite_update = th.full((len(TRAIN_STATS),), _NEVER, device=device)
        self.next_check = 0
        self.divergence: str | None = None
        self._reset_sums()

    def _reset_sums(self) -> None:
        self.sums = th.zeros(len(TRAIN_STATS), device=self.device)
        self.count = 0

    def record(self, stats: th.Tensor, first_update: int) -> None:
        """Add ``stats`` (``[updates, len(TRAIN_STATS)]``, update ``first_update`` first), without synchronising."""
        self.sums += stats.sum(dim=0)
        self.count += stats.shape[0]
        updates = th.arange(first_update, first_update + stats.shape[0], device=stats.device).unsqueeze(1)
        nonfinite_at = th.where(th.isfinite(stats), self.first_nonfinite_update, updates).amin(dim=0)
        th.minimum(self.first_nonfinite_update, nonfinite_at, out=self.first_nonfinite_update)

    def check_due(self, n_updates: int) -> bool:
        """Whether the flags should be read now (every ``check_interval`` updates)."""
        if n_updates < self.next_check:
            return False
        self.next_check = n_updates + self.check_interval
        return True

    def first_divergence(self) -> tuple[int, list[str]] | None:
        """The first update with a non-finite statistic and the quantities that were, or ``None`` (synchronises)."""
        first = self.first_nonfinite_update.tolist()
        update = min(first)
        if update == _NEVER:
            return None
        return update, [name for (_, name), at in zip(TRAIN_STATS, first, strict=True) if at == update]

    def pop_means(self) -> dict[str, float] | None:
        """Means of the statistics since the last call, by logger key (``None`` without updates); synchronises."""
        if self.count == 0:
            return None
        means = (self.sums / self.count).tolist()
        self._reset_sums()
        return {key: mean for (key, _), mean in zip(TRAIN_STATS, means, strict=True)}

    def peek_means(self) -> dict[str, float] | None:
        """Like :meth:`pop_means`, without starting a new window."""
        if self.count == 0:
            return None
        means = (self.sums / self.count).tolist()
        return {key: mean for (key, _), mean in zip(TRAIN_STATS, means, strict=True)}
