"""The layers of SACPlus's actors and critics: SB3's MLP, its batch-renormalised form, and SimBa's residual network.

:class:`NetworkSpec` says how the hidden layers are built; :meth:`NetworkSpec.body` builds them and
:meth:`NetworkSpec.head` the output layer, so that every actor and critic is ``body + head`` whatever the
architecture:

- ``"mlp"``: ``Linear, act, Linear, act, ...`` as SB3's ``create_mlp`` (same state-dict names);
  with ``batch_norm``, a :class:`~sac_plus.normalization.BatchRenorm` before every ``Linear`` and after the
  last hidden layer, as sb3-contrib's CrossQ lays it out (Bhatt et al. 2024);
- ``"simba"``: ``Linear`` to the width, residual blocks ``x + MLP(LayerNorm(x))``, then ``LayerNorm``
  (Lee et al. 2025, https://arxiv.org/abs/2410.09754, section 4.1); ``net_arch`` lists one width per block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch as th
from torch import nn

from sac_plus.linear import Linear, linear
from sac_plus.normalization import BatchRenorm

ARCHITECTURES = ("mlp", "simba")
# BatchRenorm's keywords under the names sb3-contrib's CrossQ policies give them
BATCH_NORM_MOMENTUM = 0.01
BATCH_NORM_EPS = 1e-3
RENORM_WARMUP_STEPS = 100_000


def init_hidden_(weight: th.Tensor, bias: th.Tensor) -> None:
    """Hidden layers: orthogonal with the ReLU gain sqrt(2), zero bias (keeps activations' scale through depth)."""
    nn.init.orthogonal_(weight, gain=math.sqrt(2.0))
    nn.init.zeros_(bias)


def init_final_(weight: th.Tensor, bias: th.Tensor) -> None:
    """
    Final layers: uniform in +-3e-3 (Lillicrap et al. 2016), so initial Q-values and policy means are near 0
    and the initial log std is near 0 whatever the hidden features are.
    """
    nn.init.uniform_(weight, -3e-3, 3e-3)
    nn.init.uniform_(bias, -3e-3, 3e-3)


def final_linear(input_dim: int, output_dim: int, init_scheme: str) -> Linear:
    layer = Linear(input_dim, output_dim)
    if init_scheme == "orthogonal":
        init_final_(layer.weight, layer.bias)
    return layer


class ResidualBlock(nn.Module):
    """
    SimBa's block ``x + W2 relu(W1 LayerNorm(x))`` with ``W1``: width -> ``expansion`` * width, ``W2`` back;
    He-normal weights and zero biases (SimBa's initialisation).
    """

    def __init__(self, width: int, expansion: int = 4):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.expand = Linear(width, width * expansion)
        self.project = Linear(width * expansion, width)
        for layer in (self.expand, self.project):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)

    def forward(self, x: th.Tensor) -> th.Tensor:
        hidden = linear(self.norm(x), self.expand.weight, self.expand.bias, relu=True, bf16=self.expand.bf16)
        return x + self.project(hidden)


@dataclass(frozen=True)
class NetworkSpec:
    """
    How the layers of one actor or critic are built.

    :param activation_fn: activation after each hidden ``Linear`` (``"mlp"``; SimBa's blocks use ReLU)
    :param init_scheme: ``"pytorch"`` or ``"orthogonal"`` for the ``"mlp"`` layers and every head
    :param architecture: ``"mlp"`` or ``"simba"``
    :param batch_norm: ``"mlp"`` only: ``batch_norm_momentum``, ``batch_norm_eps`` and ``renorm_warmup_steps``
        (the policy keywords) of the batch renormalisation layers, or ``None`` for none
    :param block_expansion: ``"simba"`` only: width multiplier inside a residual block
    """

    activation_fn: type[nn.Module] = nn.ReLU
    init_scheme: str = "pytorch"
    architecture: str = "mlp"
    batch_norm: dict[str, Any] | None = field(default=None)
    block_expansion: int = 4

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"architecture={self.architecture!r} is not understood; accepted: {', '.join(map(repr, ARCHITECTURES))}"
            )
        if self.batch_norm is not None and self.architecture != "mlp":
            raise ValueError(
                f"batch_norm=True goes with architecture='mlp', not {self.architecture!r} (SimBa normalises with "
                "LayerNorm); accepted: batch_norm=False"
            )

    def _renorm(self, num_features: int) -> BatchRenorm:
        assert self.batch_norm is not None
        return BatchRenorm(
            num_features,
            momentum=self.batch_norm["batch_norm_momentum"],
            eps=self.batch_norm["batch_norm_eps"],
            warmup_steps=self.batch_norm["renorm_warmup_steps"],
        )

    def body(self, input_dim: int, net_arch: list[int]) -> list[nn.Module]:
        """The hidden layers, from ``input_dim`` to a latent of width ``net_arch[-1]`` (``input_dim`` if empty)."""
        if self.architecture == "simba":
            return self._simba_body(input_dim, net_arch)
        layers: list[nn.Module] = []
        for width in net_arch:
            if self.batch_norm is not None:
                layers.append(self._renorm(input_dim))
            layer = Linear(input_dim, width)
            if self.init_scheme == "orthogonal":
                init_hidden_(layer.weight, layer.bias)
            layers += [layer, self.activation_fn()]
            input_dim = width
        if self.batch_norm is not None:
            layers.append(self._renorm(input_dim))  # the heads read normalised features too
        return layers

    def _simba_body(self, input_dim: int, net_arch: list[int]) -> list[nn.Module]:
        if not net_arch or len(set(net_arch)) != 1:
            raise ValueError(
                f"net_arch={net_arch} does not describe SimBa blocks; accepted: one width per residual block, all the "
                "same, e.g. [512, 512] for two blocks of width 512"
            )
        width = net_arch[0]
        embed = Linear(input_dim, width)
        nn.init.orthogonal_(embed.weight)
        nn.init.zeros_(embed.bias)
        return [embed, *(ResidualBlock(width, self.block_expansion) for _ in net_arch), nn.LayerNorm(width)]

    def head(self, input_dim: int, output_dim: int) -> Linear:
        return final_linear(input_dim, output_dim, self.init_scheme)
