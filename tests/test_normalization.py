"""Exact tests of the normalisation layers: batch renormalisation and running observation statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from sac_plus.normalization import BatchRenorm, RunningObservationNorm, frozen_statistics

EPS = 1e-3
MOMENTUM = 0.01


def batch(seed: int, rows: int = 64, features: int = 5, shift: float = 0.0) -> th.Tensor:
    generator = th.Generator().manual_seed(seed)
    return th.randn(rows, features, generator=generator, dtype=th.float64) * 2.0 + 3.0 + shift


def renorm(warmup_steps: int = 10, **kwargs) -> BatchRenorm:
    layer = BatchRenorm(5, momentum=MOMENTUM, eps=EPS, warmup_steps=warmup_steps, **kwargs).double()
    with th.no_grad():
        layer.weight.copy_(th.linspace(0.5, 1.5, 5))
        layer.bias.copy_(th.linspace(-1.0, 1.0, 5))
    return layer


def test_state_dict_names_are_batch_norms():
    assert set(BatchRenorm(4).state_dict()) == {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}


def test_warm_up_is_batch_norm_and_running_statistics_follow_the_batches():
    layer = renorm()
    x = batch(0)
    y = layer(x)
    mean, var = x.mean(0), x.var(0, unbiased=False)
    th.testing.assert_close(y, (x - mean) / th.sqrt(var + EPS) * layer.weight + layer.bias)
    # the running variance keeps the unbiased estimate, as nn.BatchNorm1d does
    th.testing.assert_close(layer.running_mean, MOMENTUM * mean)
    th.testing.assert_close(layer.running_var, (1 - MOMENTUM) + MOMENTUM * x.var(0, unbiased=True))
    assert int(layer.num_batches_tracked) == 1


def test_after_warm_up_the_batch_is_corrected_toward_the_running_statistics():
    layer = renorm(warmup_steps=3, r_max=3.0, d_max=5.0)
    with th.no_grad():
        layer.running_mean.copy_(th.tensor([3.0, 0.0, 3.5, 2.5, 100.0]))
        layer.running_var.copy_(th.tensor([4.0, 4.0, 0.01, 40.0, 4.0]))
        layer.num_batches_tracked.fill_(3)
    running_mean, running_std = layer.running_mean.clone(), th.sqrt(layer.running_var + EPS)
    x = batch(1).requires_grad_(True)
    y = layer(x)
    # reference: Ioffe 2017, algorithm 1, with r and d clipped and without gradient
    mean, std = x.mean(0), th.sqrt(x.var(0, unbiased=False) + EPS)
    r = (std / running_std).detach().clamp(1 / 3.0, 3.0)
    d = ((mean - running_mean) / running_std).detach().clamp(-5.0, 5.0)
    expected = ((x - mean) / std * r + d) * layer.weight + layer.bias
    th.testing.assert_close(y, expected)
    assert (r > 1 / 3.0).any() and (r == 3.0).any() and (d == -5.0).any()  # the clips are exercised
    grad = th.randn_like(y)
    (actual_grad,) = th.autograd.grad(y, x, grad, retain_graph=True)
    (expected_grad,) = th.autograd.grad(expected, x, grad)
    th.testing.assert_close(actual_grad, expected_grad)


def test_eval_mode_reads_the_running_statistics_and_changes_nothing():
    layer = renorm()
    layer(batch(0))
    layer.eval()
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    x = batch(2)
    th.testing.assert_close(layer(x), (x - layer.running_mean) / th.sqrt(layer.running_var + EPS) * layer.weight + layer.bias)
    for key, value in layer.state_dict().items():
        assert th.equal(value, before[key]), key


def test_frozen_statistics_reads_running_statistics_inside_a_training_network():
    layer = renorm()
    layer(batch(0))
    x = batch(3)
    with frozen_statistics([layer]):
        frozen = layer(x)
        assert not layer.training
    assert layer.training and int(layer.num_batches_tracked) == 1
    layer.eval()
    th.testing.assert_close(frozen, layer(x))


@pytest.mark.parametrize(
    "kwargs, message",
    [({"momentum": 0.0}, "batch_norm_momentum"), ({"eps": 0.0}, "batch_norm_eps"), ({"warmup_steps": -1}, "renorm_warmup")],
)
def test_bad_keywords_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BatchRenorm(3, **kwargs)


def test_running_observation_statistics_are_those_of_every_observation_seen():
    space = spaces.Box(-np.inf, np.inf, shape=(2, 3), dtype=np.float32)
    norm = RunningObservationNorm(space)
    rng = np.random.default_rng(0)
    seen = []
    for rows in (1, 7, 1, 30):
        obs = rng.normal(5.0, 3.0, size=(rows, 2, 3)).astype(np.float32)
        seen.append(obs.reshape(rows, -1))
        norm.update(th.as_tensor(obs))
    seen_all = np.concatenate(seen).astype(np.float64)
    np.testing.assert_allclose(norm.running_mean.numpy(), seen_all.mean(0), rtol=1e-5)
    np.testing.assert_allclose(norm.running_var.numpy(), seen_all.var(0), rtol=1e-4)
    assert float(norm.running_count) == len(seen_all)
    obs = th.as_tensor(rng.normal(size=(4, 2, 3)).astype(np.float32))
    expected = (obs.reshape(4, -1) - norm.running_mean) / th.sqrt(norm.running_var + norm.eps)
    th.testing.assert_close(norm(obs), expected)
    # forward never moves the statistics
    count = float(norm.running_count)
    norm(obs)
    assert float(norm.running_count) == count


def test_running_observation_norm_refuses_non_box_spaces():
    with pytest.raises(TypeError, match="Box observation space"):
        RunningObservationNorm(spaces.Discrete(3))
