"""The math of the two action kinds, checked against independent computations.

Squashed Gaussian: numerical quadrature in action space, PyTorch's own TanhTransform, a finite-difference change
of variables and closed forms at saturation. Categorical: explicit Python sums. Policy level: the actors'
``soft_value`` against sums and Monte-Carlo estimates computed here by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from torch.distributions import Independent, Normal, TransformedDistribution
from torch.distributions.transforms import TanhTransform

from sac_plus import SACPlus
from sac_plus.distributions import (
    categorical_expectation,
    gaussian_log_prob,
    squashed_gaussian_log_prob,
    tanh_log_abs_det_jacobian,
)
from sac_plus.policies import CategoricalActor, SquashedGaussianActor

F64 = th.float64

# (mean, std) pairs whose density in action space is smooth enough for a uniform grid on (-1, 1): centred,
# narrow, skewed to either side, one close to the bound (tanh(2) = 0.96) and one wider than N(0, 1).
MEAN_STD_1D = [(0.0, 1.0), (0.5, 0.5), (-1.0, 0.4), (1.5, 0.8), (0.3, 1.2), (2.0, 0.3), (-0.8, 1.0)]


def _midpoints(n_points: int) -> tuple[th.Tensor, float]:
    """Midpoint grid on (-1, 1) (never the bounds, where atanh is infinite) and its spacing."""
    h = 2.0 / n_points
    return -1.0 + h * (th.arange(n_points, dtype=F64) + 0.5), h


def _params(mean, std) -> tuple[th.Tensor, th.Tensor]:
    mean_t = th.as_tensor(mean, dtype=F64).reshape(1, -1)
    log_std_t = th.log(th.as_tensor(std, dtype=F64)).reshape(1, -1)
    return mean_t, log_std_t


def _normal_pdf(n: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Diagonal Gaussian density written out by hand (product over the last axis)."""
    z = (n - mean) / std
    return np.prod(np.exp(-0.5 * z**2) / (std * math.sqrt(2.0 * math.pi)), axis=-1)


# ----------------------------------------------------------------------------------------------------------------
# squashed Gaussian: normalisation, reference implementations, change of variables


@pytest.mark.parametrize(("mean", "std"), MEAN_STD_1D)
def test_squashed_density_integrates_to_one_1d(mean, std):
    a, h = _midpoints(200_000)
    n = th.atanh(a).unsqueeze(-1)
    mean_t, log_std_t = _params([mean], [std])
    density = squashed_gaussian_log_prob(n, mean_t, log_std_t).exp()
    assert density.shape == (a.numel(), 1)
    assert abs(density.sum().item() * h - 1.0) < 1e-3


@pytest.mark.parametrize(
    ("mean", "std"),
    [((0.0, 0.0), (1.0, 1.0)), ((0.5, -1.0), (0.5, 0.4)), ((1.5, -0.8), (0.8, 1.0)), ((2.0, 0.3), (0.3, 1.2))],
)
def test_squashed_density_integrates_to_one_2d(mean, std):
    grid, h = _midpoints(2000)
    a1, a2 = th.meshgrid(grid, grid, indexing="ij")
    n = th.atanh(th.stack([a1, a2], dim=-1).reshape(-1, 2))
    mean_t, log_std_t = _params(mean, std)
    total = squashed_gaussian_log_prob(n, mean_t, log_std_t).exp().sum().item() * h * h
    assert abs(total - 1.0) < 1e-3


def test_quadrature_detects_a_missing_jacobian():
    """Control: the Gaussian density of n, read as a density of a, does not integrate to 1 (the test can fail)."""
    a, h = _midpoints(200_000)
    n = th.atanh(a).unsqueeze(-1)
    mean_t, log_std_t = _params([0.5], [0.5])
    total = gaussian_log_prob(n, mean_t, log_std_t).exp().sum().item() * h
    assert abs(total - 1.0) > 0.1


