"""
Dense layers whose CPU matrix products take the faster of two kernels, chosen by measuring on the machine at hand.

PyTorch sends float32 ``addmm``/``mm`` on the CPU to MKL (ATen's ``F.linear``). oneDNN
(``torch.ops.mkldnn._linear_pointwise``) computes the same product with kernels it picks by instruction set.
Which one is faster depends on the processor: on AMD EPYC CPUs MKL runs AVX2 kernels where AVX-512 exists and
oneDNN was measured about 1.8x faster for 256-wide layers, while on an Intel Sapphire Rapids MKL was the faster
one (benchmarks/RESULTS.md, "Speed per CPU"). So no processor is hard-coded: the first time :func:`linear` sees a
shape, it times both kernels on that shape (forward, plus backward where a gradient is needed) and keeps the
faster one for the rest of the process (:func:`kernel_choices` lists what was chosen). The environment variable
``SAC_PLUS_LINEAR`` overrides the probe: ``aten`` (always ``F.linear``), ``onednn`` (oneDNN wherever it applies)
or ``auto`` (the default). Both kernels compute the same product up to float rounding (tests/test_linear.py).
"""

from __future__ import annotations

import os
import time

import torch as th
from torch.nn import functional as F

ATEN = "aten"
ONEDNN = "onednn"
AUTO = "auto"
KERNEL_ENV_VAR = "SAC_PLUS_LINEAR"
KERNELS = (AUTO, ATEN, ONEDNN)

_HAS_ONEDNN_LINEAR = th.backends.mkldnn.is_available() and hasattr(th.ops.mkldnn, "_linear_pointwise")
# oneDNN has to be this much faster to be chosen: near a tie, ATen (what SB3 runs) stays, so that small timing
# noise does not flip the choice from one process to the next.
_ONEDNN_MARGIN = 0.9
# The probe's budget per shape and kernel; the best of the timed repetitions is kept (timing noise only adds).
_PROBE_REPEATS = 7
_PROBE_SECONDS = 0.02
# A process that sees many shapes (e.g. predict on batches of every size) stops probing after this many: new
# shapes then use ATen.
_MAX_PROBED_SHAPES = 64

# (rows, in, out, x needs grad, weight needs grad, threads) -> (kernel, ATen seconds, oneDNN seconds)
_choices: dict[tuple[int, int, int, bool, bool, int], tuple[str, float, float]] = {}


def _onednn_linear(x: th.Tensor, weight: th.Tensor, bias: th.Tensor | None) -> th.Tensor:
    """``x @ weight.T + bias`` by oneDNN (``weight`` is ``[out, in]`` as in ``nn.Linear``)."""
    return th.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


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
            # dL/dW = (dL/dy)^T @ x, laid out [out, in] like the weight
            grad_weight = _onednn_linear(grad_out.t(), x.t(), None)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_out.sum(dim=0)
        return grad_x, grad_weight, grad_bias


def _needs_graph(x: th.Tensor, weight: th.Tensor, bias: th.Tensor | None) -> bool:
    return th.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))


def _onednn(x: th.Tensor, weight: th.Tensor, bias: th.Tensor | None) -> th.Tensor:
    if _needs_graph(x, weight, bias):
        return _OneDNNLinear.apply(x, weight, bias)
    return _onednn_linear(x, weight, bias)  # no graph to record (e.g. target values): skip the Function


def kernel_override() -> str:
    """The kernel ``SAC_PLUS_LINEAR`` asks for (``auto`` when unset); a value outside :data:`KERNELS` is an error."""
    value = os.environ.get(KERNEL_ENV_VAR, AUTO).strip().lower() or AUTO
    if value not in KERNELS:
        raise ValueError(f"{KERNEL_ENV_VAR}={value!r} is not understood; accepted: {', '.join(KERNELS)}")
    return value


