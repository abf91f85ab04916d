"""
SAC's gradient step for plain MLPs with its backward pass written out: the same gradients as autograd's, in
fewer, larger operations.

For the networks SB3's ``MlpPolicy`` builds (``Linear``/``ReLU`` stacks, a features extractor without
parameters, Box actions without gSDE), one update is 16 matrix products of the hidden width and about a hundred
small operations; with autograd each small operation also records a graph node, and each ``nn.Module`` call and
``backward()`` adds Python work, which on a CPU costs about as much as the products themselves (benchmarks/RESULTS.md,
"Speed per CPU"). :class:`FusedGradients` computes the critic and actor gradients of :class:`~sac_plus.SACPlus`
directly: the forward pass keeps each layer's input and output, and the backward pass is the chain rule of the
same expressions, layer by layer, with the matrix products :mod:`sac_plus.linear` has chosen for each shape.
It writes ``.grad`` of the parameters the optimizers step, as ``loss.backward()`` would, so optimizers,
schedules and checkpoints are unchanged. Whether it is faster than autograd on the machine at hand is measured
(:meth:`sac_plus.SACPlus.train` times both on its first update); ``SAC_PLUS_FUSED=on|off`` decides instead.

The policies it does not cover (Discrete actions, gSDE, batch renormalisation, SimBa, features extractors with
parameters such as the CNN of image observations, other activations, subclasses that override a loss) keep the
autograd path: :func:`fused_gradients_for` returns
``None`` for them.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable

import torch as th
from stable_baselines3.common.policies import BaseModel
from torch import nn

from sac_plus.distributions import LOG_STD_MAX, LOG_STD_MIN, squashed_gaussian_log_prob
from sac_plus.linear import BFLOAT16, FORWARD, Linear, Plan, chosen_plan, dense_backward
from sac_plus.policies import Critic, SACPlusPolicy, SquashedGaussianActor

FUSED_ENV_VAR = "SAC_PLUS_FUSED"
_BF16_PLAN = Plan(BFLOAT16, BFLOAT16, BFLOAT16)  # the policy's matmul_dtype="bfloat16"
# Timed runs of each path (after one warm-up run each), alternating, best kept: timing noise on a shared machine only
# adds, and it moves a single run by more than the paths differ (10-20%). No margin: the two paths compute the
# same gradients (tests/test_fused.py), so the faster one is chosen even when they are close.
_REPEATS = 5
# (parameter shapes, batch size, threads, device) -> fused chosen, and the measured seconds of each path
_choices: dict[tuple, tuple[bool, dict[str, float]]] = {}


@dataclasses.dataclass(frozen=True)
class _Layer:
    """One ``Linear``, with whether a ReLU follows it, and its products' plans per (rows, threads, device)."""

    linear: nn.Linear
    relu: bool
    plans: dict[tuple[int, int, str], Plan] = dataclasses.field(default_factory=dict, compare=False)

    def plan(self, x: th.Tensor) -> Plan:
        """The plan of :mod:`sac_plus.linear` for this input (probed there once per shape), looked up once per batch
        size: ``chosen_plan`` reads the override and builds its key at every call, ~30 times per update."""
        key = (x.shape[0], th.get_num_threads(), x.device.type)
        plan = self.plans.get(key)
        if plan is None:
            bf16 = getattr(self.linear, "bf16", False)
            plan = self.plans[key] = _BF16_PLAN if bf16 else chosen_plan(x, self.linear.weight, self.relu) or Plan()
        return plan


@dataclasses.dataclass
class _Tape:
    """What one forward pass through a stack of layers keeps for its backward: each layer's input, and its output
    where a ReLU follows (the ReLU's backward reads it)."""

    inputs: list[th.Tensor]
    outputs: list[th.Tensor | None]
    plans: list[Plan]

    def rows(self, index: th.Tensor) -> _Tape:
        """The tape of the same forward pass restricted to the batch rows ``index``."""

        def select(tensor: th.Tensor | None) -> th.Tensor | None:
            return None if tensor is None else tensor.index_select(0, index)

        inputs = [select(x) for x in self.inputs]
        # a layer's output is the next layer's input: select it once
        outputs = [None if out is None else inputs[i + 1] if i + 1 < len(inputs) and out is self.inputs[i + 1] else select(out)
                   for i, out in enumerate(self.outputs)]  # fmt: skip
        return _Tape(inputs, outputs, self.plans)  # type: ignore[arg-type]