@pytest.mark.parametrize(("mean", "std"), [*MEAN_STD_1D, ((0.2, -0.7, 1.1), (0.6, 1.3, 0.2))])
def test_matches_torch_tanh_transformed_normal(mean, std):
    mean_t, log_std_t = _params(mean if isinstance(mean, tuple) else [mean], std if isinstance(std, tuple) else [std])
    gen = th.Generator().manual_seed(0)
    # moderate pre-tanh values, where tanh is not saturated in float64 and PyTorch's log_prob is finite
    n = th.empty(500, mean_t.shape[1], dtype=F64).uniform_(-4.0, 4.0, generator=gen)
    reference_dist = TransformedDistribution(Independent(Normal(mean_t, log_std_t.exp()), 1), [TanhTransform()])
    reference = reference_dist.log_prob(th.tanh(n))
    assert th.isfinite(reference).all()
    ours = squashed_gaussian_log_prob(n, mean_t, log_std_t).squeeze(-1)
    th.testing.assert_close(ours, reference, rtol=1e-9, atol=1e-7)


@pytest.mark.parametrize(("mean", "std"), [((0.0,), (1.0,)), ((1.2, -0.4), (0.7, 1.5)), ((-2.0, 0.1, 0.9), (0.3, 0.5, 2.0))])
def test_matches_finite_difference_change_of_variables(mean, std):
    """log pi(a) = log N(n) - sum_i log|d tanh(n_i)/dn_i|, with the derivative taken by central differences."""
    rng = np.random.default_rng(1)
    n = rng.uniform(-3.0, 3.0, size=(200, len(mean)))
    step = 1e-5
    dtanh = (np.tanh(n + step) - np.tanh(n - step)) / (2 * step)
    expected = np.log(_normal_pdf(n, np.array(mean), np.array(std))) - np.log(np.abs(dtanh)).sum(axis=-1)
    mean_t, log_std_t = _params(mean, std)
    ours = squashed_gaussian_log_prob(th.as_tensor(n), mean_t, log_std_t).squeeze(-1).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-7, atol=1e-7)


def test_tanh_log_abs_det_jacobian_equals_log_one_minus_tanh_squared():
    n = th.linspace(-6.0, 6.0, 1001, dtype=F64)
    th.testing.assert_close(tanh_log_abs_det_jacobian(n), th.log(1 - th.tanh(n) ** 2), rtol=1e-10, atol=1e-12)


def _exact_log_prob_at_saturation(n: float, mean: float, std: float) -> float:
    """Float64 closed form that needs no tanh: log(1 - tanh(n)^2) = -2 log cosh(n)."""
    log_normal = -0.5 * ((n - mean) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)
    return log_normal + 2.0 * math.log(math.cosh(n))


def test_stable_at_saturation_where_the_naive_form_is_biased():
    pre = [20.0, -20.0]
    means = [19.5, -19.0]
    stds = [1.0, math.exp(0.3)]
    pre_tanh = th.tensor([pre], dtype=th.float32, requires_grad=True)
    mean = th.tensor([means], dtype=th.float32, requires_grad=True)
    log_std = th.tensor([[math.log(s) for s in stds]], dtype=th.float32, requires_grad=True)

    log_prob = squashed_gaussian_log_prob(pre_tanh, mean, log_std)
    assert log_prob.dtype == th.float32
    assert th.isfinite(log_prob).all()
    log_prob.sum().backward()
    for grad in (pre_tanh.grad, mean.grad, log_std.grad):
        assert grad is not None and th.isfinite(grad).all()

    exact = sum(_exact_log_prob_at_saturation(n, m, s) for n, m, s in zip(pre, means, stds, strict=True))
    assert abs(log_prob.item() - exact) < 1e-3 * abs(exact)
    # d/dn [log N(n) - log(1 - tanh(n)^2)] = -(n - mean)/std^2 + 2 tanh(n): the Jacobian term's gradient survives
    expected_grad = [-(n - m) / s**2 + 2 * math.tanh(n) for n, m, s in zip(pre, means, stds, strict=True)]
    np.testing.assert_allclose(pre_tanh.grad.numpy()[0], expected_grad, rtol=1e-4, atol=1e-4)

    # The form computed from the action, log(1 - a^2 + eps), saturates: tanh(20) == 1 in float32, so the
    # Jacobian term is log(eps) whatever n is, and the log-density is off by tens of nats.
    with th.no_grad():
        action = th.tanh(pre_tanh)
        naive = gaussian_log_prob(pre_tanh, mean, log_std) - th.log(1 - action.pow(2) + 1e-6).sum(dim=-1, keepdim=True)
    assert th.isfinite(naive).all()
    assert abs(naive.item() - exact) > 20.0
    assert abs(naive.item() - exact) > 1000 * abs(log_prob.item() - exact)


