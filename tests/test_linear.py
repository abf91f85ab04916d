"""sac_plus.linear: both kernels give F.linear's values and gradients; the probe picks one per shape and can be overridden."""

from __future__ import annotations

import pytest
import torch as th
from torch.nn import functional as F

from sac_plus import linear

needs_onednn = pytest.mark.skipif(not linear._HAS_ONEDNN_LINEAR, reason="this PyTorch has no oneDNN linear")


@pytest.fixture(autouse=True)
def fresh_choices():
    linear.reset_kernel_choices()
    yield
    linear.reset_kernel_choices()


@needs_onednn
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("kernel", [linear.ATEN, linear.ONEDNN, linear.AUTO])
def test_every_kernel_matches_f_linear_values_and_gradients(monkeypatch, kernel: str, with_bias: bool) -> None:
    monkeypatch.setenv(linear.KERNEL_ENV_VAR, kernel)
    th.manual_seed(0)
    x = th.randn(64, 256, requires_grad=True)
    weight = th.randn(128, 256, requires_grad=True)
    bias = th.randn(128, requires_grad=True) if with_bias else None
    expected_kernel = linear.chosen_kernel(x, weight, bias)
    assert expected_kernel == (kernel if kernel != linear.AUTO else expected_kernel)
    grad_out = th.randn(64, 128)
    inputs = [x, weight] + ([bias] if with_bias else [])

    fast = linear.linear(x, weight, bias)
    fast_grads = th.autograd.grad(fast, inputs, grad_out)
    ref = F.linear(x, weight, bias)
    ref_grads = th.autograd.grad(ref, inputs, grad_out)
    th.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-4)
    for got, wanted in zip(fast_grads, ref_grads, strict=True):
        th.testing.assert_close(got, wanted, rtol=1e-5, atol=1e-4)
        assert got.stride() == wanted.stride()  # laid out like the parameter: no transposing copy into .grad


@needs_onednn
def test_the_probe_measures_both_kernels_once_per_shape_and_keeps_the_faster(monkeypatch) -> None:
    monkeypatch.delenv(linear.KERNEL_ENV_VAR, raising=False)
    layer = linear.Linear(256, 256)
    rng_state = th.random.get_rng_state()
    layer(th.ones(256, 256))
    # the probe draws its tensors from its own generator: seeded training stays reproducible
    assert th.equal(th.random.get_rng_state(), rng_state)
    (choice,) = linear.kernel_choices()
    assert choice["rows"] == 256 and choice["in_features"] == 256 and choice["backward"] is True
    assert choice["aten_us"] > 0 and choice["onednn_us"] > 0
    faster = linear.ONEDNN if choice["onednn_us"] < linear._ONEDNN_MARGIN * choice["aten_us"] else linear.ATEN
    assert choice["kernel"] == faster
    layer(th.ones(256, 256))
    with th.no_grad():
        layer(th.ones(1, 256))  # acting: another shape, forward only
    assert len(linear.kernel_choices()) == 2
    assert "256 x 256" in linear.describe_kernel_choices()


def test_override_and_what_never_goes_to_onednn(monkeypatch) -> None:
    big = th.randn(256, 256)
    monkeypatch.setenv(linear.KERNEL_ENV_VAR, "aten")
    assert linear.chosen_kernel(th.randn(64, 256), big) == linear.ATEN
    assert linear.kernel_choices() == []  # no probe when the kernel is forced
    monkeypatch.setenv(linear.KERNEL_ENV_VAR, "onednn")
    assert linear.chosen_kernel(th.randn(64, 256, dtype=th.float64), big.double()) == linear.ATEN
    assert linear.chosen_kernel(th.randn(2, 64, 256), big) == linear.ATEN
    x = th.randn(64, 256, dtype=th.float64)
    th.testing.assert_close(linear.linear(x, big.double()), F.linear(x, big.double()))
    monkeypatch.setenv(linear.KERNEL_ENV_VAR, "mkl")
    with pytest.raises(ValueError, match=r"SAC_PLUS_LINEAR='mkl' is not understood; accepted: auto, aten, onednn"):
        linear.chosen_kernel(th.randn(64, 256), big)


def test_frozen_weight_gets_no_gradient_but_input_does(monkeypatch) -> None:
    monkeypatch.setenv(linear.KERNEL_ENV_VAR, "onednn")
    x = th.randn(32, 128, requires_grad=True)
    layer = linear.Linear(128, 128)
    layer.requires_grad_(False)
    layer(x).sum().backward()
    assert layer.weight.grad is None and layer.bias.grad is None
    th.testing.assert_close(x.grad, layer.weight.sum(dim=0).expand(32, -1), rtol=1e-5, atol=1e-5)


def test_linear_module_state_dict_is_nn_linear_s() -> None:
    layer = linear.Linear(256, 256)
    reference = th.nn.Linear(256, 256)
    reference.load_state_dict(layer.state_dict())
    x = th.randn(16, 256)
    th.testing.assert_close(layer(x), reference(x), rtol=1e-5, atol=1e-5)


@needs_onednn
def test_no_grad_products_skip_the_autograd_function(monkeypatch) -> None:
    monkeypatch.setenv(linear.KERNEL_ENV_VAR, "onednn")
    layer = linear.Linear(256, 256)
    x = th.randn(64, 256)
    with th.no_grad():
        out = layer(x)
    assert out.grad_fn is None
    th.testing.assert_close(out, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-4)
    assert type(layer(x).grad_fn).__name__ == "_OneDNNLinearBackward"