def plain_layers(module: nn.Module) -> list[_Layer] | None:
    """
    ``module`` as a list of layers if it is a ``Linear`` or a ``Sequential`` of ``Linear`` layers each optionally
    followed by an ``nn.ReLU`` (what SB3's ``create_mlp`` builds); ``None`` otherwise.
    """
    modules = list(module) if isinstance(module, nn.Sequential) else [module]
    layers: list[_Layer] = []
    index = 0
    while index < len(modules):
        linear = modules[index]
        if not (type(linear) in (nn.Linear, Linear) and isinstance(linear, nn.Linear) and linear.bias is not None):
            return None
        relu = index + 1 < len(modules) and type(modules[index + 1]) is nn.ReLU
        layers.append(_Layer(linear, relu))
        index += 2 if relu else 1
    return layers or None


def forward(layers: list[_Layer], x: th.Tensor) -> tuple[th.Tensor, _Tape]:
    """The layers applied to ``x`` (no autograd graph), with the tape for :func:`backward`."""
    tape = _Tape([], [], [])
    for layer in layers:
        weight, bias = layer.linear.weight, layer.linear.bias
        plan = layer.plan(x)
        tape.inputs.append(x)
        tape.plans.append(plan)
        x = FORWARD[plan.forward](x, weight, bias, layer.relu)
        tape.outputs.append(x if layer.relu else None)
    return x, tape


def backward(layers: list[_Layer], tape: _Tape, grad: th.Tensor, weight_grads: bool, input_grad: bool) -> th.Tensor | None:
    """
    Back through the layers from the gradient of their output: writes the weights' and biases' ``.grad`` if
    ``weight_grads``, and returns the gradient of the input if ``input_grad``.
    """
    for index in reversed(range(len(layers))):
        linear = layers[index].linear
        needs_input = input_grad or index > 0
        grad_x, grad_w, grad_b = dense_backward(
            grad, tape.inputs[index], linear.weight, tape.outputs[index], tape.plans[index],
            needs_input, weight_grads, weight_grads,
        )  # fmt: skip
        if weight_grads:
            linear.weight.grad, linear.bias.grad = grad_w, grad_b
        if grad_x is None:
            return None
        grad = grad_x
    return grad


def _min_over_critics(q_values: list[th.Tensor]) -> tuple[th.Tensor, list[th.Tensor] | None]:
    """``min_i Q_i`` and, with several critics, each critic's share of the min's gradient (ties split evenly,
    as autograd's ``amin`` splits them)."""
    if len(q_values) == 1:
        return q_values[0], None
    stacked = th.stack(q_values)
    min_q = stacked.amin(dim=0)
    is_min = (stacked == min_q).to(stacked.dtype)
    shares = is_min / is_min.sum(dim=0)
    return min_q, list(shares.unbind(0))


@dataclasses.dataclass
class _Sample:
    """A reparameterised action of the squashed Gaussian, its log-density, and what their backward reads."""

    action: th.Tensor
    log_prob: th.Tensor
    pre_tanh: th.Tensor
    mean: th.Tensor
    log_std: th.Tensor
    noise: th.Tensor
    raw_log_std: th.Tensor  # before the clip to [LOG_STD_MIN, LOG_STD_MAX]
    tapes: tuple[_Tape, _Tape, _Tape]  # latent, mean head, log std head


def _features(network: BaseModel, obs: th.Tensor) -> th.Tensor:
    """``network``'s features of ``obs`` (its extractor has no parameters: nothing to differentiate)."""
    assert network.features_extractor is not None  # fused_gradients_for checked
    with th.no_grad():
        return network.extract_features(obs, network.features_extractor)


