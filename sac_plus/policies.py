"""Networks of SACPlus and how each action kind takes expectations over actions.

The algorithm (``sac.py``) asks the actor one question, whatever the action kind:
"for these states, with this critic and this alpha, what are E_pi[min_i Q_i - alpha log pi] and E_pi[log pi]?"
(:meth:`SquashedGaussianActor.soft_value`, :meth:`CategoricalActor.soft_value`). Box actors answer with one
reparameterised sample, Discrete actors with the exact inner product over all actions.
"""

from __future__ import annotations

import functools
import numbers
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import SquashedDiagGaussianDistribution, StateDependentNoiseDistribution
from stable_baselines3.common.policies import BaseModel, BasePolicy
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.torch_layers import (
    BaseFeaturesExtractor,
    CombinedExtractor,
    FlattenExtractor,
    NatureCNN,
    get_actor_critic_arch,
)
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn
from torch.optim import optimizer as torch_optimizer

from sac_plus.distributions import (
    LOG_STD_MAX,
    LOG_STD_MIN,
    categorical_expectation,
    squashed_gaussian_log_prob,
)
from sac_plus.linear import MLP, Linear, check_matmul_dtype
from sac_plus.monitor import DivergenceError, check_finite_observation
from sac_plus.networks import BATCH_NORM_EPS, BATCH_NORM_MOMENTUM, RENORM_WARMUP_STEPS, NetworkSpec, final_linear
from sac_plus.normalization import RunningObservationNorm, batch_renorm_layers, frozen_statistics

INIT_SCHEMES = ("orthogonal", "pytorch")
# The name "orthogonal" had before 0.2; still read (with a warning) so that older configs keep working.
_RENAMED_INIT_SCHEMES = {"lecture": "orthogonal"}


# |a| above this counts as a saturated tanh unit: the gradient through tanh is then below 2% of its maximum
SATURATION_THRESHOLD = 0.99


class SoftValue(NamedTuple):
    """
    ``value`` = E_pi[min_i Q_i(s, a) - alpha log pi(a|s)] and ``mean_log_prob`` = E_pi[log pi(a|s)], each [B, 1];
    ``saturation``: Box only, the fraction of sampled action units with ``|tanh(n)| > 0.99`` (a diagnostic).
    """

    value: th.Tensor
    mean_log_prob: th.Tensor
    saturation: th.Tensor | None = None


class PolicySample(NamedTuple):
    """
    What an actor's expectations over actions are computed from (:meth:`BaseActor.sample`). Box: one sampled
    action per state ``actions`` ``[B, A]`` and its ``log_probs`` ``[B, 1]``. Discrete: no sample (``actions`` is
    ``None``), ``log_probs`` and ``probs`` of every action, ``[B, |A|]``.
    """

    actions: th.Tensor | None
    log_probs: th.Tensor
    probs: th.Tensor | None = None


ACCEPTED_ACTION_SPACES = "gymnasium.spaces.Box with finite bounds, or gymnasium.spaces.Discrete with start=0"


def check_action_space(action_space: spaces.Space) -> None:
    """Raise a clear error for an action space SACPlus cannot handle."""
    if isinstance(action_space, spaces.Box):
        if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
            raise ValueError(
                f"action_space={action_space} has non-finite bounds (low={action_space.low}, high={action_space.high}); "
                f"the squashed Gaussian is rescaled to the bounds, so they must be finite. Accepted: {ACCEPTED_ACTION_SPACES}"
            )
        return
    if isinstance(action_space, spaces.Discrete):
        if int(action_space.start) != 0:
            raise ValueError(f"action_space={action_space} starts at {action_space.start}; accepted: {ACCEPTED_ACTION_SPACES}")
        return
    raise TypeError(
        f"action_space={action_space} ({type(action_space).__name__}) is not supported; accepted: {ACCEPTED_ACTION_SPACES}"
    )


def check_init_scheme(init_scheme: str) -> str:
    if init_scheme in _RENAMED_INIT_SCHEMES:
        new_name = _RENAMED_INIT_SCHEMES[init_scheme]
        warnings.warn(f"init_scheme={init_scheme!r} is now called {new_name!r}", DeprecationWarning, stacklevel=3)
        return new_name
    if init_scheme not in INIT_SCHEMES:
        raise ValueError(f"init_scheme={init_scheme!r} is not understood; accepted: {', '.join(map(repr, INIT_SCHEMES))}")
    return init_scheme


def check_tanh_jacobian_eps(value: Any) -> float | None:
    """``None`` (the exact log-density) or a float in (0, 1), as a Python ``float``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ValueError(
            f"tanh_jacobian_eps={value!r} is not valid; accepted: None (the exact log-density) or a float in (0, 1), "
            "e.g. 1e-6 (SB3's)"
        )
    return float(value)


def check_positive_int(value: Any, name: str) -> int:
    """An integer >= 1 (numpy integers too, as SB3 accepts them), as a Python ``int``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}={value!r} is not valid; accepted: an integer >= 1")
    return int(value)


def build_optimizer(
    optimizer_class: Callable[..., th.optim.Optimizer], params, lr: float, optimizer_kwargs: dict[str, Any]
) -> th.optim.Optimizer:
    """
    ``optimizer_class(params, lr=lr, **optimizer_kwargs)``, with Adam and AdamW fused when the caller chose neither
    ``foreach`` nor ``fused`` and the device has fused kernels: one kernel for all parameters instead of ~10 small
    operations per parameter (about 5x cheaper per step on a CPU, the same update rule).

    :param optimizer_class: an optimizer class such as ``th.optim.Adam`` (typed as what it is called as: the base
        ``th.optim.Optimizer`` takes ``defaults``, not ``lr``)
    """
    params = list(params)
    if optimizer_class in (th.optim.Adam, th.optim.AdamW) and not {"foreach", "fused"} & optimizer_kwargs.keys():
        try:
            return optimizer_class(params, lr=lr, fused=True, **optimizer_kwargs)
        except RuntimeError:  # no fused kernel for this device or dtype (e.g. CPU before torch 2.4)
            return optimizer_class(params, lr=lr, foreach=True, **optimizer_kwargs)
    return optimizer_class(params, lr=lr, **optimizer_kwargs)