def _time_kernel(kernel, x: th.Tensor, weight: th.Tensor, bias: th.Tensor | None) -> float:
    """Best wall time of one call (forward, and backward when the inputs need gradients)."""
    backward = _needs_graph(x, weight, bias)
    best = float("inf")
    deadline = time.perf_counter() + _PROBE_SECONDS
    for repeat in range(_PROBE_REPEATS + 1):
        start = time.perf_counter()
        out = kernel(x, weight, bias)
        if backward:
            out.sum().backward()
        if repeat > 0:  # the first call warms caches and allocates
            best = min(best, time.perf_counter() - start)
        if time.perf_counter() > deadline and repeat > 1:
            break
    return best


def probe(rows: int, in_features: int, out_features: int, x_grad: bool, weight_grad: bool) -> tuple[str, float, float]:
    """
    Time ATen and oneDNN on random tensors of this shape and gradient pattern, at the current thread count.

    :return: the faster kernel (oneDNN only when faster by the margin), and the two times in seconds
    """
    generator = th.Generator().manual_seed(0)
    x = th.randn(rows, in_features, generator=generator).requires_grad_(x_grad)
    weight = th.randn(out_features, in_features, generator=generator).requires_grad_(weight_grad)
    bias = th.randn(out_features, generator=generator).requires_grad_(weight_grad)
    with th.enable_grad():
        aten = _time_kernel(F.linear, x, weight, bias)
        onednn = _time_kernel(_onednn, x, weight, bias)
        aten = min(aten, _time_kernel(F.linear, x, weight, bias))  # alternate, so a slow phase hits both
    return (ONEDNN if onednn < _ONEDNN_MARGIN * aten else ATEN), aten, onednn


def _applies(x: th.Tensor, weight: th.Tensor) -> bool:
    """oneDNN's product is available for these tensors (2-D float32 on the CPU)."""
    return _HAS_ONEDNN_LINEAR and x.dim() == 2 and x.device.type == "cpu" and x.dtype == weight.dtype == th.float32


def chosen_kernel(x: th.Tensor, weight: th.Tensor, bias: th.Tensor | None = None) -> str:
    """The kernel :func:`linear` uses for ``x`` (2-D) and ``weight`` (``[out, in]``): probed once per shape."""
    override = kernel_override()
    if override == ATEN or not _applies(x, weight):
        return ATEN
    if override == ONEDNN:
        return ONEDNN
    grad = th.is_grad_enabled()
    key = (
        x.shape[0],
        weight.shape[1],
        weight.shape[0],
        grad and x.requires_grad,
        grad and weight.requires_grad,
        th.get_num_threads(),
    )
    choice = _choices.get(key)
    if choice is None:
        if len(_choices) >= _MAX_PROBED_SHAPES:
            return ATEN
        choice = _choices[key] = probe(*key[:5])
    return choice[0]


def kernel_choices() -> list[dict[str, object]]:
    """What the probe chose so far in this process, one entry per shape, with both measured times."""
    return [
        dict(
            rows=rows,
            in_features=in_features,
            out_features=out_features,
            backward=x_grad or w_grad,
            threads=threads,
            kernel=kernel,
            aten_us=round(aten * 1e6, 1),
            onednn_us=round(onednn * 1e6, 1),
        )
        for (rows, in_features, out_features, x_grad, w_grad, threads), (kernel, aten, onednn) in _choices.items()
    ]


def describe_kernel_choices() -> str:
    """One line per probed shape, for verbose output."""
    return "\n".join(
        f"  [{c['rows']} x {c['in_features']}] -> {c['out_features']}"
        f"{' +backward' if c['backward'] else ''}, {c['threads']} thread(s): {c['kernel']} "
        f"(aten {c['aten_us']} us, onednn {c['onednn_us']} us)"
        for c in kernel_choices()
    )


def reset_kernel_choices() -> None:
    """Forget the probed choices (the next call of each shape probes again)."""
    _choices.clear()


def linear(x: th.Tensor, weight: th.Tensor, bias: th.Tensor | None = None) -> th.Tensor:
    """``F.linear(x, weight, bias)``, computed by the kernel :func:`chosen_kernel` picks."""
    if chosen_kernel(x, weight, bias) == ONEDNN:
        return _onednn(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(th.nn.Linear):
    """``nn.Linear`` (same parameters and state dict) whose products use :func:`linear`."""

    def forward(self, x: th.Tensor) -> th.Tensor:
        return linear(x, self.weight, self.bias)
