"""
Dense layers whose float32 matrix products run on oneDNN on the CPU.

PyTorch sends float32 ``addmm``/``mm`` on the CPU to MKL, which on non-Intel processors (the AMD EPYC this
project is developed on) runs its AVX2 kernels even where AVX-512 exists. oneDNN picks its kernels by
instruction set and was measured about 1.8x faster for the 256-wide layers of SAC here
(benchmarks/RESULTS.md). :func:`linear` is ``F.linear`` with forward and backward products done by oneDNN
when that applies (2-D float32 CPU tensors and a PyTorch built with oneDNN), and plain ``F.linear``
otherwise, so the arithmetic is the same up to float rounding.
"""

from __future__ import annotations

import torch as th
from torch.nn import functional as F

_HAS_ONEDNN_LINEAR = th.backends.mkldnn.is_available() and hasattr(th.ops.mkldnn, "_linear_pointwise")
# Below these sizes a product is dominated by call overhead, where the autograd.Function costs more than oneDNN
# gains: SAC's input and output layers, and the one-observation forward passes of acting (measured here: a
# 256x256 layer takes 6 us on F.linear and 22 us on oneDNN for one row, 330 us and 160 us for 256 rows).
MIN_ONEDNN_WEIGHTS = 128 * 128
MIN_ONEDNN_ROWS = 32


def _onednn_linear(x: th.Tensor, weight: th.Tensor, bias: th.Tensor | None) -> th.Tensor:
    """``x @ weight.T + bias`` by oneDNN (``weight`` is ``[out, in]`` as in ``nn.Linear``)."""
    return th.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _weight_gradient(grad_out: th.Tensor, x: th.Tensor, weight: th.Tensor) -> th.Tensor:
    """
    ``dL/dW = (dL/dy)^T @ x``, laid out in memory like ``weight``.

    A weight that is the transposed view of an ``[in, out]`` tensor (the ensemble layers' storage) gets
    ``(x^T @ dL/dy)^T``, a gradient whose transpose is contiguous: gradients in the other layout have to be
    transposed element by element on their way into the storage (measured here: 60-110 us for the stack of two
    256 x 256 gradients, against 8 us for contiguous ones).
    """
    if weight.t().is_contiguous() and not weight.is_contiguous():
        return _onednn_linear(x.t(), grad_out.t(), None).t()
    return _onednn_linear(grad_out.t(), x.t(), None)


class _OneDNNLinear(th.autograd.Function):
    @staticmethod
    def forward(ctx, x: th.Tensor, weight: th.Tensor, bias: th.Tensor | None) -> th.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn_linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out: th.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            # dL/dx = dL/dy @ W, i.e. a linear layer with weight W^T (oneDNN takes the transposed view as is)
            grad_x = _onednn_linear(grad_out, weight.t(), None)
        if ctx.needs_input_grad[1]:
            grad_weight = _weight_gradient(grad_out, x, weight)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_out.sum(dim=0)
        return grad_x, grad_weight, grad_bias


def uses_onednn(x: th.Tensor, weight: th.Tensor) -> bool:
    """Whether :func:`linear` sends the products of ``x`` (2-D) with ``weight`` (``[out, in]``) to oneDNN."""
    return (
        _HAS_ONEDNN_LINEAR
        and weight.numel() >= MIN_ONEDNN_WEIGHTS
        and x.dim() == 2
        and x.shape[0] >= MIN_ONEDNN_ROWS
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == th.float32
    )


def linear(x: th.Tensor, weight: th.Tensor, bias: th.Tensor | None = None) -> th.Tensor:
    """``F.linear(x, weight, bias)``, on oneDNN where :func:`uses_onednn` (``weight`` may be a transposed view)."""
    if not uses_onednn(x, weight):
        return F.linear(x, weight, bias)
    if th.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
        return _OneDNNLinear.apply(x, weight, bias)
    return _onednn_linear(x, weight, bias)  # no graph to record (e.g. target values): skip the Function


class Linear(th.nn.Linear):
    """``nn.Linear`` (same parameters and state dict) whose products use :func:`linear`."""

    def forward(self, x: th.Tensor) -> th.Tensor:
        return linear(x, self.weight, self.bias)