@functools.cache
def _has_fused_adam_kernel() -> bool:
    """Whether this torch has the fused Adam kernel with the float-``lr`` signature :func:`step_optimizer` calls."""
    op = getattr(th.ops.aten, "_fused_adam_", None)
    if op is None or not hasattr(op, "default"):
        return False
    names = {argument.name for argument in op.default._schema.arguments}
    return {"lr", "beta1", "beta2", "weight_decay", "eps", "amsgrad", "maximize"} <= names


def _lean_adam_lists(optimizer: th.optim.Optimizer) -> list[tuple[dict[str, Any], list[list[th.Tensor]]]] | None:
    """
    Per parameter group, the group and its tensor lists ``[params, grads, exp_avgs, exp_avg_sqs, steps]`` for one
    fused Adam kernel call, if ``optimizer`` is a plain ``th.optim.Adam`` in the state :func:`step_optimizer` can
    step the way ``step()`` would; otherwise ``None``. Built at every call from the optimizer's current state (a
    ``load_state_dict`` replaces the state tensors).
    """
    if type(optimizer) is not th.optim.Adam or not _has_fused_adam_kernel():
        return None
    if "step" in vars(optimizer):
        return None  # step() wrapped on this instance (e.g. by a torch learning-rate scheduler): call the wrapper
    hooks = [getattr(optimizer, f"_optimizer_step_{when}_hooks", None) for when in ("pre", "post")]
    hooks += [getattr(torch_optimizer, f"_global_optimizer_{when}_hooks", None) for when in ("pre", "post")]
    if any(registered is None or registered for registered in hooks):
        return None  # hooks run in step() (or this torch keeps them elsewhere)
    groups = []
    for group in optimizer.param_groups:
        flags = ("amsgrad", "maximize", "capturable", "differentiable", "decoupled_weight_decay")
        if not group.get("fused") or any(group.get(flag) for flag in flags):
            return None
        if not all(
            isinstance(value, numbers.Real) for value in (group["lr"], *group["betas"], group["eps"], group["weight_decay"])
        ):
            return None  # tensor learning rates or betas: step() handles them
        lists: list[list[th.Tensor]] = [[], [], [], [], []]
        for param in group["params"]:
            state = optimizer.state.get(param)
            if param.grad is None or param.grad.is_sparse or not state or param.device.type != "cpu":
                return None  # parameters without gradients, first step (state not built yet), other devices
            if param.dtype != group["params"][0].dtype:
                return None  # one kernel call per dtype: step() groups them
            tensors = (param, param.grad, state["exp_avg"], state["exp_avg_sq"], state["step"])
            for values, tensor in zip(lists, tensors, strict=True):
                values.append(tensor)
        groups.append((group, lists))
    return groups


def step_optimizer(optimizer: th.optim.Optimizer) -> None:
    """
    ``optimizer.step()``. For the fused ``th.optim.Adam`` :func:`build_optimizer` makes, on the CPU, the same kernel
    is called directly with the same arguments (tests/test_core.py checks that parameters and state come out bit for
    bit the same): ``step()``'s Python (profiler scope, hooks, state checks, grouping by device) costs about 0.1 ms
    per call there, a 256-wide matrix product's worth, and an update makes three of them. Anything else (another
    optimizer, hooks, a ``step`` wrapped on the instance as torch's learning-rate schedulers wrap it, AMSGrad, tensor
    learning rates, the first step) goes through ``step()``.
    """
    groups = _lean_adam_lists(optimizer)
    if groups is None:
        optimizer.step()
        return
    for group, (params, grads, exp_avgs, exp_avg_sqs, steps) in groups:
        if not params:
            continue  # a group without parameters (add_param_group of an empty list): step() does nothing there
        # steps += 1 with a tensor 1: on the CPU, foreach with a Python number wraps it in a tensor per step (3x slower)
        th._foreach_add_(steps, [th.ones((), dtype=steps[0].dtype)] * len(steps))
        beta1, beta2 = (float(beta) for beta in group["betas"])
        th._fused_adam_(
            params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=float(group["lr"]), beta1=beta1,
            beta2=beta2, weight_decay=float(group["weight_decay"]), eps=float(group["eps"]), maximize=False,
        )  # fmt: skip


