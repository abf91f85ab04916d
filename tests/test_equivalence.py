"""The fast training path computes the same losses and gradients as a plain implementation of the design's formulas.

The reference below loops over critics with ``F.linear`` on each critic's own weights, takes log-probabilities
from ``torch.distributions`` and writes the three losses exactly as ../shared/design.md states them.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from torch.distributions import Normal
from torch.distributions.transforms import TanhTransform
from torch.nn import functional as F

from sac_plus import SACPlus
from sac_plus.distributions import LOG_STD_MAX, LOG_STD_MIN
from sac_plus.policies import EnsembleCritic
from sac_plus.temperature import temperature_loss

BATCH = 64


def reference_q_values(critic: EnsembleCritic, obs: th.Tensor, actions: th.Tensor | None) -> list[th.Tensor]:
    """One plain MLP per critic: ``F.linear`` with the critic's own slice of the batched weights."""
    inputs = obs if actions is None else th.cat([obs, actions], dim=1)
    linears = [m for m in critic.q_networks.net if hasattr(m, "weight")]
    outputs = []
    for i in range(critic.n_critics):
        h = inputs
        for k, layer in enumerate(linears):
            h = F.linear(h, layer.weight[i].T, layer.bias[i, 0])
            if k < len(linears) - 1:
                h = F.relu(h)
        outputs.append(h)
    return outputs


