"""Networks of SACPlus and how each action kind takes expectations over actions.

The algorithm (``sac.py``) asks the actor one question, whatever the action kind:
"for these states, with this critic and this alpha, what are E_pi[min_i Q_i - alpha log pi] and E_pi[log pi]?"
(:meth:`SquashedGaussianActor.soft_value`, :meth:`CategoricalActor.soft_value`). Box actors answer with one
reparameterised sample, Discrete actors with the exact inner product over all actions.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, NamedTuple

import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import StateDependentNoiseDistribution
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

from sac_plus.distributions import (
    LOG_STD_MAX,
    LOG_STD_MIN,
    categorical_expectation,
    squashed_gaussian_log_prob,
)
from sac_plus.linear import Linear, linear

INIT_SCHEMES = ("lecture", "pytorch")


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


def check_init_scheme(init_scheme: str) -> str:
    if init_scheme not in INIT_SCHEMES:
        raise ValueError(f"init_scheme={init_scheme!r} is not understood; accepted: {', '.join(map(repr, INIT_SCHEMES))}")
    return init_scheme


def init_hidden_(weight: th.Tensor, bias: th.Tensor) -> None:
    """Hidden layers: orthogonal with the ReLU gain sqrt(2), zero bias (keeps activations' scale through depth)."""
    nn.init.orthogonal_(weight, gain=math.sqrt(2.0))
    nn.init.zeros_(bias)


def init_final_(weight: th.Tensor, bias: th.Tensor) -> None:
    """
    Final layers: uniform in +-3e-3 (Lillicrap et al. 2016), so initial Q-values and policy means are near 0
    and the initial log std is near 0 whatever the hidden features are.
    """
    nn.init.uniform_(weight, -3e-3, 3e-3)
    nn.init.uniform_(bias, -3e-3, 3e-3)


def mlp(input_dim: int, net_arch: list[int], activation_fn: type[nn.Module], init_scheme: str) -> nn.Sequential:
    """Hidden layers only (the heads are added by the caller), initialised by ``init_scheme``."""
    layers: list[nn.Module] = []
    for width in net_arch:
        layer = Linear(input_dim, width)
        if init_scheme == "lecture":
            init_hidden_(layer.weight, layer.bias)
        layers += [layer, activation_fn()]
        input_dim = width
    return nn.Sequential(*layers)


def final_linear(input_dim: int, output_dim: int, init_scheme: str) -> nn.Linear:
    layer = Linear(input_dim, output_dim)
    if init_scheme == "lecture":
        init_final_(layer.weight, layer.bias)
    return layer


def build_optimizer(
    optimizer_class: type[th.optim.Optimizer], params, lr: float, optimizer_kwargs: dict[str, Any]
) -> th.optim.Optimizer:
    """
    ``optimizer_class(params, lr=lr, **optimizer_kwargs)``, with Adam and AdamW fused when the caller chose neither
    ``foreach`` nor ``fused`` and the device has fused kernels: one kernel for all parameters instead of ~10 small
    operations per parameter (about 5x cheaper per step on a CPU, the same update rule).
    """
    params = list(params)
    if optimizer_class in (th.optim.Adam, th.optim.AdamW) and not {"foreach", "fused"} & optimizer_kwargs.keys():
        try:
            return optimizer_class(params, lr=lr, fused=True, **optimizer_kwargs)
        except RuntimeError:  # no fused kernel for this device or dtype (e.g. CPU before torch 2.4)
            return optimizer_class(params, lr=lr, foreach=True, **optimizer_kwargs)
    return optimizer_class(params, lr=lr, **optimizer_kwargs)


class EnsembleLinear(nn.Module):
    """
    ``n`` independent linear layers evaluated as one batched matrix product.

    Weight shape ``[n, in, out]``. Input ``[B, in]`` (the same batch for every member) or ``[n, B, in]``;
    output ``[n, B, out]``. The optimizer and the Polyak update see one tensor per layer instead of one per
    critic. :meth:`members` splits the layer into one ``(weight, bias)`` per member, for :class:`EnsembleMLP`'s CPU path.
    """

    def __init__(self, n: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(th.empty(n, in_features, out_features))
        self.bias = nn.Parameter(th.empty(n, 1, out_features))
        # PyTorch's nn.Linear default, member by member: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: th.Tensor) -> th.Tensor:
        """All members at once: ``[B, in]`` or ``[n, B, in]`` -> ``[n, B, out]``."""
        n = self.weight.shape[0]
        return th.baddbmm(self.bias, x.expand(n, *x.shape) if x.dim() == 2 else x, self.weight)

    def members(self) -> list[tuple[th.Tensor, th.Tensor]]:
        """
        Every member's ``(weight [out, in], bias [out])`` as views, for :func:`sac_plus.linear.linear`.

        ``unbind`` rather than one ``weight[i]`` per member: the backward of ``unbind`` stacks the members'
        gradients in one copy, while each ``weight[i]`` backward fills a zero tensor of the whole ``[n, in, out]``
        weight and adds it up (measured: 0.4 ms of a 4.2 ms update at 256 x 256, 2 threads).
        """
        return list(zip((w.T for w in self.weight.unbind(0)), self.bias.squeeze(1).unbind(0), strict=True))

    def extra_repr(self) -> str:
        n, in_features, out_features = self.weight.shape
        return f"n={n}, in_features={in_features}, out_features={out_features}"


class EnsembleMLP(nn.Module):
    """``n`` MLPs of the same shape, batched: ``[B, in] -> [n, B, out]``."""

    def __init__(
        self,
        n: int,
        input_dim: int,
        net_arch: list[int],
        output_dim: int,
        activation_fn: type[nn.Module],
        init_scheme: str,
    ):
        super().__init__()
        self.n = n
        dims = [input_dim, *net_arch]
        layers: list[nn.Module] = []
        for in_dim, out_dim in itertools.pairwise(dims):
            layers += [self._layer(n, in_dim, out_dim, init_scheme, init_hidden_), activation_fn()]
        layers.append(self._layer(n, dims[-1], output_dim, init_scheme, init_final_))
        self.net = nn.Sequential(*layers)

    @staticmethod
    def _layer(n: int, in_dim: int, out_dim: int, init_scheme: str, init_fn) -> EnsembleLinear:
        layer = EnsembleLinear(n, in_dim, out_dim)
        if init_scheme == "lecture":
            for member in range(n):
                # transpose: the member's [in, out] weight acts like nn.Linear's [out, in]
                init_fn(layer.weight.data[member].T, layer.bias.data[member, 0])
        return layer

    def forward(self, x: th.Tensor) -> th.Tensor:
        if x.device.type != "cpu":
            return self.net(x)  # one batched product per layer for all members
        # On the CPU, one chain per member, stacked at the end: measured faster here (forward + backward) than
        # batched products, whose bmm is slow for narrow outputs and which stack the wide activations at every
        # layer; each member's wide layers then run on oneDNN (sac_plus.linear).
        per_layer = [layer.members() if isinstance(layer, EnsembleLinear) else None for layer in self.net]
        members = []
        for index in range(self.n):
            h = x
            for layer, split in zip(self.net, per_layer, strict=True):
                h = layer(h) if split is None else linear(h, *split[index])
            members.append(h)
        return th.stack(members)


class EnsembleCritic(BaseModel):
    """
    ``n_critics`` Q-networks on one shared features extractor, evaluated as one batched ensemble.

    Box actions: ``Q(s, a) -> [n_critics, B, 1]``. Discrete actions: ``Q(s, .) -> [n_critics, B, |A|]``.

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
    :param init_scheme: ``"lecture"`` or ``"pytorch"``, see :class:`SACPlusPolicy`
    """

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
    ):
        super().__init__(
            observation_space,
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
        )
        if not isinstance(n_critics, int) or n_critics < 1:
            raise ValueError(f"n_critics={n_critics!r} is not valid; accepted: an integer >= 1")
        self.takes_action = isinstance(action_space, spaces.Box)
        input_dim = features_dim + (get_action_dim(action_space) if self.takes_action else 0)
        output_dim = 1 if self.takes_action else int(action_space.n)
        self.n_critics = n_critics
        self.share_features_extractor = share_features_extractor
        self.q_networks = EnsembleMLP(n_critics, input_dim, net_arch, output_dim, activation_fn, init_scheme)

    def forward(self, obs: PyTorchObs, actions: th.Tensor | None = None) -> th.Tensor:
        # A shared features extractor is trained by the actor loss only (SB3's convention)
        with th.set_grad_enabled(not self.share_features_extractor):
            features = self.extract_features(obs, self.features_extractor)
        if self.takes_action:
            features = th.cat([features, actions], dim=1)
        return self.q_networks(features)

    def q_of_actions(self, obs: PyTorchObs, actions: th.Tensor) -> th.Tensor:
        """``Q_i(s, a)`` of the given (buffer) actions, shape ``[n_critics, B, 1]``."""
        if self.takes_action:
            return self(obs, actions)
        q_all = self(obs)
        index = actions.long().reshape(1, -1, 1).expand(q_all.shape[0], -1, 1)
        return q_all.gather(2, index)


class MlpActor(BasePolicy):
    """
    What both actors share: features extractor, hidden layers ``latent_pi`` and the keywords SB3 saves.

    :param observation_space: Observation space
    :param action_space: Action space
    :param net_arch: Hidden layer widths
    :param features_extractor: Network to extract features
    :param features_dim: Number of features
    :param activation_fn: Activation function
    :param normalize_images: Whether to divide images by 255
    :param init_scheme: ``"lecture"`` or ``"pytorch"``, see :class:`SACPlusPolicy`
    :param squash_output: Whether actions are in [-1, 1] and rescaled to the Box bounds by SB3
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
        self.latent_pi = mlp(features_dim, net_arch, activation_fn, init_scheme)
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
            )
        )
        return data

    def latent(self, obs: PyTorchObs) -> th.Tensor:
        return self.latent_pi(self.extract_features(obs, self.features_extractor))

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self(observation, deterministic)


class SquashedGaussianActor(MlpActor):
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
    :param init_scheme: ``"lecture"`` or ``"pytorch"``, see :class:`SACPlusPolicy`
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
        )
        self.use_sde = use_sde
        self.log_std_init = log_std_init
        self.full_std = full_std
        self.use_expln = use_expln
        self.clip_mean = clip_mean

        action_dim = get_action_dim(action_space)
        self.mu = final_linear(self.latent_dim, action_dim, init_scheme)
        if use_sde:
            self.action_dist = StateDependentNoiseDistribution(
                action_dim, full_std=full_std, use_expln=use_expln, learn_features=True, squash_output=True
            )
            self.log_std = nn.Parameter(
                th.ones(self.latent_dim, action_dim if full_std else 1) * log_std_init, requires_grad=True
            )
            self.action_dist.sample_weights(self.log_std)
        else:
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
            )
        )
        return data

    def reset_noise(self, batch_size: int = 1) -> None:
        """Sample a new gSDE exploration matrix."""
        if not self.use_sde:
            raise ValueError("reset_noise() needs use_sde=True: it samples gSDE's exploration matrix")
        self.action_dist.sample_weights(self.log_std, batch_size=batch_size)

    def _latent_and_mean(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:
        latent = self.latent(obs)
        mean = self.mu(latent)
        if self.use_sde and self.clip_mean > 0:
            # gSDE is unstable with unbounded means (SB3's clip_mean)
            mean = mean.clamp(-self.clip_mean, self.clip_mean)
        return latent, mean

    def sample_pre_tanh(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """Reparameterised pre-tanh sample ``n`` with the mean and log std of its Gaussian."""
        latent, mean = self._latent_and_mean(obs)
        if self.use_sde:
            # gSDE noise is latent @ E, E ~ N(0, std^2): Gaussian per state with variance latent^2 @ std^2
            dist = self.action_dist.proba_distribution(mean, self.log_std, latent)
            log_std = th.log(dist.distribution.stddev)
            pre_tanh = mean + self.action_dist.get_noise(latent)
        else:
            log_std = self.log_std(latent).clamp(LOG_STD_MIN, LOG_STD_MAX)
            pre_tanh = mean + th.exp(log_std) * th.randn_like(mean)
        return pre_tanh, mean, log_std

    def action_log_prob(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:
        """Sampled action in [-1, 1] and its exact log-probability ``[B, 1]``, computed from the pre-tanh value."""
        pre_tanh, mean, log_std = self.sample_pre_tanh(obs)
        return th.tanh(pre_tanh), squashed_gaussian_log_prob(pre_tanh, mean, log_std)

    def soft_value(self, obs: PyTorchObs, critic: EnsembleCritic, ent_coef: th.Tensor) -> SoftValue:
        """One reparameterised sample: gradients reach the actor through the action (lecture: reparameterisation)."""
        actions, log_prob = self.action_log_prob(obs)
        min_q = critic(obs, actions).min(dim=0).values
        saturation = (actions.detach().abs() > SATURATION_THRESHOLD).float().mean()
        return SoftValue(min_q - ent_coef * log_prob, log_prob, saturation)

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        if deterministic:
            return th.tanh(self._latent_and_mean(obs)[1])
        return th.tanh(self.sample_pre_tanh(obs)[0])


class CategoricalActor(MlpActor):
    """
    Discrete actor: logits over |A| actions; expectations are exact sums with ``softmax`` probabilities and
    ``log_softmax`` log-probabilities; deterministic action ``argmax``. Keywords: see :class:`MlpActor`.
    """

    action_space: spaces.Discrete

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.logits = final_linear(self.latent_dim, int(self.action_space.n), self.init_scheme)

    def action_logits(self, obs: PyTorchObs) -> th.Tensor:
        return self.logits(self.latent(obs))

    def soft_value(self, obs: PyTorchObs, critic: EnsembleCritic, ent_coef: th.Tensor) -> SoftValue:
        """Exact expectations ``pi(.|s)^T F(s, .)`` (lecture: "simple inner product")."""
        log_probs = th.log_softmax(self.action_logits(obs), dim=-1)
        probs = log_probs.exp()
        min_q = critic(obs).min(dim=0).values
        return SoftValue(
            categorical_expectation(probs, min_q - ent_coef * log_probs),
            categorical_expectation(probs, log_probs),
        )

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        logits = self.action_logits(obs)
        if deterministic:
            return logits.argmax(dim=-1)
        return th.multinomial(th.softmax(logits, dim=-1), 1).squeeze(-1)


Actor = SquashedGaussianActor | CategoricalActor


class SACPlusPolicy(BasePolicy):
    """
    Actor, critic ensemble and target critic ensemble of SACPlus, for Box and Discrete action spaces.

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
        ``"lecture"``: hidden layers orthogonal (gain sqrt(2)) with zero bias and final layers uniform in +-3e-3,
        as the lecture advises (different init for hidden and final layers). The default follows the ablation in
        benchmarks/RESULTS.md: with two hidden layers both learn Pendulum-v1 alike, with one hidden layer of 256
        (the lecture's MuJoCo tip) ``"lecture"`` failed on every seed (about -1400 after 20k steps) and
        ``"pytorch"`` did not (about -120).
    """

    actor: Actor
    critic: EnsembleCritic
    critic_target: EnsembleCritic

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
        self.n_critics = n_critics
        self.share_features_extractor = share_features_extractor
        self.init_scheme = check_init_scheme(init_scheme)
        common = dict(
            observation_space=self.observation_space,
            action_space=self.action_space,
            activation_fn=activation_fn,
            normalize_images=normalize_images,
            init_scheme=init_scheme,
        )
        self.actor_kwargs = dict(common, net_arch=actor_arch)
        if isinstance(action_space, spaces.Box):
            self.actor_kwargs.update(use_sde=use_sde, log_std_init=log_std_init, use_expln=use_expln, clip_mean=clip_mean)
        self.critic_kwargs = dict(
            common, net_arch=critic_arch, n_critics=n_critics, share_features_extractor=share_features_extractor
        )
        self._build(lr_schedule)

    def _build(self, lr_schedule: Schedule) -> None:
        self.actor = self.make_actor()
        self.actor.optimizer = build_optimizer(
            self.optimizer_class, self.actor.parameters(), lr_schedule(1), self.optimizer_kwargs
        )
        if self.share_features_extractor:
            self.critic = self.make_critic(features_extractor=self.actor.features_extractor)
            # the shared extractor is the actor's to train (see EnsembleCritic.forward)
            critic_parameters = [p for name, p in self.critic.named_parameters() if "features_extractor" not in name]
        else:
            self.critic = self.make_critic()
            critic_parameters = list(self.critic.parameters())
        self.critic.optimizer = build_optimizer(self.optimizer_class, critic_parameters, lr_schedule(1), self.optimizer_kwargs)
        # The target never shares its extractor and is never trained by gradients: only Polyak-averaged.
        self.critic_target = self.make_critic()
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.critic_target.set_training_mode(False)

    def make_actor(self, features_extractor: BaseFeaturesExtractor | None = None) -> Actor:
        kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)
        actor_class = SquashedGaussianActor if isinstance(self.action_space, spaces.Box) else CategoricalActor
        return actor_class(**kwargs).to(self.device)

    def make_critic(self, features_extractor: BaseFeaturesExtractor | None = None) -> EnsembleCritic:
        kwargs = self._update_features_extractor(self.critic_kwargs, features_extractor)
        return EnsembleCritic(**kwargs).to(self.device)

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
            )
        )
        return data

    def soft_value(self, obs: PyTorchObs, critic: EnsembleCritic, ent_coef: th.Tensor) -> SoftValue:
        """E_pi[min_i Q_i(s, a) - alpha log pi(a|s)] and E_pi[log pi(a|s)] for the states ``obs``."""
        return self.actor.soft_value(obs, critic, ent_coef)

    def reset_noise(self, batch_size: int = 1) -> None:
        """Sample a new gSDE exploration matrix."""
        self.actor.reset_noise(batch_size=batch_size)

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self._predict(obs, deterministic=deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self.actor(observation, deterministic)

    def set_training_mode(self, mode: bool) -> None:
        self.actor.set_training_mode(mode)
        self.critic.set_training_mode(mode)
        self.training = mode


MlpPolicy = SACPlusPolicy


class CnnPolicy(SACPlusPolicy):
    """:class:`SACPlusPolicy` for image observations: SB3's ``NatureCNN`` features extractor by default."""

    def __init__(self, *args, features_extractor_class: type[BaseFeaturesExtractor] = NatureCNN, **kwargs):
        super().__init__(*args, features_extractor_class=features_extractor_class, **kwargs)


class MultiInputPolicy(SACPlusPolicy):
    """:class:`SACPlusPolicy` for Dict observations: SB3's ``CombinedExtractor`` by default."""

    def __init__(self, *args, features_extractor_class: type[BaseFeaturesExtractor] = CombinedExtractor, **kwargs):
        super().__init__(*args, features_extractor_class=features_extractor_class, **kwargs)