class Critic(BaseModel):
    """
    ``n_critics`` Q-networks on one features extractor, stored as SB3's ``ContinuousCritic`` stores them
    (``qf0``, ``qf1``, ...; ``q_networks`` lists them), so SB3 SAC state dicts map one to one.

    Box actions: ``critic(obs, actions)`` returns a tuple of ``Q_i(s, a)``, each ``[B, 1]`` (SB3's return type).
    Discrete actions: ``critic(obs)`` returns a tuple of ``Q_i(s, .)``, each ``[B, |A|]``.

    :param observation_space: Observation space
    :param action_space: Action space (Box or Discrete)
    :param net_arch: Hidden layer widths of each Q-network
    :param features_extractor: Network to extract features
    :param features_dim: Number of features
    :param activation_fn: Activation function
    :param normalize_images: Whether to divide images by 255
    :param n_critics: Number of Q-networks
    :param share_features_extractor: Whether the features extractor is the actor's; if so, the critic loss
        does not train it (as in SB3)
    :param init_scheme: ``"orthogonal"`` or ``"pytorch"``, see :class:`SACPlusPolicy`
    :param network_kwargs: the other keywords of :class:`~sac_plus.networks.NetworkSpec` (``architecture``,
        ``batch_norm``, ``block_expansion``); ``None``: SB3's MLP
    """

    features_extractor: BaseFeaturesExtractor

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        net_arch: list[int],
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
        n_critics: int = 2,
        share_features_extractor: bool = True,
        init_scheme: str = "pytorch",
        network_kwargs: dict[str, Any] | None = None,
    ):
        super().__init__(
            observation_space,
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
        )
        network = NetworkSpec(activation_fn, init_scheme, **(network_kwargs or {}))
        self.takes_action = isinstance(action_space, spaces.Box)
        input_dim = features_dim + (get_action_dim(action_space) if self.takes_action else 0)
        if self.takes_action:
            output_dim = 1
        else:
            assert isinstance(action_space, spaces.Discrete)  # SACPlus's other action space (check_action_space)
            output_dim = int(action_space.n)
        self.n_critics = check_positive_int(n_critics, "n_critics")
        self.share_features_extractor = share_features_extractor
        self.q_networks: list[nn.Module] = []
        for index in range(self.n_critics):
            # laid out as SB3's create_mlp lays it out, so that its state-dict names (0.weight, 2.weight, ...) are SB3's
            body = network.body(input_dim, net_arch)
            q_net = MLP(*body, network.head(net_arch[-1] if net_arch else input_dim, output_dim))
            self.add_module(f"qf{index}", q_net)
            self.q_networks.append(q_net)

    def forward(self, obs: PyTorchObs, actions: th.Tensor | None = None) -> tuple[th.Tensor, ...]:
        # A shared features extractor is trained by the actor loss only (SB3's convention)
        with th.set_grad_enabled(not self.share_features_extractor):
            features = self.extract_features(obs, self.features_extractor)
        q_input = self._q_input(features, actions)
        return tuple(q_net(q_input) for q_net in self.q_networks)

    def q1_forward(self, obs: PyTorchObs, actions: th.Tensor | None = None) -> th.Tensor:
        """The first Q-network only, its features extractor not trained (SB3's ``q1_forward``, e.g. for TD3-style
        actor losses)."""
        with th.no_grad():
            features = self.extract_features(obs, self.features_extractor)
        return self.q_networks[0](self._q_input(features, actions))

    def _q_input(self, features: th.Tensor, actions: th.Tensor | None) -> th.Tensor:
        """What the Q-networks read: the features, followed by the actions for Box actions."""
        if not self.takes_action:
            return features
        assert actions is not None, "the critic of Box actions needs the actions"
        return th.cat([features, actions], dim=1)

    def min_q(self, obs: PyTorchObs, actions: th.Tensor | None = None) -> th.Tensor:
        """``min_i Q_i``: ``[B, 1]`` for Box actions, ``[B, |A|]`` for Discrete ones."""
        q_values = self(obs, actions)
        return q_values[0] if len(q_values) == 1 else th.stack(q_values).amin(dim=0)

    def q_of_actions(self, obs: PyTorchObs, actions: th.Tensor) -> tuple[th.Tensor, ...]:
        """``Q_i(s, a)`` of the given (buffer) actions, each ``[B, 1]``."""
        if self.takes_action:
            return self(obs, actions)
        return self._select(self(obs), actions)

    @staticmethod
    def _select(q_values: tuple[th.Tensor, ...], actions: th.Tensor) -> tuple[th.Tensor, ...]:
        """Discrete actions: ``Q_i(s, a)`` picked out of ``Q_i(s, .)``."""
        index = actions.long().reshape(-1, 1)
        return tuple(q_all.gather(1, index) for q_all in q_values)

    def joint_q(
        self, obs: PyTorchObs, actions: th.Tensor, next_obs: PyTorchObs, next_actions: th.Tensor | None
    ) -> tuple[tuple[th.Tensor, ...], th.Tensor]:
        """
        ``Q_i(s, a)`` of the buffer actions and ``min_i Q_i(s', a')`` (Discrete: ``min_i Q_i(s', .)``) from *one*
        forward pass over the batch ``[s; s']`` (CrossQ, Bhatt et al. 2024, section 3): batch normalisation in train
        mode then normalises both halves with the statistics of their mixture, the distribution the critic is
        asked about. ``next_actions``: Box only (``None`` for Discrete actions).
        """
        batch_size = actions.shape[0]
        both_obs = concat_observations(obs, next_obs)
        both_actions = th.cat([actions, next_actions], dim=0) if self.takes_action and next_actions is not None else None
        q_values = self(both_obs, both_actions)
        current = tuple(q[:batch_size] for q in q_values)
        if not self.takes_action:
            current = self._select(current, actions)
        next_q = [q[batch_size:] for q in q_values]
        return current, next_q[0] if len(next_q) == 1 else th.stack(next_q).amin(dim=0)


def concat_observations(first: PyTorchObs, second: PyTorchObs) -> PyTorchObs:
    """Two batches of observations as one (Dict observations key by key)."""
    if isinstance(first, dict):
        assert isinstance(second, dict)
        return {key: th.cat([first[key], second[key]], dim=0) for key in first}
    assert isinstance(second, th.Tensor)
    return th.cat([first, second], dim=0)


