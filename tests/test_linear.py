"""sac_plus.linear: oneDNN products give F.linear's values and gradients, and fall back where they do not apply."""

from __future__ import annotations

import pytest
import torch as th
from torch.nn import functional as F

from sac_plus import linear as onednn


@pytest.mark.parametrize("transposed_weight", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_linear_matches_f_linear_values_and_gradients(transposed_weight: bool, with_bias: bool) -> None:
    th.manual_seed(0)
    x = th.randn(64, 256, requires_grad=True)
    base = th.randn(256, 128) if transposed_weight else th.randn(128, 256)
    weight = (base.T if transposed_weight else base).detach().requires_grad_(True)
    bias = th.randn(128, requires_grad=True) if with_bias else None
    assert onednn.uses_onednn(x, weight) == onednn._HAS_ONEDNN_LINEAR
    grad_out = th.randn(64, 128)
    inputs = [x, weight] + ([bias] if with_bias else [])

    fast = onednn.linear(x, weight, bias)
    fast_grads = th.autograd.grad(fast, inputs, grad_out)
    ref = F.linear(x, weight, bias)
    ref_grads = th.autograd.grad(ref, inputs, grad_out)
    th.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-4)
    for got, expected in zip(fast_grads, ref_grads, strict=True):
        th.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    if onednn._HAS_ONEDNN_LINEAR:
        # laid out like the weight, so that the ensemble's storage receives it without a transposing copy
        assert fast_grads[1].stride() == weight.stride()


def test_frozen_weight_gets_no_gradient_but_input_does() -> None:
    x = th.randn(32, 128, requires_grad=True)
    layer = onednn.Linear(128, 128)
    layer.requires_grad_(False)
    layer(x).sum().backward()
    assert layer.weight.grad is None and layer.bias.grad is None
    th.testing.assert_close(x.grad, layer.weight.sum(dim=0).expand(32, -1), rtol=1e-5, atol=1e-5)


def test_small_float64_few_rows_and_batched_inputs_use_f_linear() -> None:
    small = th.randn(4, 3)
    assert not onednn.uses_onednn(th.randn(64, 3), small)
    big = th.randn(256, 256)
    assert not onednn.uses_onednn(th.randn(64, 256, dtype=th.float64), big.double())
    assert not onednn.uses_onednn(th.randn(2, 64, 256), big)
    assert not onednn.uses_onednn(th.randn(1, 256), big)  # acting on one observation
    x = th.randn(64, 256, dtype=th.float64)
    th.testing.assert_close(onednn.linear(x, big.double()), F.linear(x, big.double()))


def test_linear_module_state_dict_is_nn_linear_s() -> None:
    layer = onednn.Linear(256, 256)
    reference = th.nn.Linear(256, 256)
    reference.load_state_dict(layer.state_dict())
    x = th.randn(16, 256)
    th.testing.assert_close(layer(x), reference(x), rtol=1e-5, atol=1e-5)


def test_no_grad_products_skip_the_autograd_function() -> None:
    layer = onednn.Linear(256, 256)
    x = th.randn(64, 256)
    with th.no_grad():
        out = layer(x)
    assert out.grad_fn is None
    th.testing.assert_close(out, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-4)
    assert layer(x).grad_fn is not None
