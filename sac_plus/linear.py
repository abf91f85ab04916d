"""
Dense layers (optionally with their ReLU) as one autograd node whose CPU products are chosen by measurement.

One layer of SAC's MLPs is three products: the forward ``x W^T + b``, and in the backward ``dL/dx = g W`` and
``dL/dW = g^T x``. Each can be computed in more than one way with the same result up to float rounding: by
MKL through ATen (``addmm``/``mm``, what ``F.linear`` does), by oneDNN (``torch.ops.mkldnn._linear_pointwise``,
which picks its kernels by instruction set), or as the transpose of the transposed product
(``(x^T g)^T``), which for a narrow input (``x`` of 3 or 4 columns) is several times faster than ``g^T x`` on
the CPUs measured. Which one is fastest depends on the processor and the shape: on an AMD EPYC MKL runs AVX2
kernels where AVX-512 exists and oneDNN was faster, on an Intel Sapphire Rapids MKL was (benchmarks/RESULTS.md,
"Speed per CPU"). So no processor is hard-coded: the first time a shape is seen, :func:`probe` times every way
of each product on that shape (a few milliseconds) and keeps the fastest for the rest of the process
(:func:`kernel_choices` lists them; ``SACPlus(verbose=1)`` prints them). The environment variable
``SAC_PLUS_LINEAR`` overrides the probe: ``aten`` (always ATen, as ``F.linear``), ``onednn`` (oneDNN wherever it
applies) or ``auto`` (the default).

:class:`MLP` is an ``nn.Sequential`` (same modules and state-dict names as SB3's ``create_mlp``) whose forward
runs each ``Linear`` and the ``ReLU`` after it as one :class:`_Dense` node: one autograd node per layer instead
of four, the ReLU applied in place to the fresh product, and its backward a single ``threshold_backward``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Callable

import torch as th
from torch import nn
from torch.nn import functional as F

ATEN = "aten"
ONEDNN = "onednn"
AUTO = "auto"
KERNEL_ENV_VAR = "SAC_PLUS_LINEAR"
KERNELS = (AUTO, ATEN, ONEDNN)

_HAS_ONEDNN_LINEAR = th.backends.mkldnn.is_available() and hasattr(th.ops.mkldnn, "_linear_pointwise")
# Another way must be this much faster than ATen's to be chosen: near a tie ATen (what SB3 runs) stays, so
# that timing noise does not flip the choice from one process to the next.
_MARGIN = 0.9
# The probe's budget per candidate: the best of the timed repetitions is kept (timing noise only adds).
_PROBE_REPEATS = 7
_PROBE_SECONDS = 0.01
# A process that sees many shapes (e.g. predict on batches of every size) stops probing after this many: new
# shapes then use ATen's products.
_MAX_PROBED_SHAPES = 64


def _onednn(x: th.Tensor, weight: th.Tensor, bias: th.Tensor | None, relu: bool = False) -> th.Tensor:
    """``x @ weight.T + bias`` (then ReLU) by oneDNN; ``weight`` is ``[out, in]`` and may be a transposed view."""
    return th.ops.mkldnn._linear_pointwise(x, weight, bias, "relu" if relu else "none", [], "")


def _aten(x: th.Tensor, weight: th.Tensor, bias: th.Tensor | None, relu: bool = False) -> th.Tensor:
    """``x @ weight.T + bias`` (then ReLU, in place on the fresh product) by ATen, as ``F.linear`` computes it."""
    out = th.addmm(bias, x, weight.t()) if bias is not None else x.mm(weight.t())
    return out.relu_() if relu else out


def _bf16_mm(a: th.Tensor, b: th.Tensor) -> th.Tensor:
    """``a @ b`` with both rounded to bfloat16 (8 bits of mantissa), the product summed and returned in float32."""
    return a.to(th.bfloat16).mm(b.to(th.bfloat16)).float()


def _bf16(x: th.Tensor, weight: th.Tensor, bias: th.Tensor | None, relu: bool = False) -> th.Tensor:
    """``x @ weight.T + bias`` (then ReLU) with the product in bfloat16; bias and ReLU in float32."""
    out = _bf16_mm(x, weight.t())
    if bias is not None:
        out += bias
    return out.relu_() if relu else out


# Each way of computing a product: name -> function. Forward: (x, W, b, relu) -> y; input gradient: (g, W) -> g W;
# weight gradient: (g, x) -> g^T x, laid out [out, in] like the weight. The probe times the float32 ways;
# BFLOAT16 is the opt-in ``matmul_dtype="bfloat16"``, on any device.
BFLOAT16 = "bfloat16"
FORWARD: dict[str, Callable[..., th.Tensor]] = {ATEN: _aten, ONEDNN: _onednn, BFLOAT16: _bf16}
GRAD_INPUT: dict[str, Callable[[th.Tensor, th.Tensor], th.Tensor]] = {
    ATEN: lambda g, w: g.mm(w),
    "transposed": lambda g, w: w.t().mm(g.t()).t().contiguous(),
    ONEDNN: lambda g, w: _onednn(g, w.t(), None),
    BFLOAT16: _bf16_mm,
}
GRAD_WEIGHT: dict[str, Callable[[th.Tensor, th.Tensor], th.Tensor]] = {
    ATEN: lambda g, x: g.t().mm(x),
    "transposed": lambda g, x: x.t().mm(g).t().contiguous(),
    ONEDNN: lambda g, x: _onednn(g.t(), x.t(), None),
    BFLOAT16: lambda g, x: _bf16_mm(g.t(), x),
}


@dataclasses.dataclass(frozen=True)
class Plan:
    """How one layer shape computes its three products (names in :data:`FORWARD`, ...)."""

    forward: str = ATEN
    grad_input: str = ATEN
    grad_weight: str = ATEN


_ATEN_PLAN = Plan()
_ONEDNN_PLAN = Plan(ONEDNN, ONEDNN, ONEDNN)
_BF16_PLAN = Plan(BFLOAT16, BFLOAT16, BFLOAT16)
# (rows, in, out, relu, threads) -> (plan, {product: {way: seconds}})
_choices: dict[tuple[int, int, int, bool, int], tuple[Plan, dict[str, dict[str, float]]]] = {}


class _Dense(th.autograd.Function):
    """``relu?(x @ W^T + b)`` as one node, products as ``plan`` says."""

    @staticmethod
    def forward(ctx, x: th.Tensor, weight: th.Tensor, bias: th.Tensor | None, relu: bool, plan: Plan) -> th.Tensor:
        out = FORWARD[plan.forward](x, weight, bias, relu)
        ctx.save_for_backward(x, weight, out if relu else None)
        ctx.relu, ctx.plan, ctx.has_bias = relu, plan, bias is not None
        return out

    @staticmethod
    def backward(ctx, grad_out: th.Tensor):
        x, weight, out = ctx.saved_tensors
        needs_x, needs_w, needs_b = ctx.needs_input_grad[:3]
        grads = dense_backward(grad_out, x, weight, out, ctx.plan, needs_x, needs_w, needs_b and ctx.has_bias)
        return (*grads, None, None)


def dense_backward(
    grad_out: th.Tensor,
    x: th.Tensor,
    weight: th.Tensor,
    out: th.Tensor | None,
    plan: Plan,
    input_grad: bool = True,
    weight_grad: bool = True,
    bias_grad: bool = True,
) -> tuple[th.Tensor | None, th.Tensor | None, th.Tensor | None]:
    """
    The backward pass of ``out = relu?(x @ weight^T + b)``: the gradients of ``x``, ``weight`` and ``b`` (each
    ``None`` unless asked) from that of ``out``. ``out`` is the layer's output if a ReLU followed, else ``None``.
    """
    grad = grad_out.contiguous()  # the gradient of a mean arrives as an expanded (stride 0) tensor
    if out is not None:
        grad = th.ops.aten.threshold_backward(grad, out, 0)
    grad_x = GRAD_INPUT[plan.grad_input](grad, weight) if input_grad else None
    grad_w = GRAD_WEIGHT[plan.grad_weight](grad, x) if weight_grad else None
    grad_b = grad.sum(dim=0) if bias_grad else None
    return grad_x, grad_w, grad_b


def kernel_override() -> str:
    """The kernel ``SAC_PLUS_LINEAR`` asks for (``auto`` when unset); a value outside :data:`KERNELS` is an error."""
    value = os.environ.get(KERNEL_ENV_VAR, AUTO).strip().lower() or AUTO
    if value not in KERNELS:
        raise ValueError(f"{KERNEL_ENV_VAR}={value!r} is not understood; accepted: {', '.join(KERNELS)}")
    return value


def _best_time(call: Callable[[], object]) -> float:
    """Best wall time of ``call`` over a few repetitions (the first one, which warms caches, not counted)."""
    best = float("inf")
    # the results stay alive, so that each call writes to memory not yet in the cache, as in an update, where the
    # activations of every layer are kept for the backward pass (a probe that reuses one hot buffer favours the
    # ways with separate passes over the output, which are slower in training)
    kept = []
    deadline = time.perf_counter() + _PROBE_SECONDS
    for repeat in range(_PROBE_REPEATS + 1):
        start = time.perf_counter()
        kept.append(call())
        if repeat > 0:
            best = min(best, time.perf_counter() - start)
        if repeat > 1 and time.perf_counter() > deadline:
            break
    return best


def _fastest(ways: dict[str, Callable[[], object]]) -> tuple[str, dict[str, float]]:
    """The fastest way (ATen unless another beats it by the margin), and every measured time."""
    times = {name: _best_time(call) for name, call in ways.items()}
    times[ATEN] = min(times[ATEN], _best_time(ways[ATEN]))  # measured first and last: a slow phase hits both
    best = min(times, key=times.__getitem__)
    return (best if times[best] < _MARGIN * times[ATEN] else ATEN), times


def probe(rows: int, in_features: int, out_features: int, relu: bool) -> tuple[Plan, dict[str, dict[str, float]]]:
    """
    Time every way of each of the layer's three products on random tensors of this shape, at the current thread
    count, from a generator of its own (the global random state is not touched).

    :return: the fastest plan, and the measured seconds per product and way
    """
    generator = th.Generator().manual_seed(0)
    x, grad = th.randn(rows, in_features, generator=generator), th.randn(rows, out_features, generator=generator)
    weight = th.randn(out_features, in_features, generator=generator)
    bias = th.randn(out_features, generator=generator)
    ways = [ATEN, ONEDNN] if _HAS_ONEDNN_LINEAR else [ATEN]
    with th.no_grad():
        forward, forward_times = _fastest({way: functools.partial(FORWARD[way], x, weight, bias, relu) for way in ways})
        grad_input, input_times = _fastest(
            {way: functools.partial(GRAD_INPUT[way], grad, weight) for way in [*ways, "transposed"]}
        )
        grad_weight, weight_times = _fastest(
            {way: functools.partial(GRAD_WEIGHT[way], grad, x) for way in [*ways, "transposed"]}
        )
    times = {"forward": forward_times, "grad_input": input_times, "grad_weight": weight_times}
    return Plan(forward, grad_input, grad_weight), times


def _applies(x: th.Tensor, weight: th.Tensor) -> bool:
    """The products of :class:`_Dense` apply to these tensors (2-D float32 on the CPU)."""
    return x.dim() == 2 and x.device.type == "cpu" and x.dtype == weight.dtype == th.float32


def chosen_plan(x: th.Tensor, weight: th.Tensor, relu: bool = False) -> Plan | None:
    """The plan of :func:`linear` for ``x`` (2-D) and ``weight`` (``[out, in]``), probed once per shape;
    ``None`` where only ``F.linear`` applies (other devices, dtypes or ranks)."""
    if not _applies(x, weight):
        return None
    override = kernel_override()
    if override == ATEN:
        return _ATEN_PLAN
    if override == ONEDNN:
        return _ONEDNN_PLAN if _HAS_ONEDNN_LINEAR else _ATEN_PLAN
    key = (x.shape[0], weight.shape[1], weight.shape[0], relu, th.get_num_threads())
    choice = _choices.get(key)
    if choice is None:
        if len(_choices) >= _MAX_PROBED_SHAPES:
            return _ATEN_PLAN
        choice = _choices[key] = probe(*key[:4])
    return choice[0]


def kernel_choices() -> list[dict[str, object]]:
    """What the probe chose so far in this process, one entry per shape, with the measured times (us)."""
    return [
        dict(
            rows=rows,
            in_features=in_features,
            out_features=out_features,
            relu=relu,
            threads=threads,
            **dataclasses.asdict(plan),
            times_us={product: {way: round(s * 1e6, 1) for way, s in ways.items()} for product, ways in times.items()},
        )
        for (rows, in_features, out_features, relu, threads), (plan, times) in _choices.items()
    ]


def describe_kernel_choices() -> str:
    """One line per probed shape, for verbose output."""
    return "\n".join(
        f"  [{c['rows']} x {c['in_features']}] -> {c['out_features']}{' +relu' if c['relu'] else ''}, "
        f"{c['threads']} thread(s): forward {c['forward']}, grad_input {c['grad_input']}, grad_weight {c['grad_weight']}"
        for c in kernel_choices()
    )


def reset_kernel_choices() -> None:
    """Forget the probed choices (the next call of each shape probes again)."""
    _choices.clear()


MATMUL_DTYPES = ("float32", "bfloat16")


def check_matmul_dtype(matmul_dtype: str) -> str:
    if matmul_dtype not in MATMUL_DTYPES:
        raise ValueError(f"matmul_dtype={matmul_dtype!r} is not understood; accepted: {', '.join(map(repr, MATMUL_DTYPES))}")
    return matmul_dtype


def linear(
    x: th.Tensor, weight: th.Tensor, bias: th.Tensor | None = None, relu: bool = False, bf16: bool = False
) -> th.Tensor:
    """
    ``F.linear(x, weight, bias)`` (then ``relu`` if asked), computed as :func:`chosen_plan` says; with ``bf16``,
    the three products in bfloat16 (inputs rounded to 8 bits of mantissa, sums in float32) on any device, while
    parameters, gradients, bias and ReLU stay float32.
    """
    if bf16 and x.dtype == weight.dtype == th.float32 and x.dim() == 2:
        plan: Plan | None = _BF16_PLAN
    else:
        plan = chosen_plan(x, weight, relu)
    if plan is None:
        out = F.linear(x, weight, bias)
        return F.relu(out) if relu else out
    if th.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
        return _Dense.apply(x, weight, bias, relu, plan)
    return FORWARD[plan.forward](x, weight, bias, relu)  # no graph to record (targets, acting)


class Linear(nn.Linear):
    """
    ``nn.Linear`` (same parameters and state dict) whose products use :func:`linear`; with ``bf16`` set (the
    policy's ``matmul_dtype="bfloat16"``), in bfloat16.
    """

    bf16 = False

    def forward(self, x: th.Tensor) -> th.Tensor:
        return linear(x, self.weight, self.bias, bf16=self.bf16)


class MLP(nn.Sequential):
    """
    ``nn.Sequential`` of layers as SB3's ``create_mlp`` builds them (same state-dict names), whose forward runs a
    :class:`Linear` and the ``nn.ReLU`` after it as one :func:`linear` call with ``relu=True``.
    """

    def forward(self, x: th.Tensor) -> th.Tensor:
        modules = list(self)
        index = 0
        while index < len(modules):
            module = modules[index]
            if (
                isinstance(module, Linear)
                and index + 1 < len(modules)
                and type(modules[index + 1]) is nn.ReLU
                and not modules[index + 1].inplace
            ):
                x = linear(x, module.weight, module.bias, relu=True, bf16=module.bf16)
                index += 2
            else:
                x = module(x)
                index += 1
        return x
