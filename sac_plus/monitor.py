"""What SACPlus watches while it trains: its statistics, divergence, and non-finite data from the env.

:class:`TrainingMonitor` is the one object :class:`~sac_plus.SACPlus` keeps for the statistics and divergence:
each gradient step hands it one detached vector of statistics (:data:`TRAIN_STATS`); it sums them for the
logger and remembers, per statistic, the first update at which it was non-finite, all on the device. Reading
either back is a host synchronisation, which on a GPU is done only every :data:`DIVERGENCE_CHECK_INTERVAL`
updates and at each log dump. :func:`check_finite_transition` and :func:`check_finite_observation` name a NaN or
inf from the env at the step it arrives, before it is learned from or acted on.
"""

from __future__ import annotations

import warnings
from typing import Any, TypeVar

import numpy as np
import torch as th
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.type_aliases import MaybeCallback, RolloutReturn

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
# The statistics of the actor and temperature update, which policy_delay > 1 skips at some updates: their means
# are over the updates that computed them.
ACTOR_STATS = ("train/actor_loss", "train/entropy", "train/ent_coef_loss", "train/tanh_saturation")
# Reading the non-finite flags back costs a host synchronisation on a GPU: there, do it this rarely (and at each
# log dump). On the CPU there is nothing to synchronise, so the flags are read after every train() call.
DIVERGENCE_CHECK_INTERVAL = 1000
_NEVER = th.iinfo(th.int64).max
ON_DIVERGENCE = ("raise", "stop")
SelfMonitored = TypeVar("SelfMonitored", bound="MonitoredOffPolicyAlgorithm")


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


