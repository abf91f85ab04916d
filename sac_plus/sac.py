"""SACPlus: Soft Actor-Critic for Box and Discrete actions, as an SB3 ``OffPolicyAlgorithm``."""

from __future__ import annotations

import io
import math
import os
import pathlib
from collections.abc import Iterable
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import maybe_make_env
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, ReplayBufferSamples, Schedule
from stable_baselines3.common.utils import get_parameters_by_name, obs_as_tensor

from sac_plus import checkpoint, sb3_format
from sac_plus.fused import FusedGradients, faster_of, fused_gradients_for, fused_mode
from sac_plus.linear import describe_kernel_choices
from sac_plus.monitor import DivergenceError, MonitoredOffPolicyAlgorithm, TrainingMonitor, check_on_divergence
from sac_plus.policies import (
    CnnPolicy,
    Critic,
    CrossQPolicy,
    MlpPolicy,
    MultiInputPolicy,
    SACPlusActor,
    SACPlusPolicy,
    SimbaPolicy,
    SoftValue,
    SquashedGaussianActor,
    build_optimizer,
    check_action_space,
    check_positive_int,
    step_optimizer,
)
from sac_plus.temperature import (
    DEFAULT_DISCRETE_TARGET_ENTROPY_SCALE,
    UpdateSchedule,
    check_target_entropy_scale,
    current_target_entropy,
    keep_given_target_entropy,
    parse_ent_coef,
    resolve_target_entropy,
    temperature_gradient,
    temperature_loss,
)

SelfSACPlus = TypeVar("SelfSACPlus", bound="SACPlus")

__all__ = ["DivergenceError", "SACPlus"]