class BaseActor(BasePolicy):
    """
    What both actors share: features extractor, hidden layers ``latent_pi`` and the keywords SB3 saves.

    :param observation_space: Observation space
    :param action_space: Action space
    :param net_arch: Hidden layer widths
    :param features_extractor: Network to extract features
    :param features_dim: Number of features
    :param activation_fn: Activation function
    :param normalize_images: Whether to divide images by 255
    :param init_scheme: ``"orthogonal"`` or ``"pytorch"``, see :class:`SACPlusPolicy`
    :param squash_output: Whether actions are in [-1, 1] and rescaled to the Box bounds by SB3
    :param network_kwargs: see :class:`Critic`
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        net_arch: list[int],
        features_extractor: nn.Module,
        features_dim: int,
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
        init_scheme: str = "pytorch",
        squash_output: bool = False,
        network_kwargs: dict[str, Any] | None = None,
    ):
        super().__init__(
            observation_space,
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
            squash_output=squash_output,
        )
        self.net_arch = net_arch
        self.features_dim = features_dim
        self.activation_fn = activation_fn
        self.init_scheme = init_scheme
        self.network_kwargs = network_kwargs
        network = NetworkSpec(activation_fn, init_scheme, **(network_kwargs or {}))
        self.latent_pi = MLP(*network.body(features_dim, net_arch))
        self.latent_dim = net_arch[-1] if net_arch else features_dim

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                net_arch=self.net_arch,
                features_dim=self.features_dim,
                activation_fn=self.activation_fn,
                features_extractor=self.features_extractor,
                init_scheme=self.init_scheme,
                network_kwargs=self.network_kwargs,
            )
        )
        return data

    def latent(self, obs: PyTorchObs) -> th.Tensor:
        return self.latent_pi(self.extract_features(obs, self.features_extractor))

    def sample(self, obs: PyTorchObs) -> PolicySample:
        raise NotImplementedError

    def expectation(self, sample: PolicySample, min_q: th.Tensor, ent_coef: th.Tensor) -> SoftValue:
        """
        E_pi[min_i Q_i(s, a) - alpha log pi(a|s)] and E_pi[log pi(a|s)] from :meth:`sample`'s result and the
        critic's ``min_q`` at the sampled actions (Box) or at every action (Discrete).
        """
        raise NotImplementedError

    def soft_value(self, obs: PyTorchObs, critic: Critic, ent_coef: th.Tensor) -> SoftValue:
        """The soft value of ``obs`` under ``critic``: :meth:`expectation` of a :meth:`sample` at ``obs``."""
        sample = self.sample(obs)
        return self.expectation(sample, critic.min_q(obs, sample.actions), ent_coef)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self(observation, deterministic)


class SquashedGaussianActor(BaseActor):
    """
    Box actor: ``a = tanh(n)``, ``n ~ N(mu(s), sigma(s))``, log sigma clipped to [-20, 2]; deterministic
    action ``tanh(mu)``. With ``use_sde`` the noise is SB3's state-dependent exploration (gSDE).

    :param observation_space: Observation space
    :param action_space: Action space
    :param net_arch: Hidden layer widths
    :param features_extractor: Network to extract features
    :param features_dim: Number of features
    :param activation_fn: Activation function
    :param use_sde: Whether to use gSDE
    :param log_std_init: Initial log std of the gSDE noise
    :param full_std: gSDE: one std per (feature, action) pair instead of per feature
    :param use_expln: gSDE: use ``expln`` instead of ``exp`` for the std
    :param clip_mean: gSDE: clip the mean to [-clip_mean, clip_mean] (0 disables)
    :param normalize_images: Whether to divide images by 255
    :param init_scheme: ``"orthogonal"`` or ``"pytorch"``, see :class:`SACPlusPolicy`
    :param network_kwargs: see :class:`Critic`
    :param tanh_jacobian_eps: ``None`` (exact) or SB3's bound, see :class:`SACPlusPolicy`
    """

    action_space: spaces.Box

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        net_arch: list[int],
        features_extractor: nn.Module,
        features_dim: int,
        activation_fn: type[nn.Module] = nn.ReLU,
        use_sde: bool = False,
        log_std_init: float = -3,
        full_std: bool = True,
        use_expln: bool = False,
        clip_mean: float = 2.0,
        normalize_images: bool = True,
        init_scheme: str = "pytorch",
        network_kwargs: dict[str, Any] | None = None,
        tanh_jacobian_eps: float | None = None,
    ):
        super().__init__(
            observation_space,
            action_space,
            net_arch,
            features_extractor,
            features_dim,
            activation_fn,
            normalize_images,
            init_scheme,
            squash_output=True,
            network_kwargs=network_kwargs,
        )
        self.tanh_jacobian_eps = check_tanh_jacobian_eps(tanh_jacobian_eps)
        self.use_sde = use_sde
        self.log_std_init = log_std_init
        self.full_std = full_std
        self.use_expln = use_expln
        self.clip_mean = clip_mean

        action_dim = get_action_dim(action_space)
        self.action_dist: SquashedDiagGaussianDistribution | StateDependentNoiseDistribution
        self.log_std: nn.Module | nn.Parameter
        self.mu: nn.Module = final_linear(self.latent_dim, action_dim, init_scheme)
        if use_sde:
            self.action_dist = StateDependentNoiseDistribution(
                action_dim, full_std=full_std, use_expln=use_expln, learn_features=True, squash_output=True
            )
            self.log_std = nn.Parameter(
                th.ones(self.latent_dim, action_dim if full_std else 1) * log_std_init, requires_grad=True
            )
            self.action_dist.sample_weights(self.log_std)
            if clip_mean > 0:
                # gSDE is unstable with unbounded means; the same module as SB3's, so state dicts match (mu.0.weight)
                self.mu = nn.Sequential(self.mu, nn.Hardtanh(min_val=-clip_mean, max_val=clip_mean))
        else:
            # kept for SB3 code that reads actor.action_dist; sampling below does not go through it
            self.action_dist = SquashedDiagGaussianDistribution(action_dim)
            self.log_std = final_linear(self.latent_dim, action_dim, init_scheme)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                use_sde=self.use_sde,
                log_std_init=self.log_std_init,
                full_std=self.full_std,
                use_expln=self.use_expln,
                clip_mean=self.clip_mean,
                tanh_jacobian_eps=self.tanh_jacobian_eps,
            )
        )
        return data

    def _require_sde(self, method: str) -> None:
        if not self.use_sde:
            raise ValueError(f"{method}() needs use_sde=True: it belongs to gSDE's exploration (accepted: use_sde=True)")

    def _sde(self) -> tuple[StateDependentNoiseDistribution, nn.Parameter]:
        """gSDE's distribution and the log std of its exploration matrix (what ``use_sde=True`` builds)."""
        assert isinstance(self.action_dist, StateDependentNoiseDistribution) and isinstance(self.log_std, nn.Parameter)
        return self.action_dist, self.log_std

    def get_std(self) -> th.Tensor:
        """gSDE: the standard deviation of the exploration matrix's entries (SB3's ``Actor.get_std``)."""
        self._require_sde("get_std")
        action_dist, log_std = self._sde()
        return action_dist.get_std(log_std)

    def reset_noise(self, batch_size: int = 1) -> None:
        """Sample a new gSDE exploration matrix."""
        self._require_sde("reset_noise")
        action_dist, log_std = self._sde()
        action_dist.sample_weights(log_std, batch_size=batch_size)

    def get_action_dist_params(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor, dict[str, th.Tensor]]:
        """
        SB3's ``Actor.get_action_dist_params``: the mean of the pre-tanh Gaussian, its log std (clipped to
        [-20, 2]) and, with gSDE, ``dict(latent_sde=...)``, where the log std is that of the exploration matrix.
        """
        latent = self.latent(obs)
        mean = self.mu(latent)
        if self.use_sde:
            return mean, self._sde()[1], dict(latent_sde=latent)
        assert isinstance(self.log_std, nn.Module)  # without gSDE, a layer of the latent
        return mean, self.log_std(latent).clamp(LOG_STD_MIN, LOG_STD_MAX), {}

    def sample_pre_tanh(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """Reparameterised pre-tanh sample ``n`` with the mean and log std of its Gaussian."""
        mean, log_std, kwargs = self.get_action_dist_params(obs)
        if self.use_sde:
            # gSDE noise is latent @ E, E ~ N(0, std^2): Gaussian per state with variance latent^2 @ std^2
            latent = kwargs["latent_sde"]
            action_dist = self._sde()[0]
            dist = action_dist.proba_distribution(mean, log_std, latent)
            return mean + action_dist.get_noise(latent), mean, th.log(dist.distribution.stddev)
        return mean + th.exp(log_std) * th.randn_like(mean), mean, log_std

    def _sample_with_log_prob(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:
        """Action in [-1, 1] and its log-probability ``[B, 1]``, computed from the pre-tanh value."""
        pre_tanh, mean, log_std = self.sample_pre_tanh(obs)
        return th.tanh(pre_tanh), squashed_gaussian_log_prob(pre_tanh, mean, log_std, self.tanh_jacobian_eps)

    def action_log_prob(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:
        """Sampled action in [-1, 1] and its log-probability, shape ``[B]`` (SB3's return types)."""
        actions, log_prob = self._sample_with_log_prob(obs)
        return actions, log_prob.squeeze(-1)

    def sample(self, obs: PyTorchObs) -> PolicySample:
        """One reparameterised sample per state: gradients reach the actor through the action."""
        actions, log_prob = self._sample_with_log_prob(obs)
        return PolicySample(actions, log_prob)

    def expectation(self, sample: PolicySample, min_q: th.Tensor, ent_coef: th.Tensor) -> SoftValue:
        """The one-sample estimate ``min_q - alpha log pi(a|s)`` (``min_q`` at the sampled actions)."""
        assert sample.actions is not None
        saturation = (sample.actions.detach().abs() > SATURATION_THRESHOLD).float().mean()
        return SoftValue(min_q - ent_coef * sample.log_probs, sample.log_probs, saturation)

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        if deterministic:
            return th.tanh(self.mu(self.latent(obs)))
        return th.tanh(self.sample_pre_tanh(obs)[0])


class CategoricalActor(BaseActor):
    """
    Discrete actor: logits over |A| actions; expectations are exact sums with ``softmax`` probabilities and
    ``log_softmax`` log-probabilities; deterministic action ``argmax``. Keywords: see :class:`BaseActor`.
    """

    action_space: spaces.Discrete

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.logits = final_linear(self.latent_dim, int(self.action_space.n), self.init_scheme)

    def action_logits(self, obs: PyTorchObs) -> th.Tensor:
        return self.logits(self.latent(obs))

    def sample(self, obs: PyTorchObs) -> PolicySample:
        """``pi(.|s)`` and ``log pi(.|s)`` over all actions (no action is drawn: expectations are exact)."""
        log_probs = th.log_softmax(self.action_logits(obs), dim=-1)
        return PolicySample(None, log_probs, log_probs.exp())

    def expectation(self, sample: PolicySample, min_q: th.Tensor, ent_coef: th.Tensor) -> SoftValue:
        """Exact expectations ``pi(.|s)^T F(s, .)`` over all actions (Christodoulou 2019, eq. 10 and 12)."""
        assert sample.probs is not None
        return SoftValue(
            categorical_expectation(sample.probs, min_q - ent_coef * sample.log_probs),
            categorical_expectation(sample.probs, sample.log_probs),
        )

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        """Actions ``[B]``; ``-1`` where the logits are non-finite (diverged weights), which ``predict`` reports."""
        logits = self.action_logits(obs)
        finite = th.isfinite(logits).all(dim=-1)
        if deterministic:
            actions = logits.argmax(dim=-1)
        else:
            # non-finite rows sample from zeros (uniform) instead: torch.multinomial would fail on them, on a GPU
            # with a device-side assert that no DivergenceError can follow
            safe_logits = th.where(finite.unsqueeze(-1), logits, th.zeros_like(logits))
            actions = th.multinomial(th.softmax(safe_logits, dim=-1), 1).squeeze(-1)
        return th.where(finite, actions, th.full_like(actions, -1))


SACPlusActor = SquashedGaussianActor | CategoricalActor


class SACPlusPolicy(BasePolicy):
    """
    Actor, critics and target critics of SACPlus, for Box and Discrete action spaces, with SB3 SACPolicy's
    modules and state-dict names.

    :param observation_space: Observation space
    :param action_space: Action space (``Box`` with finite bounds, or ``Discrete``)
    :param lr_schedule: Learning rate schedule (could be constant)
    :param net_arch: Hidden layer widths, a list for both networks or ``dict(pi=[...], qf=[...])``
        (default ``[256, 256]``)
    :param activation_fn: Activation function
    :param use_sde: Whether to use gSDE (Box only)
    :param log_std_init: Initial log std of the gSDE noise
    :param use_expln: gSDE: use ``expln`` instead of ``exp`` for the std
    :param clip_mean: gSDE: clip the Gaussian mean to [-clip_mean, clip_mean]
    :param features_extractor_class: Features extractor to use
    :param features_extractor_kwargs: Keyword arguments to pass to the features extractor
    :param normalize_images: Whether to divide images by 255
    :param optimizer_class: The optimizer to use, ``th.optim.Adam`` by default
    :param optimizer_kwargs: Additional keyword arguments, excluding the learning rate, for the optimizer.
        Adam and AdamW are fused where the device allows, unless ``foreach`` or ``fused`` is given
        (see :func:`build_optimizer`).
    :param n_critics: Number of critic networks
    :param share_features_extractor: Whether the critic uses the actor's features extractor
    :param init_scheme: ``"pytorch"`` (default): PyTorch's default for every layer (what SB3 does);
        ``"orthogonal"``: hidden layers orthogonal (gain sqrt(2)) with zero bias and final layers uniform in +-3e-3
        (Lillicrap et al. 2016, https://arxiv.org/abs/1509.02971). The default follows the ablation in
        benchmarks/RESULTS.md: with two hidden layers both learn Pendulum-v1 alike, with one hidden layer of 256
        ``"orthogonal"`` failed on every seed (about -1400 after 20k steps) and
        ``"pytorch"`` did not (about -120).
    :param matmul_dtype: ``"float32"`` (default) or ``"bfloat16"``: the matrix products of every layer of actor
        and critics take bfloat16 inputs (8 bits of mantissa instead of 23) and accumulate in float32; weights,
        gradients, optimizer states, biases and activations stay float32. About twice as fast per product on CPUs
        with bfloat16 units (AVX512-BF16, AMX) and GPUs; it changes the numbers of every update (relative
        rounding of about 0.4% per input), see benchmarks/RESULTS.md for its effect on learning.
    :param architecture: ``"mlp"`` (default, SB3's) or ``"simba"``: residual blocks with pre-LayerNorm, where
        ``net_arch`` lists one width per block (see :mod:`sac_plus.networks`; :class:`SimbaPolicy` sets it)
    :param block_expansion: ``"simba"`` only: width multiplier inside a residual block
    :param batch_norm: batch renormalisation before every layer of actor and critics (CrossQ; see
        :class:`~sac_plus.normalization.BatchRenorm`); used in train mode by the updates (the critic's target and
        the actor loss read running statistics) and in eval mode when acting. :class:`CrossQPolicy` sets it.
    :param batch_norm_momentum: weight of each batch in the running statistics
    :param batch_norm_eps: added to the variances for numerical stability
    :param renorm_warmup_steps: train-mode batches before the running statistics correct the batch's
    :param use_target_critic: ``False``: no target critic; the algorithm sets it from its own keyword
        (``SACPlus(use_target_critic=False)``), as SB3 sets ``use_sde``
    :param tanh_jacobian_eps: Box only (no effect on Discrete actions). ``None`` (default): the exact
        log-density of ``a = tanh(n)``, with ``log(1 - tanh(n)^2)`` computed from ``n``; a float ``eps``:
        ``log(1 - a^2 + eps)`` computed from the action, as SB3's SAC and sb3-contrib's CrossQ do with
        ``eps = 1e-6`` (:func:`~sac_plus.distributions.squashed_gaussian_log_prob`). The two differ only for
        saturated samples, where SB3's bound stops the entropy term from pulling the pre-tanh value back toward 0;
        with batch-normalised actors (CrossQ) such samples are frequent from the start
    """

    actor: SACPlusActor
    critic: Critic
    critic_target: Critic | None

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        use_sde: bool = False,
        log_std_init: float = -3,
        use_expln: bool = False,
        clip_mean: float = 2.0,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        n_critics: int = 2,
        share_features_extractor: bool = False,
        init_scheme: str = "pytorch",
        matmul_dtype: str = "float32",
        architecture: str = "mlp",
        block_expansion: int = 4,
        batch_norm: bool = False,
        batch_norm_momentum: float = BATCH_NORM_MOMENTUM,
        batch_norm_eps: float = BATCH_NORM_EPS,
        renorm_warmup_steps: int = RENORM_WARMUP_STEPS,
        use_target_critic: bool = True,
        tanh_jacobian_eps: float | None = None,
    ):
        super().__init__(
            observation_space,
            action_space,
            features_extractor_class,
            features_extractor_kwargs,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            squash_output=isinstance(action_space, spaces.Box),
            normalize_images=normalize_images,
        )
        if use_sde and not isinstance(action_space, spaces.Box):
            raise ValueError(f"use_sde=True needs a Box action space; got {action_space}. Accepted: use_sde=False")
        if net_arch is None:
            net_arch = [256, 256]
        actor_arch, critic_arch = get_actor_critic_arch(net_arch)
        self.net_arch = net_arch
        self.activation_fn = activation_fn
        self.use_sde = use_sde
        self.log_std_init = log_std_init
        self.use_expln = use_expln
        self.clip_mean = clip_mean
        self.n_critics = check_positive_int(n_critics, "n_critics")
        self.share_features_extractor = share_features_extractor
        self.init_scheme = init_scheme = check_init_scheme(init_scheme)
        self.architecture = architecture
        self.block_expansion = check_positive_int(block_expansion, "block_expansion")
        self.batch_norm = bool(batch_norm)
        self.batch_norm_momentum = batch_norm_momentum
        self.batch_norm_eps = batch_norm_eps
        self.renorm_warmup_steps = renorm_warmup_steps
        self.use_target_critic = bool(use_target_critic)
        self.tanh_jacobian_eps = check_tanh_jacobian_eps(tanh_jacobian_eps)
        batch_norm_kwargs = None
        if batch_norm:
            batch_norm_kwargs = dict(
                batch_norm_momentum=batch_norm_momentum,
                batch_norm_eps=batch_norm_eps,
                renorm_warmup_steps=renorm_warmup_steps,
            )
        network_kwargs: dict[str, Any] = dict(
            architecture=architecture, batch_norm=batch_norm_kwargs, block_expansion=block_expansion
        )
        NetworkSpec(activation_fn, init_scheme, **network_kwargs)  # fail here, naming the policy keyword
        common = dict(
            observation_space=self.observation_space,
            action_space=self.action_space,
            activation_fn=activation_fn,
            normalize_images=normalize_images,
            init_scheme=init_scheme,
            network_kwargs=network_kwargs,
        )
        self.actor_kwargs = dict(common, net_arch=actor_arch)
        if isinstance(action_space, spaces.Box):
            self.actor_kwargs.update(
                use_sde=use_sde,
                log_std_init=log_std_init,
                use_expln=use_expln,
                clip_mean=clip_mean,
                tanh_jacobian_eps=self.tanh_jacobian_eps,
            )
        self.critic_kwargs = dict(
            common, net_arch=critic_arch, n_critics=self.n_critics, share_features_extractor=share_features_extractor
        )
        self.matmul_dtype = check_matmul_dtype(matmul_dtype)
        self._build(lr_schedule)
        for module in self.modules():
            if isinstance(module, Linear):
                module.bf16 = self.matmul_dtype == "bfloat16"

    def _build(self, lr_schedule: Schedule) -> None:
        self.actor = self.make_actor()
        self.actor.optimizer = build_optimizer(
            self.optimizer_class, self.actor.parameters(), lr_schedule(1), self.optimizer_kwargs
        )
        if self.share_features_extractor:
            self.critic = self.make_critic(features_extractor=self.actor.features_extractor)
            # the shared extractor is the actor's to train (see Critic.forward)
            critic_parameters = [p for name, p in self.critic.named_parameters() if "features_extractor" not in name]
        else:
            self.critic = self.make_critic()
            critic_parameters = list(self.critic.parameters())
        self.critic.optimizer = build_optimizer(self.optimizer_class, critic_parameters, lr_schedule(1), self.optimizer_kwargs)
        self.critic_target = None
        if self.use_target_critic:
            # The target never shares its extractor and is never trained by gradients: only Polyak-averaged.
            self.critic_target = self.make_critic()
            self.critic_target.load_state_dict(self.critic.state_dict())
            self.critic_target.requires_grad_(False)
            self.critic_target.set_training_mode(False)

    def make_actor(self, features_extractor: BaseFeaturesExtractor | None = None) -> SACPlusActor:
        kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)
        actor_class = SquashedGaussianActor if isinstance(self.action_space, spaces.Box) else CategoricalActor
        return actor_class(**kwargs).to(self.device)

    def make_critic(self, features_extractor: BaseFeaturesExtractor | None = None) -> Critic:
        kwargs = self._update_features_extractor(self.critic_kwargs, features_extractor)
        return Critic(**kwargs).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                net_arch=self.net_arch,
                activation_fn=self.activation_fn,
                use_sde=self.use_sde,
                log_std_init=self.log_std_init,
                use_expln=self.use_expln,
                clip_mean=self.clip_mean,
                n_critics=self.n_critics,
                lr_schedule=self._dummy_schedule,  # not needed to load the policy alone
                optimizer_class=self.optimizer_class,
                optimizer_kwargs=self.optimizer_kwargs,
                features_extractor_class=self.features_extractor_class,
                features_extractor_kwargs=self.features_extractor_kwargs,
                share_features_extractor=self.share_features_extractor,
                init_scheme=self.init_scheme,
                matmul_dtype=self.matmul_dtype,
                architecture=self.architecture,
                block_expansion=self.block_expansion,
                batch_norm=self.batch_norm,
                batch_norm_momentum=self.batch_norm_momentum,
                batch_norm_eps=self.batch_norm_eps,
                renorm_warmup_steps=self.renorm_warmup_steps,
                use_target_critic=self.use_target_critic,
                tanh_jacobian_eps=self.tanh_jacobian_eps,
            )
        )
        return data

    def soft_value(self, obs: PyTorchObs, critic: Critic, ent_coef: th.Tensor) -> SoftValue:
        """
        E_pi[min_i Q_i(s, a) - alpha log pi(a|s)] and E_pi[log pi(a|s)] for the states ``obs`` (the actor loss
        and the temperature's); the critic's batch normalisation, if any, reads its running statistics (CrossQ).
        """
        with frozen_statistics(batch_renorm_layers(critic)):
            return self.actor.soft_value(obs, critic, ent_coef)

    def td_terms(
        self, obs: PyTorchObs, actions: th.Tensor, next_obs: PyTorchObs, ent_coef: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor]:
        """
        What the critic loss compares: ``Q_i(s, a)`` of the buffer actions, stacked ``[n_critics, B, 1]`` (with
        gradients), and the soft value ``V(s') = E_pi[min_i Q_i(s', a') - alpha log pi(a'|s')]`` ``[B, 1]``
        (without). With a target critic, ``V(s')`` is the target's; without (``use_target_critic=False``,
        CrossQ), the critic's own, from the same forward pass as ``Q_i(s, a)`` (:meth:`Critic.joint_q`).
        The next actions are drawn with the actor's batch normalisation reading its running statistics.
        """
        with th.no_grad(), frozen_statistics(batch_renorm_layers(self.actor)):
            next_sample = self.actor.sample(next_obs)
        if self.critic_target is not None:
            with th.no_grad():
                next_min_q = self.critic_target.min_q(next_obs, next_sample.actions)
            current_q = self.critic.q_of_actions(obs, actions)
        else:
            current_q, next_min_q = self.critic.joint_q(obs, actions, next_obs, next_sample.actions)
        with th.no_grad():
            next_value = self.actor.expectation(next_sample, next_min_q.detach(), ent_coef).value
        return th.stack(current_q), next_value

    def update_observation_statistics(self, observations: PyTorchObs) -> None:
        """
        Add observations the agent has seen to every :class:`~sac_plus.normalization.RunningObservationNorm` of
        actor, critics and target critics (SimBa's RSNorm); nothing for other features extractors.
        """
        assert isinstance(observations, th.Tensor)  # RunningObservationNorm takes Box observations only
        for normalizer in self._observation_normalizers():
            normalizer.update(observations)

    @property
    def normalizes_observations(self) -> bool:
        """Whether a features extractor keeps running observation statistics (see :meth:`update_observation_statistics`)."""
        return bool(self._observation_normalizers())

    def _observation_normalizers(self) -> list[RunningObservationNorm]:
        cached = self.__dict__.get("_normalizer_cache")
        if cached is None or cached[0] is not self.actor or cached[1] is not self.critic:
            cached = (self.actor, self.critic, [m for m in self.modules() if isinstance(m, RunningObservationNorm)])
            self.__dict__["_normalizer_cache"] = cached
        return cached[2]

    def reset_noise(self, batch_size: int = 1) -> None:
        """Sample a new gSDE exploration matrix."""
        if not isinstance(self.actor, SquashedGaussianActor):
            # gSDE is Box only: a CategoricalActor has no reset_noise (the error nn.Module's lookup of it raises)
            raise AttributeError(f"'{type(self.actor).__name__}' object has no attribute 'reset_noise'")
        self.actor.reset_noise(batch_size=batch_size)

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self._predict(obs, deterministic=deterministic)

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """
        SB3's ``predict``, refusing a non-finite observation (``ValueError``) and non-finite policy outputs
        (:class:`~sac_plus.monitor.DivergenceError`) instead of returning NaN or arbitrary actions.
        """
        check_finite_observation(observation)
        actions, state = super().predict(observation, state, episode_start, deterministic)
        if not np.all(np.isfinite(actions)) or (isinstance(self.action_space, spaces.Discrete) and np.any(actions < 0)):
            raise DivergenceError(
                "the policy's outputs are non-finite (NaN or inf): its weights have diverged. Load a checkpoint "
                "saved before the divergence."
            )
        return actions, state

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self.actor(observation, deterministic)

    def set_training_mode(self, mode: bool) -> None:
        """
        SB3's ``set_training_mode`` on the actor and the critics: every module's ``training`` flag becomes
        ``mode``, and modules with a ``train()`` of their own (batch norm, dropout, custom ones) get it called.
        SAC switches modes at every env step (eval to act, train to update); ``nn.Module.train`` walks the module
        tree through ``__setattr__`` each time, which costs more than the flag it sets.
        """
        for module, own_train in self._mode_modules():
            if own_train:
                module.train(mode)
            else:
                module.__dict__["training"] = mode
        self.training = mode

    def _mode_modules(self) -> list[tuple[nn.Module, bool]]:
        """
        The actor's and critics' modules, each with whether its class has its own ``train()``; cached for this
        actor and critic (a module assigned into them afterwards is not seen: assign a new actor or critic instead).
        """
        cached = self.__dict__.get("_mode_module_cache")
        if cached is None or cached[0] is not self.actor or cached[1] is not self.critic:
            modules = [*self.actor.modules(), *self.critic.modules()]
            cached = (self.actor, self.critic, [(m, type(m).train is not nn.Module.train) for m in modules])
            self.__dict__["_mode_module_cache"] = cached
        return cached[2]