def _parts(observation: np.ndarray | dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    if isinstance(observation, dict):
        return [(f" {key!r}", np.asarray(value)) for key, value in observation.items()]
    return [("", np.asarray(observation))]


def check_finite_observation(observation: np.ndarray | dict[str, np.ndarray]) -> None:
    """Refuse a (batch of) observation(s) holding NaN or inf, naming the row, for ``predict``."""
    for key, value in _parts(observation):
        row = first_nonfinite_row(value)
        if row is not None:
            raise ValueError(
                f"predict() got a non-finite observation{key} (NaN or inf, in row {row}); "
                "accepted: finite observations (wrap the env in VecCheckNan to find where they come from)"
            )


def check_finite_transition(
    new_obs: np.ndarray | dict[str, np.ndarray], reward: np.ndarray, dones: np.ndarray, infos: list[dict[str, Any]], step: int
) -> None:
    """
    One vectorised finiteness check of what a VecEnv step returned (rewards, observations, the terminal
    observations of finished episodes), naming the quantity, the env index and ``num_timesteps`` (``step``).
    """
    # (what, values, env index of the values' first row: None where the rows are the envs)
    parts: list[tuple[str, np.ndarray, int | None]] = [(" reward", np.asarray(reward), None)]
    parts += [(f" observation{key}", value, None) for key, value in _parts(new_obs)]
    for index in np.flatnonzero(dones):
        terminal = infos[index].get("terminal_observation")
        if terminal is not None:
            parts += [(f" terminal observation{key}", value[None], int(index)) for key, value in _parts(terminal)]
    for what, values, env in parts:
        row = first_nonfinite_row(values)
        if row is not None:
            env_index = row if env is None else env
            raise ValueError(
                f"The env returned a non-finite{what} (NaN or inf) at num_timesteps={step}, env index {env_index}. "
                "SACPlus cannot learn from it; fix the env, or wrap it in VecCheckNan to find the step that produces it."
            )


class TrainingMonitor:
    """
    Sums of the training statistics since the last log dump, and the first non-finite update of each.

    :param device: where the statistics live (that of the model)
    :param not_logged: logger keys of statistics that do not apply to this model (e.g. the tanh saturation of
        a Discrete actor)
    :param check_interval: read the non-finite flags every this many updates (see :meth:`check_due`)
    """

    def __init__(self, device: th.device, not_logged: tuple[str, ...] = (), check_interval: int | None = None):
        self.device = device
        self.not_logged = not_logged
        if check_interval is None:
            check_interval = 1 if device.type == "cpu" else DIVERGENCE_CHECK_INTERVAL
        self.check_interval = check_interval
        self.first_nonfinite_update = th.full((len(TRAIN_STATS),), _NEVER, device=device)
        self.next_check = 0
        self.divergence: str | None = None
        self.diverged_at: int | None = None
        self._reset_sums()

    def _reset_sums(self) -> None:
        self.sums = th.zeros(len(TRAIN_STATS), device=self.device)
        self.counts = [0] * len(TRAIN_STATS)

    def record(self, stats: th.Tensor, first_update: int, actor_updated: list[bool] | None = None) -> None:
        """
        Add ``stats`` (``[updates, len(TRAIN_STATS)]``, update ``first_update`` first), without synchronising.
        ``actor_updated``: per update, whether the actor was (``None``: at every one); the :data:`ACTOR_STATS` of
        the others are zeros and do not count.
        """
        self.sums += stats.sum(dim=0)
        n_actor = stats.shape[0] if actor_updated is None else sum(actor_updated)
        self.counts = [
            count + (n_actor if key in ACTOR_STATS else stats.shape[0])
            for count, (key, _) in zip(self.counts, TRAIN_STATS, strict=True)
        ]
        updates = th.arange(first_update, first_update + stats.shape[0], device=stats.device).unsqueeze(1)
        nonfinite_at = th.where(th.isfinite(stats), self.first_nonfinite_update, updates).amin(dim=0)
        th.minimum(self.first_nonfinite_update, nonfinite_at, out=self.first_nonfinite_update)

    def check_due(self, n_updates: int) -> bool:
        """Whether the flags should be read now (every ``check_interval`` updates)."""
        if n_updates < self.next_check:
            return False
        self.next_check = n_updates + self.check_interval
        return True

    def diverged(self, n_updates: int, num_timesteps: int, learning_rate: float, policy_nonfinite: bool = False) -> bool:
        """
        Whether a statistic (or, per ``policy_nonfinite``, the policy's outputs) has been non-finite; the first
        time, :attr:`divergence` becomes the message naming the quantities, the update and what to try.
        """
        if self.divergence is not None:
            return False
        found = self.first_divergence()
        if found is None and not policy_nonfinite:
            return False
        what = (
            f"{' and '.join(found[1])} became non-finite (NaN or inf) at gradient update {found[0]}"
            if found is not None
            else f"the policy's outputs became non-finite (NaN or inf) after gradient update {n_updates}"
        )
        self.diverged_at = None if found is None else found[0]
        self.divergence = (
            f"SACPlus diverged: {what} (num_timesteps={num_timesteps}). Hints: lower the learning rate (now "
            f"{learning_rate:g}), scale the rewards down (SAC works best with |reward| of order 1-10), try a fixed "
            "ent_coef."
        )
        return True

    def log(self, logger: Logger, n_updates: int, new_window: bool) -> None:
        """Record the means of the window in ``logger`` (and start a new window if ``new_window``)."""
        means = self.pop_means() if new_window else self.peek_means()
        if means is None:
            return
        logger.record("train/n_updates", n_updates, exclude="tensorboard")
        for key, mean in means.items():
            if key not in self.not_logged:
                logger.record(key, mean)

    def first_divergence(self) -> tuple[int, list[str]] | None:
        """The first update with a non-finite statistic and the quantities that were, or ``None`` (synchronises)."""
        first = self.first_nonfinite_update.tolist()
        update = min(first)
        if update == _NEVER:
            return None
        return update, [name for (_, name), at in zip(TRAIN_STATS, first, strict=True) if at == update]

    def peek_means(self) -> dict[str, float] | None:
        """Means of the statistics of this window, by logger key (``None`` without updates); synchronises."""
        if max(self.counts) == 0:
            return None
        sums = self.sums.tolist()
        return {key: total / count for (key, _), total, count in zip(TRAIN_STATS, sums, self.counts, strict=True) if count}

    def pop_means(self) -> dict[str, float] | None:
        """Like :meth:`peek_means`, then a new window starts."""
        means = self.peek_means()
        self._reset_sums()
        return means


def check_on_divergence(on_divergence: str) -> str:
    if on_divergence not in ON_DIVERGENCE:
        raise ValueError(f"on_divergence={on_divergence!r} is not understood; accepted: {', '.join(map(repr, ON_DIVERGENCE))}")
    return on_divergence


class MonitoredOffPolicyAlgorithm(OffPolicyAlgorithm):
    """
    An SB3 ``OffPolicyAlgorithm`` whose training is watched by a :class:`TrainingMonitor` (``self.monitor``, built
    by the subclass's ``_setup_model``): a NaN or inf from the env is named at its step, the training statistics
    reach the logger at every dump, and a divergence raises a :class:`DivergenceError` or stops training
    (``self.on_divergence``), also when the policy's outputs go non-finite before the losses were checked.
    """

    monitor: TrainingMonitor
    on_divergence: str

    def _check_divergence(self, policy_outputs_nonfinite: bool = False) -> None:
        """Raise or stop (``on_divergence``) if a statistic (or the policy's outputs) has been non-finite."""
        learning_rate = self.lr_schedule(self._current_progress_remaining)  # what train() set on the optimizers
        if not self.monitor.diverged(self._n_updates, self.num_timesteps, learning_rate, policy_outputs_nonfinite):
            return
        if self.on_divergence == "raise":
            raise DivergenceError(self.monitor.divergence)
        warnings.warn(f"{self.monitor.divergence} Training stops (on_divergence='stop').", RuntimeWarning, stacklevel=3)
        if self.monitor.diverged_at is not None:
            self.logger.record("train/diverged_at_update", self.monitor.diverged_at)

    def _log_train_stats(self, new_window: bool) -> None:
        self.monitor.log(self.logger, self._n_updates, new_window)

    def _flush_train_stats(self) -> None:
        """The means since the last dump into the logger (one host synchronisation), then the divergence check."""
        self._log_train_stats(new_window=True)
        self._check_divergence()

    def dump_logs(self) -> None:
        self._flush_train_stats()
        super().dump_logs()

    def collect_rollouts(self, *args: Any, **kwargs: Any) -> RolloutReturn:
        if self.monitor.divergence is not None:  # on_divergence="stop": end learn() without collecting more
            return RolloutReturn(0, 0, continue_training=False)
        try:
            return super().collect_rollouts(*args, **kwargs)
        except DivergenceError:
            # the policy's outputs went non-finite before a periodic check read the flags (on a GPU): name the
            # update where it started, then raise or stop as on_divergence says
            self._check_divergence(policy_outputs_nonfinite=True)
            return RolloutReturn(0, 0, continue_training=False)

    def _store_transition(
        self,
        replay_buffer: ReplayBuffer,
        buffer_action: np.ndarray,
        new_obs: np.ndarray | dict[str, np.ndarray],
        reward: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        check_finite_transition(new_obs, reward, dones, infos, self.num_timesteps)
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)

    def learn(
        self: SelfMonitored,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "run",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfMonitored:
        if self.monitor.divergence is not None:
            warnings.warn(
                f"learn() does nothing: training stopped earlier because {self.monitor.divergence} Load a checkpoint "
                "saved before the divergence (or a new model) to train again.",
                RuntimeWarning,
                stacklevel=2,
            )
            return self
        super().learn(total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps, progress_bar)
        self._flush_train_stats()  # the updates since the last dump reach the logger and are checked
        return self

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "monitor"]