class FusedGradients:
    """
    The critic and actor gradients of SAC with a squashed Gaussian actor, for plain MLPs (see the module's
    docstring), from the policy's own modules; build it with :func:`fused_gradients_for`.
    """

    def __init__(
        self,
        policy: SACPlusPolicy,
        actor_layers: tuple[list[_Layer], list[_Layer], list[_Layer]],
        critics: list[list[_Layer]],
        targets: list[list[_Layer]],
    ):
        assert isinstance(policy.actor, SquashedGaussianActor) and policy.critic_target is not None
        self.actor, self.critic, self.critic_target = policy.actor, policy.critic, policy.critic_target
        self.latent, self.mu, self.log_std = actor_layers
        self.critics, self.targets = critics, targets
        self.tanh_jacobian_eps = policy.actor.tanh_jacobian_eps

    def _sample(self, features: th.Tensor) -> _Sample:
        """A reparameterised action and its log-density (as ``SquashedGaussianActor.sample``), with what the
        backward pass reads."""
        latent, latent_tape = forward(self.latent, features)
        mean, mu_tape = forward(self.mu, latent)
        raw_log_std, log_std_tape = forward(self.log_std, latent)
        log_std = raw_log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        noise = th.randn_like(mean)
        pre_tanh = mean + th.exp(log_std) * noise
        log_prob = squashed_gaussian_log_prob(pre_tanh, mean, log_std, self.tanh_jacobian_eps)
        tapes = (latent_tape, mu_tape, log_std_tape)
        return _Sample(th.tanh(pre_tanh), log_prob, pre_tanh, mean, log_std, noise, raw_log_std, tapes)

    def _sample_backward(self, sample: _Sample, grad_action: th.Tensor, grad_log_prob: th.Tensor) -> None:
        """The actor's ``.grad`` from the gradients of the loss with respect to the action and its log-density
        (``[B, A]`` and ``[B, 1]``): the chain rule of :meth:`_sample`'s expressions (and of
        :func:`~sac_plus.distributions.squashed_gaussian_log_prob`'s), in reverse."""
        action, log_std = sample.action, sample.log_std
        inv_std = th.exp(-log_std)
        z = (sample.pre_tanh - sample.mean) * inv_std  # as gaussian_log_prob computes it
        grad_log_prob = grad_log_prob.expand_as(action)
        # action = tanh(n)
        grad_pre_tanh = grad_action * (1 - action.pow(2))
        # log_prob -= sum log|d tanh(n)/dn|
        if self.tanh_jacobian_eps is None:
            # d/dn log(1 - tanh(n)^2) = -2 tanh(n)
            grad_pre_tanh = grad_pre_tanh + 2 * action * grad_log_prob
        else:
            one_minus_a2 = 1 - action.pow(2)
            grad_pre_tanh = grad_pre_tanh + 2 * action * one_minus_a2 / (one_minus_a2 + self.tanh_jacobian_eps) * grad_log_prob
        # log_prob = sum(-z^2 / 2 - log_std) - ..., z = (n - mean) / std
        grad_z = -z * grad_log_prob
        grad_pre_tanh = grad_pre_tanh + grad_z * inv_std
        grad_mean = grad_pre_tanh - grad_z * inv_std
        grad_log_std = -grad_log_prob - grad_z * z
        # n = mean + std * noise, std = exp(log_std)
        grad_log_std = grad_log_std + grad_pre_tanh * th.exp(log_std) * sample.noise
        # log_std = clamp(raw, LOG_STD_MIN, LOG_STD_MAX): no gradient outside the interval
        raw = sample.raw_log_std
        grad_raw = grad_log_std * ((raw >= LOG_STD_MIN) & (raw <= LOG_STD_MAX))
        latent_tape, mu_tape, log_std_tape = sample.tapes
        grad_latent = backward(self.mu, mu_tape, grad_mean, weight_grads=True, input_grad=True)
        grad_from_log_std = backward(self.log_std, log_std_tape, grad_raw, weight_grads=True, input_grad=True)
        assert grad_latent is not None and grad_from_log_std is not None
        backward(self.latent, latent_tape, grad_latent + grad_from_log_std, weight_grads=True, input_grad=False)

    def critic_gradients(
        self,
        obs: th.Tensor,
        actions: th.Tensor,
        next_obs: th.Tensor,
        target_terms: tuple[th.Tensor, th.Tensor],
        ent_coef: th.Tensor,
    ) -> tuple[th.Tensor, th.Tensor]:
        """
        The critics' ``.grad`` of SACPlus's critic loss (``SACPlus._critic_loss``).

        :param target_terms: ``(rewards, not_done_discounts)``: the target is ``rewards + not_done_discounts * V(s')``
        :return: the loss and the mean Q-value of the batch
        """
        rewards, not_done_discounts = target_terms
        with th.no_grad():
            next_sample = self._sample(_features(self.actor, next_obs))
            next_input = th.cat([_features(self.critic_target, next_obs), next_sample.action], 1)
            next_q, _ = _min_over_critics([forward(layers, next_input)[0] for layers in self.targets])
            target_q = rewards + not_done_discounts * (next_q - ent_coef * next_sample.log_prob)
            q_input = th.cat([_features(self.critic, obs), actions], dim=1)
            loss = q_sum = th.zeros((), device=q_input.device)
            for layers in self.critics:
                q, tape = forward(layers, q_input)
                error = q - target_q
                loss = loss + 0.5 * error.pow(2).mean()
                q_sum = q_sum + q.mean()
                # d/dq of 0.5 * mean((q - y)^2)
                backward(layers, tape, error / error.numel(), weight_grads=True, input_grad=False)
        return loss, q_sum / len(self.critics)

    def _critic_input_gradient(
        self, runs: list[tuple[th.Tensor, _Tape]], shares: list[th.Tensor] | None, grad_min_q: th.Tensor
    ) -> th.Tensor:
        """
        The gradient of the critics' input from that of ``min_i Q_i``. Each critic's backward runs over the rows
        where it is the min: elsewhere its share of the gradient is 0, so this is the same gradient for about
        ``1 / n_critics`` of the products (on the CPU, where selecting the rows costs no device synchronisation).
        """
        if shares is None:
            (layers,), ((_, tape),) = self.critics, runs
            grad = backward(layers, tape, grad_min_q, weight_grads=False, input_grad=True)
            assert grad is not None
            return grad
        grad_input = th.zeros_like(runs[0][1].inputs[0])
        for layers, (_, tape), share in zip(self.critics, runs, shares, strict=True):
            grad_q = grad_min_q * share
            if grad_q.device.type == "cpu":
                rows = share.squeeze(1).nonzero().squeeze(1)
                if rows.numel() == 0:
                    continue
                grad = backward(layers, tape.rows(rows), grad_q.index_select(0, rows), weight_grads=False, input_grad=True)
                assert grad is not None
                grad_input.index_add_(0, rows, grad)
            else:
                grad = backward(layers, tape, grad_q, weight_grads=False, input_grad=True)
                assert grad is not None
                grad_input += grad
        return grad_input

    def actor_gradients(self, obs: th.Tensor, ent_coef: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """
        The actor's ``.grad`` of ``-mean(min_i Q_i(s, a) - alpha log pi(a|s))`` with the current critics
        (``SACPlus._actor_loss``; the critics' own gradients are not computed).

        :return: the loss, the log-densities ``[B, 1]`` and the fraction of saturated action units
        """
        with th.no_grad():
            sample = self._sample(_features(self.actor, obs))
            q_input = th.cat([_features(self.critic, obs), sample.action], dim=1)
            runs = [forward(layers, q_input) for layers in self.critics]
            min_q, shares = _min_over_critics([q for q, _ in runs])
            value = min_q - ent_coef * sample.log_prob
            batch = value.shape[0]
            grad_value = th.full_like(value, -1.0 / batch)  # loss = -mean(value)
            grad_input = self._critic_input_gradient(runs, shares, grad_value)
            grad_action = grad_input[:, -sample.action.shape[1] :]
            self._sample_backward(sample, grad_action, -ent_coef * grad_value)
            saturation = (sample.action.abs() > 0.99).float().mean()
        return -value.mean(), sample.log_prob, saturation


FUSED_MODES = ("auto", "on", "off")


def fused_mode() -> str:
    """
    What ``SAC_PLUS_FUSED`` asks for: ``auto`` (the default: the faster of the two paths, measured), ``on``
    (the fused path wherever it covers the policy) or ``off`` (autograd always); another value is an error.
    """
    value = os.environ.get(FUSED_ENV_VAR, "auto").strip().lower() or "auto"
    if value not in FUSED_MODES:
        raise ValueError(f"{FUSED_ENV_VAR}={value!r} is not understood; accepted: {', '.join(FUSED_MODES)}")
    return value


def fused_gradients_for(policy: nn.Module) -> FusedGradients | None:
    """:class:`FusedGradients` for ``policy`` if it covers it (see the module's docstring), else ``None``."""
    actor = getattr(policy, "actor", None)
    if not isinstance(policy, SACPlusPolicy) or type(actor) is not SquashedGaussianActor or actor.use_sde:
        return None
    if type(policy.critic) is not Critic or type(policy.critic_target) is not Critic:
        return None  # no target critic (CrossQ), or a critic of another kind
    if any(getattr(type(policy), name) is not getattr(SACPlusPolicy, name) for name in ("td_terms", "soft_value")):
        return None  # a subclass that changes the losses' terms
    networks: list[BaseModel] = [actor, policy.critic, policy.critic_target]
    if any(net.features_extractor is None or any(True for _ in net.features_extractor.parameters()) for net in networks):
        return None  # a trained features extractor needs autograd
    if any(param.dtype != th.float32 for param in policy.parameters()):
        return None
    actor_layers = [plain_layers(actor.latent_pi), plain_layers(actor.mu), _module_layers(actor.log_std)]
    critics = [[plain_layers(q_net) for q_net in critic.q_networks] for critic in (policy.critic, policy.critic_target)]
    # the heads (mean, log std, Q) end without a ReLU; the latent ends with one
    heads = [*actor_layers[1:], *critics[0], *critics[1]]
    if actor_layers[0] is None or any(layers is None or layers[-1].relu for layers in heads):
        return None
    latent, mu, log_std = (layers or [] for layers in actor_layers)
    return FusedGradients(policy, (latent, mu, log_std), *([q or [] for q in qs] for qs in critics))


def _module_layers(module: nn.Module | th.Tensor) -> list[_Layer] | None:
    """:func:`plain_layers` of a module (gSDE's log std is a bare parameter: not covered)."""
    return plain_layers(module) if isinstance(module, nn.Module) else None


def faster_of(
    fused: FusedGradients, gradients: Callable[[FusedGradients | None], None], policy: nn.Module, batch_size: int
) -> FusedGradients | None:
    """
    ``fused`` if computing the gradients with it is faster than with autograd (``None``): each
    path runs ``gradients(path)`` a few times, alternating, best time kept. Measured once per process for a given
    network shape, batch size, thread count and device; the random state is restored afterwards, so that the
    measurement changes no result.
    """
    device = next(policy.parameters()).device
    key = (tuple(p.shape for p in policy.parameters()), batch_size, th.get_num_threads(), str(device))
    if key not in _choices:
        cpu_state = th.random.get_rng_state()
        cuda_state = th.cuda.get_rng_state(device) if device.type == "cuda" else None
        times = {"autograd": float("inf"), "fused": float("inf")}
        for repeat in range(_REPEATS + 1):
            for name, path in (("autograd", None), ("fused", fused)):
                if device.type == "cuda":
                    th.cuda.synchronize(device)
                start = time.perf_counter()
                gradients(path)
                if device.type == "cuda":
                    th.cuda.synchronize(device)
                if repeat > 0:  # the first run of each warms caches and probes the products' shapes
                    times[name] = min(times[name], time.perf_counter() - start)
        th.random.set_rng_state(cpu_state)
        if cuda_state is not None:
            th.cuda.set_rng_state(cuda_state, device)
        _choices[key] = (times["fused"] < times["autograd"], times)
    return fused if _choices[key][0] else None


def gradient_path_choices() -> list[dict[str, object]]:
    """What :func:`faster_of` chose so far in this process, with the measured times (us)."""
    return [
        dict(batch_size=batch, threads=threads, device=device, fused=fused,
             times_us={name: round(seconds * 1e6, 1) for name, seconds in times.items()})
        for (_, batch, threads, device), (fused, times) in _choices.items()
    ]  # fmt: skip