def reference_box_sample(actor, obs: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """a = tanh(mu + sigma eps) and log pi(a|s) by change of variables with torch.distributions' TanhTransform."""
    latent = actor.latent_pi(obs)
    mean = actor.mu(latent)
    std = actor.log_std(latent).clamp(LOG_STD_MIN, LOG_STD_MAX).exp()
    pre_tanh = mean + std * th.randn_like(mean)
    action = th.tanh(pre_tanh)
    log_prob = Normal(mean, std).log_prob(pre_tanh).sum(-1) - TanhTransform().log_abs_det_jacobian(pre_tanh, action).sum(-1)
    return action, log_prob.unsqueeze(-1)


def reference_soft_value(model: SACPlus, critic: EnsembleCritic, obs: th.Tensor, alpha: th.Tensor):
    """E_pi[min_i Q_i(s, a) - alpha log pi(a|s)] and E_pi[log pi(a|s)]."""
    if isinstance(model.action_space, gym.spaces.Box):
        action, log_prob = reference_box_sample(model.actor, obs)
        min_q = th.min(th.stack(reference_q_values(critic, obs, action)), dim=0).values
        return min_q - alpha * log_prob, log_prob
    logits = model.actor.logits(model.actor.latent_pi(obs))
    probs = F.softmax(logits, dim=-1)
    log_probs = F.log_softmax(logits, dim=-1)
    min_q = th.min(th.stack(reference_q_values(critic, obs, None)), dim=0).values
    value = sum(probs[:, a : a + 1] * (min_q[:, a : a + 1] - alpha * log_probs[:, a : a + 1]) for a in range(probs.shape[1]))
    mean_log_prob = sum(probs[:, a : a + 1] * log_probs[:, a : a + 1] for a in range(probs.shape[1]))
    return value, mean_log_prob


def reference_critic_loss(model: SACPlus, data: ReplayBufferSamples, alpha: th.Tensor) -> th.Tensor:
    with th.no_grad():
        next_value, _ = reference_soft_value(model, model.critic_target, data.next_observations, alpha)
        y = data.rewards + model.gamma * (1 - data.dones) * next_value
    if isinstance(model.action_space, gym.spaces.Box):
        current = reference_q_values(model.critic, data.observations, data.actions)
    else:
        current = [q.gather(1, data.actions.long()) for q in reference_q_values(model.critic, data.observations, None)]
    return sum(((q - y) ** 2).mean() for q in current)


def fixed_batch(model: SACPlus) -> ReplayBufferSamples:
    rng = np.random.default_rng(0)
    obs_dim = model.observation_space.shape[0]
    if isinstance(model.action_space, gym.spaces.Box):
        actions = th.as_tensor(rng.uniform(-1, 1, (BATCH, model.action_space.shape[0])), dtype=th.float32)
    else:
        actions = th.as_tensor(rng.integers(0, model.action_space.n, (BATCH, 1)))
    return ReplayBufferSamples(
        observations=th.as_tensor(rng.normal(size=(BATCH, obs_dim)), dtype=th.float32),
        actions=actions,
        next_observations=th.as_tensor(rng.normal(size=(BATCH, obs_dim)), dtype=th.float32),
        dones=th.as_tensor(rng.integers(0, 2, (BATCH, 1)), dtype=th.float32),
        rewards=th.as_tensor(rng.normal(size=(BATCH, 1)), dtype=th.float32),
    )


def gradients(loss: th.Tensor, params: list[th.Tensor]) -> list[th.Tensor]:
    return list(th.autograd.grad(loss, params, allow_unused=False))


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1"])
def test_fast_path_matches_reference_losses_and_gradients(env_id: str) -> None:
    model = SACPlus("MlpPolicy", env_id, policy_kwargs=dict(net_arch=[32, 32], n_critics=3), seed=1)
    # make the target critics differ from the critics, so that mixing them up would show
    with th.no_grad():
        for param in model.critic_target.parameters():
            param.add_(0.05 * th.randn_like(param))
    data = fixed_batch(model)
    alpha = th.tensor(0.3)
    critic_params = list(model.critic.parameters())
    actor_params = list(model.actor.parameters())

    th.manual_seed(10)
    fast_critic_loss, _ = model._critic_loss(data, alpha)
    th.manual_seed(10)
    ref_critic_loss = reference_critic_loss(model, data, alpha)
    th.testing.assert_close(fast_critic_loss, ref_critic_loss, rtol=1e-5, atol=1e-6)
    for fast, ref in zip(gradients(fast_critic_loss, critic_params), gradients(ref_critic_loss, critic_params), strict=True):
        th.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-6)

    th.manual_seed(20)
    fast_actor_loss, soft = model._actor_loss(data.observations, alpha)
    th.manual_seed(20)
    ref_value, ref_mean_log_prob = reference_soft_value(model, model.critic, data.observations, alpha)
    ref_actor_loss = -ref_value.mean()
    th.testing.assert_close(fast_actor_loss, ref_actor_loss, rtol=1e-5, atol=1e-6)
    th.testing.assert_close(soft.mean_log_prob, ref_mean_log_prob, rtol=1e-5, atol=1e-5)
    for fast, ref in zip(gradients(fast_actor_loss, actor_params), gradients(ref_actor_loss, actor_params), strict=True):
        th.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-6)

    # temperature: E[-log(alpha) (log pi + H_target)], differentiated w.r.t. log(alpha)
    log_alpha = model.log_ent_coef
    fast_alpha_loss = temperature_loss(log_alpha, soft.mean_log_prob, model.target_entropy)
    ref_alpha_loss = (-log_alpha * (ref_mean_log_prob.detach() + model.target_entropy)).mean()
    th.testing.assert_close(fast_alpha_loss, ref_alpha_loss)
    th.testing.assert_close(gradients(fast_alpha_loss, [log_alpha])[0], gradients(ref_alpha_loss, [log_alpha])[0])


def test_actor_step_computes_no_critic_weight_gradients() -> None:
    model = SACPlus("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(net_arch=[16]), seed=0)
    data = fixed_batch(model)
    actor_loss, _ = model._actor_loss(data.observations, th.tensor(0.2))
    actor_loss.backward()
    assert all(param.grad is None for param in model.critic.parameters())
    assert all(param.grad is not None for param in model.actor.parameters())
    # and the critic is trainable again afterwards
    assert all(param.requires_grad for param in model.critic.parameters())
