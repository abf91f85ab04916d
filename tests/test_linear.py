"""sac_plus.linear: every way of each product gives F.linear's values and gradients; the probe picks per shape."""

from __future__ import annotations

import pytest
import torch as th
from torch import nn
from torch.nn import functional as F

from sac_plus import linear

needs_onednn = pytest.mark.skipif(not linear._HAS_ONEDNN_LINEAR, reason="this PyTorch has no oneDNN linear")
SHAPES = [(64, 256, 128), (256, 4, 256), (256, 256, 1), (1, 3, 256)]


@pytest.fixture(autouse=True)
def fresh_choices():
    linear.reset_kernel_choices()
    yield
    linear.reset_kernel_choices()


@pytest.mark.parametrize("rows_in_out", SHAPES, ids=[f"{r}x{i}->{o}" for r, i, o in SHAPES])
def test_every_float32_way_of_every_product_is_the_same_product(rows_in_out) -> None:
    """The ways the probe chooses among (bfloat16 is opt-in, with its own tolerance in test_equivalence.py)."""
    rows, in_features, out_features = rows_in_out
    th.manual_seed(0)
    x, g = th.randn(rows, in_features), th.randn(rows, out_features)
    weight, bias = th.randn(out_features, in_features), th.randn(out_features)
    for relu in (False, True):
        expected = F.linear(x, weight, bias).relu() if relu else F.linear(x, weight, bias)
        for way, forward in linear.FORWARD.items():
            if way == linear.BFLOAT16 or (way == linear.ONEDNN and not linear._HAS_ONEDNN_LINEAR):
                continue
            th.testing.assert_close(forward(x, weight, bias, relu), expected, rtol=1e-5, atol=1e-4, msg=way)
    for products, expected in ((linear.GRAD_INPUT, g @ weight), (linear.GRAD_WEIGHT, g.t() @ x)):
        for way, product in products.items():
            if way == linear.BFLOAT16 or (way == linear.ONEDNN and not linear._HAS_ONEDNN_LINEAR):
                continue
            got = product(g, weight if products is linear.GRAD_INPUT else x)
            th.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4, msg=way)
            assert got.is_contiguous(), way  # laid out like the parameter: no copy into .grad


@pytest.mark.parametrize("kernel", [linear.ATEN, linear.ONEDNN, linear.AUTO])
@pytest.mark.parametrize("relu", [False, True])
def test_dense_layer_matches_f_linear_values_and_gradients(monkeypatch, kernel: str, relu: bool) -> None:
    monkeypatch.setenv(linear.KERNEL_ENV_VAR, kernel)
    th.manual_seed(0)
    x = th.randn(64, 256, requires_grad=True)
    weight = th.randn(128, 256, requires_grad=True)
    bias = th.randn(128, requires_grad=True)
    grad_out = th.randn(64, 128)
    fast = linear.linear(x, weight, bias, relu=relu)
    assert type(fast.grad_fn).__name__ == "_DenseBackward"  # one node per layer
    ref = F.linear(x, weight, bias)
    ref = F.relu(ref) if relu else ref
    th.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-4)
    for got, wanted in zip(
        th.autograd.grad(fast, [x, weight, bias], grad_out), th.autograd.grad(ref, [x, weight, bias], grad_out), strict=True
    ):
        th.testing.assert_close(got, wanted, rtol=1e-5, atol=1e-4)


def test_the_probe_measures_once_per_shape_and_keeps_the_fastest(monkeypatch) -> None:
    monkeypatch.delenv(linear.KERNEL_ENV_VAR, raising=False)
    layer = linear.Linear(256, 256)
    rng_state = th.random.get_rng_state()
    layer(th.ones(256, 256))
    # the probe draws its tensors from its own generator: seeded training stays reproducible
    assert th.equal(th.random.get_rng_state(), rng_state)
    (choice,) = linear.kernel_choices()
    assert (choice["rows"], choice["in_features"], choice["out_features"], choice["relu"]) == (256, 256, 256, False)
    for product in ("forward", "grad_input", "grad_weight"):
        times = choice["times_us"][product]
        assert all(t > 0 for t in times.values())
        fastest = min(times, key=times.get)
        expected = fastest if times[fastest] < linear._MARGIN * times[linear.ATEN] else linear.ATEN
        assert choice[product] == expected
    layer(th.ones(256, 256))
    with th.no_grad():
        layer(th.ones(1, 256))  # acting: another shape
    assert len(linear.kernel_choices()) == 2
    assert "[256 x 256] -> 256" in linear.describe_kernel_choices()


def test_override_and_what_takes_f_linear(monkeypatch) -> None:
    big = th.randn(256, 256)
    monkeypatch.setenv(linear.KERNEL_ENV_VAR, "aten")
    assert linear.chosen_plan(th.randn(64, 256), big) == linear.Plan()
    assert linear.kernel_choices() == []  # no probe when the kernel is forced
    monkeypatch.setenv(linear.KERNEL_ENV_VAR, "onednn")
    assert linear.chosen_plan(th.randn(64, 256, dtype=th.float64), big.double()) is None
    assert linear.chosen_plan(th.randn(2, 64, 256), big) is None
    x = th.randn(64, 256, dtype=th.float64)
    th.testing.assert_close(linear.linear(x, big.double(), relu=True), F.relu(F.linear(x, big.double())))
    monkeypatch.setenv(linear.KERNEL_ENV_VAR, "mkl")
    with pytest.raises(ValueError, match=r"SAC_PLUS_LINEAR='mkl' is not understood; accepted: auto, aten, onednn"):
        linear.chosen_plan(th.randn(64, 256), big)


def test_frozen_weight_gets_no_gradient_but_input_does() -> None:
    x = th.randn(32, 128, requires_grad=True)
    layer = linear.Linear(128, 128)
    layer.requires_grad_(False)
    layer(x).sum().backward()
    assert layer.weight.grad is None and layer.bias.grad is None
    th.testing.assert_close(x.grad, layer.weight.sum(dim=0).expand(32, -1), rtol=1e-5, atol=1e-5)


def test_mlp_has_sb3_s_state_dict_and_computes_the_plain_sequential(monkeypatch) -> None:
    monkeypatch.setenv(linear.KERNEL_ENV_VAR, "auto")
    mlp = linear.MLP(linear.Linear(4, 32), nn.ReLU(), linear.Linear(32, 32), nn.Tanh(), linear.Linear(32, 1))
    plain = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1))
    assert (
        list(mlp.state_dict())
        == list(plain.state_dict())
        == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    )
    plain.load_state_dict(mlp.state_dict())
    x = th.randn(16, 4)
    th.testing.assert_close(mlp(x), plain(x), rtol=1e-5, atol=1e-5)
    mlp(x).sum().backward()
    plain(x).sum().backward()
    for (name, p), q in zip(mlp.named_parameters(), plain.parameters(), strict=True):
        th.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-5, msg=name)