def test_sb3_bounded_jacobian_is_sb3s_log_density():
    # SB3's own distribution object: log_prob(actions, gaussian_actions) with its epsilon of 1e-6
    from stable_baselines3.common.distributions import SquashedDiagGaussianDistribution

    generator = th.Generator().manual_seed(0)
    mean = th.randn(256, 6, generator=generator)
    log_std = 0.8 * th.randn(256, 6, generator=generator)
    pre_tanh = mean + 3.0 * th.exp(log_std) * th.randn(256, 6, generator=generator)  # many saturated samples
    sb3 = SquashedDiagGaussianDistribution(6).proba_distribution(mean, log_std).log_prob(th.tanh(pre_tanh), pre_tanh)
    ours = squashed_gaussian_log_prob(pre_tanh, mean, log_std, jacobian_eps=1e-6).squeeze(-1)
    th.testing.assert_close(ours, sb3, rtol=1e-5, atol=1e-4)
    exact = squashed_gaussian_log_prob(pre_tanh, mean, log_std).squeeze(-1)
    assert (exact - sb3).abs().max() > 10.0  # saturated samples: SB3's bound gives them less density


# ----------------------------------------------------------------------------------------------------------------
# categorical helpers


def test_categorical_expectation_equals_explicit_sum():
    gen = th.Generator().manual_seed(2)
    probs = th.softmax(th.randn(7, 5, generator=gen, dtype=F64), dim=-1)
    values = th.randn(7, 5, generator=gen, dtype=F64)
    result = categorical_expectation(probs, values)
    assert result.shape == (7, 1)
    for b in range(7):
        explicit = sum(probs[b, a].item() * values[b, a].item() for a in range(5))
        assert result[b, 0].item() == pytest.approx(explicit, abs=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# policy level: soft_value of the actors


@pytest.fixture
def make_model(space_env, fast_kwargs):
    def make(action_space: spaces.Space, **policy_kwargs) -> SACPlus:
        # init_scheme="pytorch": critics whose outputs are far from 0, so Q and log pi both matter in V
        policy_kwargs = dict(net_arch=[32, 32], init_scheme="pytorch", **policy_kwargs)
        return SACPlus("MlpPolicy", space_env(action_space), **fast_kwargs(policy_kwargs=policy_kwargs))

    return make


def _observations(model: SACPlus, n: int) -> th.Tensor:
    model.observation_space.seed(4)
    return th.as_tensor(np.stack([model.observation_space.sample() for _ in range(n)]))


def test_categorical_soft_value_equals_explicit_sum(make_model):
    model = make_model(spaces.Discrete(5), n_critics=3)
    assert isinstance(model.actor, CategoricalActor)
    obs = _observations(model, 6)
    alpha = 0.37
    with th.no_grad():
        soft = model.policy.soft_value(obs, model.critic, th.tensor(alpha))
        logits = model.actor.action_logits(obs).tolist()
        q = th.stack(model.critic(obs)).tolist()  # [n_critics][B][|A|]
    assert soft.value.shape == soft.mean_log_prob.shape == (6, 1)
    for b in range(6):
        log_z = math.log(sum(math.exp(v) for v in logits[b]))
        value = mean_log_prob = 0.0
        for a in range(5):
            log_pi = logits[b][a] - log_z
            min_q = min(q[i][b][a] for i in range(3))
            value += math.exp(log_pi) * (min_q - alpha * log_pi)
            mean_log_prob += math.exp(log_pi) * log_pi
        assert soft.value[b, 0].item() == pytest.approx(value, rel=1e-5, abs=1e-5)
        assert soft.mean_log_prob[b, 0].item() == pytest.approx(mean_log_prob, rel=1e-5, abs=1e-5)


def test_box_action_log_prob_is_the_squashed_gaussian_of_the_pre_tanh_sample(make_model):
    model = make_model(spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32))
    assert isinstance(model.actor, SquashedGaussianActor)
    obs = _observations(model, 64)
    with th.no_grad():
        th.manual_seed(5)
        pre_tanh, mean, log_std = model.actor.sample_pre_tanh(obs)
        th.manual_seed(5)
        actions, log_prob = model.actor.action_log_prob(obs)
    th.testing.assert_close(actions, th.tanh(pre_tanh))
    assert log_prob.shape == (64,)  # SB3's shape
    th.testing.assert_close(log_prob, squashed_gaussian_log_prob(pre_tanh, mean, log_std).squeeze(-1))
    # ... and that is PyTorch's tanh-transformed Gaussian (float64, where nothing saturates)
    reference = TransformedDistribution(Independent(Normal(mean.double(), log_std.double().exp()), 1), [TanhTransform()])
    th.testing.assert_close(log_prob.double(), reference.log_prob(th.tanh(pre_tanh.double())), rtol=1e-4, atol=1e-4)


