"""The whole update of SACPlus against an independent reference written from the formulas of docs/design.md.

The reference below knows nothing of SACPlus's code: it reads the weights by their (SB3) state-dict names and
computes every update with ``F.linear``, ``torch.distributions`` and a hand-written Adam:

1. ``y = r + gamma^k (1 - done) (min_i Qtarget_i(s', a') - alpha log pi(a'|s'))``, ``a' ~ pi(.|s')`` (Box: one
   reparameterised sample; Discrete: the exact expectation); ``gamma^k`` is the n-step buffer's ``discounts``;
2. critic loss ``1/2 sum_i mean((Q_i(s, a) - y)^2)``, one Adam step of the critics;
3. actor loss ``mean(alpha log pi(a|s) - min_i Q_i(s, a))`` through the *updated* critics, one Adam step;
4. temperature loss ``mean(-log(alpha) (log pi + H_target))`` with the actor's log-probabilities of step 3, one
   Adam step; alpha in steps 1-3 is the one from before the update;
5. Polyak averaging of the target critics after update ``k`` when ``k % target_update_interval == 0``.

Three updates of ``model.train()`` (a real SB3 replay buffer, sampled twice with the same NumPy seed) must give
the same losses, gradients and parameters as three reference updates, for every option below, for both CPU
matrix-product kernels the probe of ``sac_plus.linear`` can choose, and for both ways of computing the gradients
(autograd, and ``sac_plus.fused`` where it covers the policy).
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from torch.distributions import Normal
from torch.distributions.transforms import TanhTransform
from torch.nn import functional as F

from sac_plus import SACPlus

GRADIENT_STEPS = 3
BATCH = 64
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # SAC's clip of the log standard deviation
GSDE_EPSILON = 1e-6  # SB3's StateDependentNoiseDistribution adds it to the variance

VARIANTS = {
    "box": dict(env="Pendulum-v1"),
    "discrete": dict(env="CartPole-v1"),
    "box-nstep": dict(env="Pendulum-v1", n_steps=3),
    "discrete-nstep": dict(env="CartPole-v1", n_steps=3),
    "box-gsde": dict(env="Pendulum-v1", use_sde=True),
    "box-fixed-alpha": dict(env="Pendulum-v1", ent_coef=0.2),
    "discrete-fixed-alpha": dict(env="CartPole-v1", ent_coef=0.05),
    "box-3critics-interval2": dict(env="Pendulum-v1", target_update_interval=2, n_critics=3),
    "discrete-interval2": dict(env="CartPole-v1", target_update_interval=2),
}


# ---------------------------------------------------------------------------------------------------------------
# the reference: plain functions of named tensors


def layers(params: dict[str, th.Tensor], prefix: str) -> list[tuple[th.Tensor, th.Tensor]]:
    """The ``(weight, bias)`` pairs of the ``nn.Sequential`` at ``prefix``, in order."""
    indices = sorted({int(name[len(prefix) + 1 :].split(".")[0]) for name in params if name.startswith(prefix + ".")})
    return [(params[f"{prefix}.{i}.weight"], params[f"{prefix}.{i}.bias"]) for i in indices]


def mlp(x: th.Tensor, pairs: list[tuple[th.Tensor, th.Tensor]], relu_last: bool) -> th.Tensor:
    for index, (weight, bias) in enumerate(pairs):
        x = F.linear(x, weight, bias)
        if relu_last or index < len(pairs) - 1:
            x = F.relu(x)
    return x


def q_values(params: dict[str, th.Tensor], prefix: str, n_critics: int, inputs: th.Tensor) -> th.Tensor:
    """``[n_critics, B, out]``: every critic ``{prefix}.qf{i}`` on the same inputs."""
    return th.stack([mlp(inputs, layers(params, f"{prefix}.qf{i}"), relu_last=False) for i in range(n_critics)])


class Reference:
    """The design's update, on a copy of the model's tensors (``params``), with its own Adam states."""

    def __init__(self, model: SACPlus):
        self.box = isinstance(model.action_space, gym.spaces.Box)
        self.gsde = model.use_sde
        self.n_critics = model.critic.n_critics
        self.gamma, self.tau, self.interval = model.gamma, model.tau, model.target_update_interval
        self.lr = model.lr_schedule(1.0)
        self.params = {name: t.detach().clone() for name, t in model.policy.state_dict().items()}
        self.learned_alpha = model.log_ent_coef is not None
        self.log_alpha = (model.log_ent_coef if self.learned_alpha else model.ent_coef_tensor.log()).detach().clone()
        n_actions = None if self.box else int(model.action_space.n)
        # docs/design.md: -dim(A) for Box; scale * log|A| for Discrete, the scale annealed 0.6 -> 0.1 over the first
        # 100k updates (read at the start of train(): update 0 here)
        self.target_entropy = -float(np.prod(model.action_space.shape)) if self.box else 0.6 * math.log(n_actions)
        self.adam_state: dict[str, tuple[int, th.Tensor, th.Tensor]] = {}
        self.n_updates = 0
        self.stats: list[dict[str, float]] = []
        self.gradients: dict[str, th.Tensor] = {}

    def adam(self, name: str, param: th.Tensor, grad: th.Tensor, betas=(0.9, 0.999), eps=1e-8) -> th.Tensor:
        """Adam (Kingma and Ba 2015, algorithm 1)."""
        step, m, v = self.adam_state.get(name, (0, th.zeros_like(param), th.zeros_like(param)))
        step += 1
        m = betas[0] * m + (1 - betas[0]) * grad
        v = betas[1] * v + (1 - betas[1]) * grad * grad
        self.adam_state[name] = (step, m, v)
        m_hat = m / (1 - betas[0] ** step)
        v_hat = v / (1 - betas[1] ** step)
        return param - self.lr * m_hat / (v_hat.sqrt() + eps)

    def exploration_noise(self) -> th.Tensor | None:
        """
        gSDE: the standard normal ``eps`` of the noise matrix ``E = eps * exp(log_std)`` drawn before each update
        (reparameterised: the actor loss differentiates ``E`` with respect to ``log_std``, as SB3 does).
        """
        if not self.gsde:
            return None
        shape = self.params["actor.log_std"].shape
        eps = Normal(th.zeros(shape), th.ones(shape)).rsample()
        Normal(th.zeros(shape), th.ones(shape)).rsample((1,))  # SB3's per-env matrices: the same draws
        return eps

    def box_sample(self, p: dict[str, th.Tensor], obs: th.Tensor, matrix: th.Tensor | None):
        """``a = tanh(n)``, ``n ~ N(mu, sigma)`` and ``log pi(a|s)`` by change of variables (SAC paper, appendix C)."""
        latent = mlp(obs, layers(p, "actor.latent_pi"), relu_last=True)
        if self.gsde:
            mean = F.linear(latent, p["actor.mu.0.weight"], p["actor.mu.0.bias"]).clamp(-2.0, 2.0)  # clip_mean
            std = (latent.pow(2) @ p["actor.log_std"].exp().pow(2) + GSDE_EPSILON).sqrt()
            pre_tanh = mean + latent @ (matrix * p["actor.log_std"].exp())
        else:
            mean = F.linear(latent, p["actor.mu.weight"], p["actor.mu.bias"])
            log_std = F.linear(latent, p["actor.log_std.weight"], p["actor.log_std.bias"]).clamp(LOG_STD_MIN, LOG_STD_MAX)
            std = log_std.exp()
            pre_tanh = mean + std * th.randn_like(mean)
        action = th.tanh(pre_tanh)
        jacobian = TanhTransform().log_abs_det_jacobian(pre_tanh, action)
        return action, (Normal(mean, std).log_prob(pre_tanh) - jacobian).sum(-1, keepdim=True)

    def soft_value(self, p, critic_prefix: str, obs: th.Tensor, alpha: th.Tensor, matrix):
        """``E_pi[min_i Q_i(s, a) - alpha log pi(a|s)]`` and ``E_pi[log pi(a|s)]``, each ``[B, 1]``."""
        if self.box:
            action, log_prob = self.box_sample(p, obs, matrix)
            min_q = q_values(p, critic_prefix, self.n_critics, th.cat([obs, action], 1)).min(0).values
            return min_q - alpha * log_prob, log_prob
        logits = F.linear(mlp(obs, layers(p, "actor.latent_pi"), True), p["actor.logits.weight"], p["actor.logits.bias"])
        probs, log_probs = F.softmax(logits, -1), F.log_softmax(logits, -1)
        min_q = q_values(p, critic_prefix, self.n_critics, obs).min(0).values
        return (probs * (min_q - alpha * log_probs)).sum(-1, keepdim=True), (probs * log_probs).sum(-1, keepdim=True)

    def critic_loss(self, p, data, alpha: th.Tensor, matrix) -> th.Tensor:
        with th.no_grad():
            next_value, _ = self.soft_value(p, "critic_target", data.next_observations, alpha, matrix)
            discounts = data.discounts if data.discounts is not None else self.gamma
            y = data.rewards + discounts * (1 - data.dones) * next_value
        if self.box:
            q = q_values(p, "critic", self.n_critics, th.cat([data.observations, data.actions], 1))
        else:
            q = q_values(p, "critic", self.n_critics, data.observations).gather(
                2, data.actions.long().reshape(1, -1, 1).expand(self.n_critics, -1, 1)
            )
        return 0.5 * sum(((q[i] - y) ** 2).mean() for i in range(self.n_critics)), q.mean()

    def step(self, data) -> None:
        p = self.params
        matrix = self.exploration_noise()
        alpha = self.log_alpha.exp()
        critic_names = [n for n in p if n.startswith("critic.")]
        actor_names = [n for n in p if n.startswith("actor.")]

        leaves = {n: p[n].clone().requires_grad_(True) for n in critic_names}
        loss, q_mean = self.critic_loss({**p, **leaves}, data, alpha, matrix)
        grads = th.autograd.grad(loss, list(leaves.values()))
        for name, grad in zip(critic_names, grads, strict=True):
            self.gradients[name] = grad
            p[name] = self.adam(name, p[name], grad)

        leaves = {n: p[n].clone().requires_grad_(True) for n in actor_names}
        value, mean_log_prob = self.soft_value({**p, **leaves}, "critic", data.observations, alpha, matrix)
        actor_loss = -value.mean()
        grads = th.autograd.grad(actor_loss, list(leaves.values()))
        for name, grad in zip(actor_names, grads, strict=True):
            self.gradients[name] = grad
            p[name] = self.adam(name, p[name], grad)

        alpha_loss = th.zeros(())
        if self.learned_alpha:
            log_alpha = self.log_alpha.clone().requires_grad_(True)
            alpha_loss = (-log_alpha * (mean_log_prob.detach() + self.target_entropy)).mean()
            (grad,) = th.autograd.grad(alpha_loss, [log_alpha])
            self.gradients["log_ent_coef"] = grad
            self.log_alpha = self.adam("log_ent_coef", self.log_alpha, grad)

        if self.n_updates % self.interval == 0:
            for name in critic_names:
                target = "critic_target." + name[len("critic.") :]
                p[target] = (1 - self.tau) * p[target] + self.tau * p[name]
        self.n_updates += 1
        self.stats.append(
            {
                "train/critic_loss": float(loss.detach()),
                "train/actor_loss": float(actor_loss.detach()),
                "train/ent_coef": float(alpha),
                "train/entropy": float(-mean_log_prob.detach().mean()),
                "train/q_mean": float(q_mean.detach()),
                "train/ent_coef_loss": float(alpha_loss.detach()),
            }
        )


# ---------------------------------------------------------------------------------------------------------------
# the comparison


def filled_model(variant: dict, width: int) -> SACPlus:
    variant = dict(variant)
    env = variant.pop("env")
    n_critics = variant.pop("n_critics", 2)
    model = SACPlus(
        "MlpPolicy",
        env,
        learning_starts=400,
        batch_size=BATCH,
        policy_kwargs=dict(net_arch=[width, width], n_critics=n_critics, **variant.pop("policy_kwargs", {})),
        seed=3,
        device="cpu",
        **variant,
    )
    model.learn(400)  # random actions into a real replay buffer, no update yet
    assert model._n_updates == 0
    with th.no_grad():
        # make the target critics differ from the critics, so that mixing them up would show
        for param in model.critic_target.parameters():
            param.add_(0.05 * th.randn_like(param))
        if not model.use_sde and isinstance(model.action_space, gym.spaces.Box):
            # log sigma above the clip for some units, so that the clip matters
            model.actor.log_std.bias.add_(th.tensor([2.5]))
    return model


def expected_gradient_path(model: SACPlus, fused: str) -> str:
    """What ``SAC_PLUS_FUSED=fused`` gives this model: the fused path covers Box actions without gSDE."""
    covered = isinstance(model.action_space, gym.spaces.Box) and not model.use_sde
    return "fused" if fused == "on" and covered else "autograd"


@pytest.mark.parametrize("fused", ["on", "off"])
@pytest.mark.parametrize("kernel", ["aten", "onednn", "auto"])
@pytest.mark.parametrize("width", [32, 256])
@pytest.mark.parametrize("variant", list(VARIANTS.values()), ids=list(VARIANTS))
def test_train_matches_the_reference_update(monkeypatch, variant, width, kernel, fused) -> None:
    monkeypatch.setenv("SAC_PLUS_LINEAR", kernel)
    monkeypatch.setenv("SAC_PLUS_FUSED", fused)
    model = filled_model(variant, width)
    reference = Reference(model)

    np.random.seed(11)
    batches = [model.replay_buffer.sample(BATCH) for _ in range(GRADIENT_STEPS)]
    th.manual_seed(5)
    for data in batches:
        reference.step(data)
    np.random.seed(11)
    th.manual_seed(5)
    model.train(gradient_steps=GRADIENT_STEPS, batch_size=BATCH)
    assert model._n_updates == GRADIENT_STEPS
    assert model.gradient_path == expected_gradient_path(model, fused)

    if variant.get("n_steps", 1) > 1:
        assert th.any(batches[0].discounts < model.gamma - 1e-6), "the n-step batch must have discounts below gamma"
    # losses and statistics (means over the updates, as the logger gets them)
    means = model.monitor.peek_means()
    for key in reference.stats[0]:
        expected = np.mean([s[key] for s in reference.stats])
        assert means[key] == pytest.approx(expected, rel=1e-4, abs=1e-5), key
    # gradients of the last update
    named = dict(model.policy.named_parameters())
    for name, grad in reference.gradients.items():
        param = model.log_ent_coef if name == "log_ent_coef" else named[name]
        th.testing.assert_close(param.grad, grad, rtol=2e-4, atol=1e-6, msg=f"gradient of {name}")
    # parameters after three Adam steps and Polyak updates
    for name, tensor in model.policy.state_dict().items():
        th.testing.assert_close(tensor, reference.params[name], rtol=1e-4, atol=2e-6, msg=f"parameter {name}")
    log_alpha = model.log_ent_coef if model.log_ent_coef is not None else model.ent_coef_tensor.log()
    th.testing.assert_close(log_alpha.detach(), reference.log_alpha, rtol=1e-5, atol=1e-7)


def test_actor_step_computes_no_critic_weight_gradients() -> None:
    model = SACPlus("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(net_arch=[16]), seed=0)
    obs = th.randn(BATCH, model.observation_space.shape[0])
    actor_loss, _ = model._actor_loss(obs, th.tensor(0.2))
    actor_loss.backward()
    assert all(param.grad is None for param in model.critic.parameters())
    assert all(param.grad is not None for param in model.actor.parameters())
    # and the critic is trainable again afterwards
    assert all(param.requires_grad for param in model.critic.parameters())


# bfloat16 products: inputs rounded to 8 bits of mantissa (relative error up to 2^-9 each), sums in float32.
# The critics' gradients then differ from the float32 reference by 1-3% of their norm, the actor's by up to 8%
# (its loss is a difference, Q - alpha log pi, which the rounding hits harder): 15% is the stated bound.
BF16_GRADIENT_TOLERANCE = 0.15
BF16_LOSS_TOLERANCE = 0.02


@pytest.mark.parametrize("fused", ["on", "off"])
@pytest.mark.parametrize("variant", ["box", "discrete", "box-gsde"])
def test_bfloat16_products_stay_within_their_stated_tolerance(monkeypatch, variant, fused) -> None:
    monkeypatch.setenv("SAC_PLUS_FUSED", fused)
    settings = dict(VARIANTS[variant])
    settings["policy_kwargs"] = dict(matmul_dtype="bfloat16")
    model = filled_model(settings, 256)
    assert all(m.bf16 for m in model.policy.modules() if isinstance(m, th.nn.Linear))
    reference = Reference(model)
    np.random.seed(11)
    data = model.replay_buffer.sample(BATCH)
    th.manual_seed(5)
    reference.step(data)
    np.random.seed(11)
    th.manual_seed(5)
    model.train(gradient_steps=1, batch_size=BATCH)
    assert model.gradient_path == expected_gradient_path(model, fused)
    means = model.monitor.peek_means()
    for key in ("train/critic_loss", "train/actor_loss", "train/entropy"):
        assert means[key] == pytest.approx(reference.stats[0][key], rel=BF16_LOSS_TOLERANCE, abs=1e-3), key
    named = dict(model.policy.named_parameters())
    for name, grad in reference.gradients.items():
        got = model.log_ent_coef.grad if name == "log_ent_coef" else named[name].grad
        error = (got - grad).norm() / grad.norm().clamp_min(1e-12)
        assert error < BF16_GRADIENT_TOLERANCE, (name, float(error))