class SACPlus(MonitoredOffPolicyAlgorithm):
    """
    Soft Actor-Critic (Haarnoja et al. 2018, https://arxiv.org/abs/1801.01290 and https://arxiv.org/abs/1812.05905)
    for Box and Discrete action spaces (Christodoulou 2019, https://arxiv.org/abs/1910.07207), with twin (or
    ``n_critics``) critics, target critics and a learned temperature.

    Takes every keyword of ``stable_baselines3.SAC`` with the same meaning and default, plus
    ``target_entropy_scale``, ``policy_delay``, ``use_target_critic`` and ``on_divergence``. With their defaults
    the algorithm is SB3 SAC's; :mod:`sac_plus.presets` holds the keywords of CrossQ and SimBa.

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, MultiInputPolicy; CrossQPolicy: batch
        renormalisation in actor and critics; SimbaPolicy: SimBa's residual networks)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: learning rate for Adam, the same for actor, critics and temperature (as in SB3);
        a float or a function of the remaining progress (from 1 to 0)
    :param buffer_size: size of the replay buffer
    :param learning_starts: how many steps of the model to collect transitions for before learning starts
    :param batch_size: Minibatch size for each gradient update
    :param tau: the soft update coefficient ("Polyak update", between 0 and 1)
    :param gamma: the discount factor
    :param train_freq: Update the model every ``train_freq`` steps. Alternatively pass a tuple of frequency and unit
        like ``(5, "step")`` or ``(2, "episode")``.
    :param gradient_steps: How many gradient steps to do after each rollout (see ``train_freq``);
        ``-1`` means as many gradient steps as steps done in the environment during the rollout.
    :param action_noise: the action noise type (None by default), Box actions only
    :param replay_buffer_class: Replay buffer class to use (for instance ``HerReplayBuffer``).
        If ``None``, it will be automatically selected.
    :param replay_buffer_kwargs: Keyword arguments to pass to the replay buffer on creation.
    :param optimize_memory_usage: Enable a memory efficient variant of the replay buffer
    :param n_steps: n-step returns (SB3's ``NStepReplayBuffer``) when ``replay_buffer_class`` is None
    :param ent_coef: the temperature alpha. ``"auto"`` learns it starting from 1.0, ``"auto_0.1"`` learns it
        starting from 0.1, a positive float fixes it.
    :param target_update_interval: update the target critics every ``target_update_interval`` gradient
        updates; updates are counted across ``learn()`` calls.
    :param policy_delay: update the actor and the temperature every ``policy_delay`` critic updates (TD3's
        delayed policy updates; CrossQ uses 3), counted across ``learn()`` calls
    :param use_target_critic: ``False``: no target critic; the bootstrap value of ``s'`` is the critic's own, from
        one forward pass over ``[s; s']`` so that batch normalisation sees both (CrossQ, Bhatt et al. 2024);
        ``tau`` and ``target_update_interval`` are then unused
    :param target_entropy: target entropy H_target when alpha is learned. ``"auto"``: ``-dim(A)`` for Box,
        ``target_entropy_scale * log|A|`` for Discrete; a float sets it directly.
    :param target_entropy_scale: Discrete actions only: the fraction of the largest entropy ``log|A|`` used by
        ``target_entropy="auto"``, in (0, 1]; or a schedule that anneals it as training goes (target entropy
        scheduling, Xu et al. 2021, https://arxiv.org/abs/2112.02852): a :class:`~sac_plus.temperature.UpdateSchedule`
        over the model's gradient updates, or a function of the remaining progress of the ``learn()`` call (1 -> 0,
        as for ``learning_rate``). The default, ``UpdateSchedule(0.6, 0.1, 100_000)``, goes from 0.6 to 0.1 over the
        first 100k updates, whatever the ``learn()`` calls (benchmarks/RESULTS.md, CartPole-v1 and LunarLander-v3).
        Christodoulou's heuristic is ``target_entropy_scale=0.98``.
    :param use_sde: Whether to use generalized State Dependent Exploration (gSDE), Box only
    :param sde_sample_freq: Sample a new noise matrix every n steps when using gSDE (-1: once per rollout)
    :param use_sde_at_warmup: Whether to use gSDE instead of uniform sampling before learning starts
    :param stats_window_size: Window size for the rollout logging
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments for the policy (``net_arch``, ``n_critics``, ``init_scheme``, ...),
        see :class:`sac_plus.policies.SACPlusPolicy`; the critics are SB3's layout (``critic.qf0``, ...)
    :param verbose: Verbosity level: 0 none, 1 info, 2 debug
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run
    :param on_divergence: when a loss, the mean Q-value, alpha or the policy's outputs become non-finite:
        ``"raise"`` a :class:`DivergenceError`, or ``"stop"`` training (``learn()`` returns, with a warning);
        see :mod:`sac_plus.monitor` for when it is checked.
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy, "CnnPolicy": CnnPolicy, "MultiInputPolicy": MultiInputPolicy,
        "CrossQPolicy": CrossQPolicy, "SimbaPolicy": SimbaPolicy,
    }  # fmt: skip
    policy: SACPlusPolicy
    actor: SACPlusActor
    critic: Critic
    critic_target: Critic | None

    def __init__(
        self,
        policy: str | type[SACPlusPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 100,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        action_noise: ActionNoise | None = None,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        n_steps: int = 1,
        ent_coef: str | float = "auto",
        target_update_interval: int = 1,
        policy_delay: int = 1,
        use_target_critic: bool = True,
        target_entropy: str | float = "auto",
        target_entropy_scale: float | Schedule | UpdateSchedule = DEFAULT_DISCRETE_TARGET_ENTROPY_SCALE,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        use_sde_at_warmup: bool = False,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        on_divergence: str = "raise",
        _init_setup_model: bool = True,
    ):
        # Check what needs no environment before building one.
        policy = checkpoint.policy_class_for(policy)
        parse_ent_coef(ent_coef)
        check_target_entropy_scale(target_entropy_scale)
        check_on_divergence(on_divergence)
        target_update_interval = check_positive_int(target_update_interval, "target_update_interval")
        policy_delay = check_positive_int(policy_delay, "policy_delay")
        use_target_critic = _use_target_critic(use_target_critic, policy_kwargs)
        # SB3 adds keys to policy_kwargs; a dict shared with the caller (e.g. a preset's) must not change
        policy_kwargs = None if policy_kwargs is None else dict(policy_kwargs)
        if env is not None:
            # Wrap the env as SB3 would (idempotent) so that its action space is checked with our messages before
            # SB3's bare assertions on it run.
            env = self._wrap_env(maybe_make_env(env, verbose), verbose)
            check_action_space(env.action_space)
            if use_sde and not isinstance(env.action_space, spaces.Box):
                raise ValueError(f"use_sde=True needs a Box action space, got {env.action_space}; accepted: use_sde=False")
        # SB3's OffPolicyAlgorithm takes the SAC keywords it knows; the rest are SAC's own, set below
        super().__init__(
            policy, env, learning_rate, buffer_size, learning_starts, batch_size, tau, gamma, train_freq, gradient_steps,
            action_noise, replay_buffer_class=replay_buffer_class, replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=optimize_memory_usage, n_steps=n_steps, policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size, tensorboard_log=tensorboard_log, verbose=verbose, device=device,
            seed=seed, use_sde=use_sde, sde_sample_freq=sde_sample_freq, use_sde_at_warmup=use_sde_at_warmup,
            support_multi_env=True,
        )  # fmt: skip
        self.ent_coef = ent_coef
        # target_entropy becomes the number in use (as in SB3); what the user asked for is kept to re-read schedules
        self._target_entropy_spec = target_entropy
        self.target_entropy = target_entropy
        self.target_entropy_scale = target_entropy_scale
        self.target_update_interval = target_update_interval
        self.policy_delay = policy_delay
        self.use_target_critic = use_target_critic
        if not use_target_critic:
            # the policy builds no target critic (SB3 hands use_sde to its policy the same way)
            self.policy_kwargs["use_target_critic"] = False
        self.on_divergence = on_divergence
        self.log_ent_coef: th.Tensor | None = None
        self.ent_coef_optimizer: th.optim.Optimizer | None = None
        self.monitor: TrainingMonitor
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        check_action_space(self.action_space)
        # again here: load() sets attributes without going through __init__
        check_target_entropy_scale(self.target_entropy_scale)
        super()._setup_model()
        self._create_aliases()
        self._update_target_entropy(reschedule=False)
        learned, init_value = parse_ent_coef(self.ent_coef)
        if learned:
            # alpha is optimised as log(alpha): positive by construction (see temperature_loss for the gradient)
            self.log_ent_coef = th.full((1,), math.log(init_value), device=self.device).requires_grad_(True)
            self.ent_coef_optimizer = build_optimizer(th.optim.Adam, [self.log_ent_coef], self.lr_schedule(1), {})
        else:
            self.ent_coef_tensor = th.tensor(init_value, device=self.device)
        self._setup_target_update()
        # chosen on the first update (_choose_gradient_path), once the batch's shapes are known
        self._fused: FusedGradients | None = None
        self._gradient_path: str | None = None
        not_logged = {
            "train/ent_coef_loss": self.ent_coef_optimizer is None,
            "train/tanh_saturation": not isinstance(self.action_space, spaces.Box),
        }
        self.monitor = TrainingMonitor(self.device, tuple(key for key, skip in not_logged.items() if skip))
        self.monitor.next_check = self._n_updates + self.monitor.check_interval

    def _update_target_entropy(self, reschedule: bool = True) -> None:
        """Resolve ``"auto"``; ``reschedule`` (in ``train()``, not at load): read a ``target_entropy_scale`` schedule."""
        args = (self.action_space, self.target_entropy_scale, self._current_progress_remaining, self._n_updates)
        if reschedule:
            self.target_entropy = current_target_entropy(self.target_entropy, self._target_entropy_spec, *args)
        else:
            self.target_entropy = resolve_target_entropy(self.target_entropy, *args)

    def _create_aliases(self) -> None:
        self.actor = self.policy.actor
        self.critic = self.policy.critic
        self.critic_target = self.policy.critic_target

    def _setup_target_update(self) -> None:
        """Parameter lists for the Polyak update, built once: the update is then one multi-tensor lerp."""
        target, critic = self.critic_target, self.critic
        # Running statistics (batch norm, observation normalisation) are copied, not averaged (SB3 issue #996)
        self._polyak_pairs: tuple[list[th.Tensor], list[th.Tensor], list[th.Tensor], list[th.Tensor]] = (
            ([], [], [], [])
            if target is None
            else (
                list(target.parameters()),
                list(critic.parameters()),
                get_parameters_by_name(target, ["running_"]),
                get_parameters_by_name(critic, ["running_"]),
            )
        )
        self._trained_critic_parameters = [p for group in self.critic.optimizer.param_groups for p in group["params"]]

    def _current_ent_coef(self) -> th.Tensor:
        """alpha as a constant of this update (the temperature loss is the only one that moves it)."""
        if self.log_ent_coef is not None:
            return self.log_ent_coef.detach().exp()
        return self.ent_coef_tensor

    def _critic_loss(self, data: ReplayBufferSamples, ent_coef: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """
        ``1/2 sum_i mean((Q_i(s, a) - y)^2)`` (SB3's scale) with ``y = r + gamma^n (1 - done) V(s')``, where
        ``V(s') = E_pi[min_i Qtarget_i(s', a') - alpha log pi(a'|s')]`` uses the current actor and the target
        critics (without target critics, the critics themselves: :meth:`SACPlusPolicy.td_terms`).

        :return: the loss and the mean Q-value of the batch (for logging)
        """
        current_q, next_value = self.policy.td_terms(data.observations, data.actions, data.next_observations, ent_coef)
        with th.no_grad():
            target_q = data.rewards + self._bootstrap_weights(data) * next_value
        return 0.5 * (current_q - target_q).pow(2).mean(dim=(1, 2)).sum(), current_q.detach().mean()

    def _bootstrap_weights(self, data: ReplayBufferSamples) -> th.Tensor:
        """``(1 - done) gamma^n`` per sample: the weight of ``V(s')`` in the target."""
        # n-step buffers give gamma^k per sample (k <= n when the episode ended early)
        discounts = data.discounts if data.discounts is not None else self.gamma
        return (1 - data.dones) * discounts

    def _actor_loss(self, observations: th.Tensor, ent_coef: th.Tensor) -> tuple[th.Tensor, SoftValue]:
        """
        ``-mean_s E_pi[min_i Q_i(s, a) - alpha log pi(a|s)]`` with the *current* critics at ``s``.

        The critic weights are frozen while the graph is built, so backward computes only the gradients the
        actor needs (SB3 computes the critics' weight gradients here and throws them away).

        :return: the loss and the soft value terms (``mean_log_prob`` is what the temperature needs)
        """
        for param in self._trained_critic_parameters:
            param.requires_grad_(False)
        try:
            soft = self.policy.soft_value(observations, self.critic, ent_coef)
        finally:
            for param in self._trained_critic_parameters:
                param.requires_grad_(True)
        return -soft.value.mean(), soft

    @staticmethod
    def _clear_gradients(optimizer: th.optim.Optimizer) -> None:
        for param in [p for group in optimizer.param_groups for p in group["params"]]:
            param.grad = None  # zero_grad(set_to_none=True), without its per-call profiler scope

    def _critic_gradients(self, data: ReplayBufferSamples, ent_coef: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """The critics' ``.grad`` of the critic loss (autograd, or :mod:`sac_plus.fused` where it was chosen);
        returns the loss and the mean Q-value."""
        if self._fused is not None:
            target_terms = (data.rewards, self._bootstrap_weights(data))
            return self._fused.critic_gradients(
                data.observations, data.actions, data.next_observations, target_terms, ent_coef
            )
        critic_loss, q_mean = self._critic_loss(data, ent_coef)
        critic_loss.backward()
        return critic_loss, q_mean

    def _actor_gradients(self, observations: th.Tensor, ent_coef: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor | None]:
        """The actor's ``.grad`` of the actor loss; returns the loss, ``E_pi[log pi]`` per state and the
        saturation (``None`` for Discrete actions)."""
        if self._fused is not None:
            return self._fused.actor_gradients(observations, ent_coef)
        actor_loss, soft = self._actor_loss(observations, ent_coef)
        actor_loss.backward()
        return actor_loss, soft.mean_log_prob, soft.saturation

    @property
    def gradient_path(self) -> str | None:
        """How the gradients are computed: ``"fused"`` (:mod:`sac_plus.fused`) or ``"autograd"``, chosen on the
        first update of the model (``None`` before it)."""
        return self._gradient_path

    def _choose_gradient_path(self, data: ReplayBufferSamples) -> None:
        """
        Keep :class:`~sac_plus.fused.FusedGradients` if it covers the policy and computes the gradients faster
        than autograd on this batch, here (measured once per process and network shape, see
        :func:`sac_plus.fused.faster_of`); otherwise autograd. ``SAC_PLUS_FUSED=on`` or ``off`` decides instead.
        """
        mode = fused_mode()
        overridden = any(getattr(type(self), name) is not getattr(SACPlus, name) for name in ("_critic_loss", "_actor_loss"))
        fused = None if overridden or mode == "off" else fused_gradients_for(self.policy)
        self._fused = fused
        if fused is not None and mode == "auto":

            def gradients(path: FusedGradients | None) -> None:
                self._fused = path
                self._critic_gradients(data, self._current_ent_coef())
                self._actor_gradients(data.observations, self._current_ent_coef())

            self._fused = faster_of(fused, gradients, self.policy, data.rewards.shape[0])
            for param in self.policy.parameters():
                param.grad = None
        self._gradient_path = "fused" if self._fused is not None else "autograd"
        if self.verbose >= 1:
            print(f"SACPlus: gradients computed by {self._gradient_path} (chosen by measurement)")

    def _gradient_step(self, data: ReplayBufferSamples, update_actor: bool = True) -> th.Tensor:
        """
        One update of the critics and, if ``update_actor``, of actor and temperature, all with the same alpha
        (taken before the update).

        :return: the statistics of :data:`sac_plus.monitor.TRAIN_STATS` as one detached tensor, so that logging
            costs no host synchronisation per update (statistics that do not apply are 0 and are not logged)
        """
        ent_coef = self._current_ent_coef()
        self._clear_gradients(self.critic.optimizer)
        critic_loss, q_mean = self._critic_gradients(data, ent_coef)
        step_optimizer(self.critic.optimizer)
        zero = th.zeros((), device=self.device)
        actor_loss = entropy = ent_coef_loss = saturation = zero
        if update_actor:
            actor_loss, entropy, ent_coef_loss, saturation = self._actor_and_temperature_step(data.observations, ent_coef)
        return th.stack([critic_loss, actor_loss, ent_coef.reshape(()), entropy, q_mean, ent_coef_loss, saturation]).detach()

    def _actor_and_temperature_step(
        self, observations: th.Tensor, ent_coef: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor, th.Tensor]:
        """Update the actor, then the temperature; return actor loss, entropy, temperature loss and saturation."""
        self._clear_gradients(self.actor.optimizer)
        actor_loss, mean_log_prob, saturation = self._actor_gradients(observations, ent_coef)
        step_optimizer(self.actor.optimizer)
        zero = th.zeros((), device=self.device)
        ent_coef_loss = zero
        if self.ent_coef_optimizer is not None:
            # both set together when alpha is learned (_setup_model); train() has resolved the target to a number
            assert self.log_ent_coef is not None and not isinstance(self.target_entropy, str)
            with th.no_grad():
                ent_coef_loss = temperature_loss(self.log_ent_coef, mean_log_prob, self.target_entropy)
            self.log_ent_coef.grad = temperature_gradient(self.log_ent_coef, mean_log_prob, self.target_entropy)
            step_optimizer(self.ent_coef_optimizer)
        return actor_loss, -mean_log_prob.mean(), ent_coef_loss, zero if saturation is None else saturation

    @th.no_grad()
    def _update_target_critics(self) -> None:
        """Polyak averaging ``target <- (1 - tau) target + tau critic`` as one multi-tensor operation."""
        destinations, sources, stats_destinations, stats_sources = self._polyak_pairs
        if not destinations:  # no target critics (use_target_critic=False)
            return
        th._foreach_lerp_(destinations, sources, self.tau)
        if stats_sources:
            th._foreach_copy_(stats_destinations, stats_sources)

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        self.policy.set_training_mode(True)
        optimizers = [self.actor.optimizer, self.critic.optimizer, self.ent_coef_optimizer]
        self._update_learning_rate([optimizer for optimizer in optimizers if optimizer is not None])
        self._update_target_entropy()
        first_update = self._n_updates
        stats, actor_updated = [], []
        for _ in range(gradient_steps):
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            if self._gradient_path is None:
                self._choose_gradient_path(data)
            if self.use_sde:
                # log_std may have changed since the last sample
                assert isinstance(self.actor, SquashedGaussianActor)  # gSDE is Box only
                self.actor.reset_noise()
            # the n-th update (counted from 1, across learn() calls) moves the actor when n % policy_delay == 0,
            # as sb3-contrib's CrossQ counts
            actor_updated.append((self._n_updates + 1) % self.policy_delay == 0)
            stats.append(self._gradient_step(data, actor_updated[-1]))
            # counted across learn() calls, unlike SB3 SAC which restarts the count in every train() call
            if self._n_updates % self.target_update_interval == 0:
                self._update_target_critics()
            self._n_updates += 1
        if first_update == 0 and self.verbose >= 1 and describe_kernel_choices():
            print(f"SACPlus: CPU matrix-product kernels chosen by measurement:\n{describe_kernel_choices()}")
        if stats:  # train(0) is a no-op, as SB3's
            self.monitor.record(th.stack(stats), first_update, actor_updated)
        if self.device.type == "cpu":
            # free on the CPU: the logger holds this window's means whenever anyone dumps it (e.g. EvalCallback),
            # as SB3 SAC's logger holds its last train() call's
            self._log_train_stats(new_window=False)
        self.logger.record("train/target_entropy", self.target_entropy)
        if self.monitor.check_due(self._n_updates):
            self._check_divergence()

    def learn(
        self: SelfSACPlus,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "SACPlus",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfSACPlus:
        return super().learn(total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps, progress_bar)

    def _on_step(self) -> None:
        """After each env step: a policy with running observation statistics (SimbaPolicy) adds what it observed."""
        super()._on_step()
        if self.policy.normalizes_observations and self._last_obs is not None:
            # the observations the policy acts on next (after VecNormalize, if any; reset ones where episodes ended)
            self.policy.update_observation_statistics(obs_as_tensor(self._last_obs, self.device))

    def save(
        self,
        path: str | os.PathLike | io.BufferedIOBase,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> None:
        """
        Save the model in SB3's zip format. A file path is written atomically: a save that fails midway
        leaves any previous file at ``path`` as it was.
        """
        checkpoint.write_atomically(path, "zip", lambda target: super(SACPlus, self).save(target, exclude, include))

    def save_as_sb3(self, path: str | pathlib.Path | io.BufferedIOBase) -> None:
        """
        Save a Box model as ``stable_baselines3.SAC`` would (SB3's own ``SACPolicy``, same weights, optimizer states
        and temperature), for ``SAC.load`` where ``sac_plus`` is not installed. See :mod:`sac_plus.sb3_format`.
        """
        sb3_format.save_as_sb3(self, path)

    def save_replay_buffer(self, path: str | pathlib.Path | io.BufferedIOBase) -> None:
        """Save the replay buffer as a pickle file, atomically when ``path`` is a file path (see :meth:`save`)."""
        checkpoint.write_atomically(path, "pkl", super().save_replay_buffer)

    def _excluded_save_params(self) -> list[str]:
        aliases_and_caches = [
            "actor", "critic", "critic_target", "_polyak_pairs", "_trained_critic_parameters", "_fused", "_gradient_path",
        ]  # fmt: skip
        return [*super()._excluded_save_params(), *aliases_and_caches]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts = ["policy", "actor.optimizer", "critic.optimizer"]
        if self.ent_coef_optimizer is not None:
            return [*state_dicts, "ent_coef_optimizer"], ["log_ent_coef"]
        return state_dicts, ["ent_coef_tensor"]

    @classmethod
    def load(
        cls: type[SelfSACPlus],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfSACPlus:
        """
        SB3's ``load`` (same arguments), after checking the file: a truncated or corrupted zip, a file that is no
        model, a model of another algorithm, or an ``env`` whose spaces differ from the saved ones raises a
        ``ValueError`` naming the file and what did not match. A zip saved by ``stable_baselines3.SAC`` is read as
        :meth:`load_from_sb3` reads it, with a warning.
        """
        kwargs = keep_given_target_entropy(kwargs)
        load = super().load
        return checkpoint.load_model(
            cls, load, path, False, env, device, custom_objects, print_system_info, force_reset, **kwargs
        )

    @classmethod
    def load_from_sb3(
        cls: type[SelfSACPlus],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfSACPlus:
        """
        Import an agent saved by ``stable_baselines3.SAC``: same hyperparameters, spaces, counters, weights,
        temperature and optimizer states (the state dicts are the same). Arguments as in :meth:`load`.
        """
        kwargs = keep_given_target_entropy(kwargs)
        load = super().load
        return checkpoint.load_model(cls, load, path, True, env, device, custom_objects, False, force_reset, **kwargs)


def _use_target_critic(use_target_critic: bool, policy_kwargs: dict[str, Any] | None) -> bool:
    """The algorithm's keyword, which the policy keyword of the same name (set by the algorithm) may not contradict."""
    if not isinstance(use_target_critic, bool | np.bool_):
        raise ValueError(f"use_target_critic={use_target_critic!r} is not valid; accepted: True or False")
    use_target_critic = bool(use_target_critic)
    in_policy = (policy_kwargs or {}).get("use_target_critic", use_target_critic)
    if in_policy != use_target_critic:
        raise ValueError(
            f"policy_kwargs['use_target_critic']={in_policy!r} contradicts use_target_critic={use_target_critic!r}; "
            "accepted: the algorithm's keyword alone (SACPlus(use_target_critic=False))"
        )
    return use_target_critic