def test_box_soft_value_matches_an_independent_monte_carlo_estimate(make_model):
    model = make_model(spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32))
    n_samples = 20_000
    obs = _observations(model, 1).expand(n_samples, -1)
    alpha = 0.5
    with th.no_grad():
        th.manual_seed(6)
        soft = model.policy.soft_value(obs, model.critic, th.tensor(alpha)).value.squeeze(-1)

        # Independent estimate: the Gaussian's parameters from the actor, everything else by hand here.
        _, mean, log_std = model.actor.sample_pre_tanh(obs[:1])
        mean, std = mean.double(), log_std.double().exp()
        eps = th.randn(n_samples, mean.shape[1], generator=th.Generator().manual_seed(7), dtype=F64)
        actions = th.tanh(mean + std * eps)
        dist = TransformedDistribution(Independent(Normal(mean, std), 1), [TanhTransform()])
        log_pi = dist.log_prob(actions)
        q = th.stack(model.critic(obs, actions.float())).min(dim=0).values.squeeze(-1).double()
        estimate = q - alpha * log_pi

    standard_error = math.sqrt(soft.var().item() / n_samples + estimate.var().item() / n_samples)
    assert soft.mean().item() == pytest.approx(estimate.mean().item(), abs=4 * standard_error + 1e-3)
    # the check has teeth: leaving out the entropy term moves the estimate by more than the tolerance
    assert abs(q.mean().item() - soft.mean().item()) > 8 * standard_error


def test_the_sb3_log_density_keyword_is_used_by_the_actor_and_saved(tmp_path):
    from stable_baselines3.common.distributions import SquashedDiagGaussianDistribution

    model = SACPlus("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(tanh_jacobian_eps=1e-6), learning_starts=10)
    model.save(tmp_path / "model")
    actor = SACPlus.load(tmp_path / "model").actor
    assert actor.tanh_jacobian_eps == 1e-6
    obs = th.randn(64, 3)
    th.manual_seed(0)
    pre_tanh, mean, log_std = actor.sample_pre_tanh(obs)
    th.manual_seed(0)
    _, log_prob = actor.action_log_prob(obs)
    sb3 = SquashedDiagGaussianDistribution(1).proba_distribution(mean, log_std).log_prob(th.tanh(pre_tanh), pre_tanh)
    th.testing.assert_close(log_prob, sb3)