MlpPolicy = SACPlusPolicy


class CnnPolicy(SACPlusPolicy):
    """:class:`SACPlusPolicy` for image observations: SB3's ``NatureCNN`` features extractor by default."""

    def __init__(self, *args: Any, features_extractor_class: type[BaseFeaturesExtractor] = NatureCNN, **kwargs: Any):
        super().__init__(*args, **{**kwargs, "features_extractor_class": features_extractor_class})


class MultiInputPolicy(SACPlusPolicy):
    """:class:`SACPlusPolicy` for Dict observations: SB3's ``CombinedExtractor`` by default."""

    def __init__(self, *args: Any, features_extractor_class: type[BaseFeaturesExtractor] = CombinedExtractor, **kwargs: Any):
        super().__init__(*args, **{**kwargs, "features_extractor_class": features_extractor_class})


class CrossQPolicy(SACPlusPolicy):
    """
    :class:`SACPlusPolicy` with batch renormalisation in actor and critics (``batch_norm=True``), the networks of
    CrossQ (Bhatt et al. 2024, https://arxiv.org/abs/1902.05605) as sb3-contrib's ``CrossQ`` builds them; the rest
    of the method (no target critic, actor delay, Adam's beta1) is the algorithm's: ``sac_plus.presets.CROSSQ``.
    """

    def __init__(self, *args: Any, batch_norm: bool = True, **kwargs: Any):
        super().__init__(*args, **{**kwargs, "batch_norm": batch_norm})


class SimbaPolicy(SACPlusPolicy):
    """
    :class:`SACPlusPolicy` with SimBa's networks (Lee et al. 2025, https://arxiv.org/abs/2410.09754): observations
    standardised by running statistics (:class:`~sac_plus.normalization.RunningObservationNorm`), residual blocks
    with pre-LayerNorm, a LayerNorm before each head. ``net_arch`` lists one width per block; the default is
    SimBa's for SAC, one block of 128 for the actor, two blocks of 512 for each critic.
    """

    def __init__(
        self,
        *args: Any,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        features_extractor_class: type[BaseFeaturesExtractor] = RunningObservationNorm,
        architecture: str = "simba",
        **kwargs: Any,
    ):
        if net_arch is None:
            net_arch = dict(pi=[128], qf=[512, 512])
        kwargs.update(net_arch=net_arch, features_extractor_class=features_extractor_class, architecture=architecture)
        super().__init__(*args, **kwargs)
