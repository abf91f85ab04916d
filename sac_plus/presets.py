"""
SACPlus keywords of published methods, ``policy`` included: ``SACPlus(env=env, **presets.CROSSQ)``.

Each dict holds the method's published hyperparameters where they differ from SACPlus's defaults (which are SB3
SAC's); update it like any keyword dict (``{**presets.CROSSQ, "learning_starts": 100}``), or start from
:func:`get`, which returns a copy that is safe to change. The same entries are in the rl-zoo3 files
``sac_plus/zoo/crossq.yml`` and ``sac_plus/zoo/simba.yml`` (a test keeps them equal).

- :data:`CROSSQ`: Bhatt et al., "CrossQ: Batch Normalization in Deep Reinforcement Learning for Greater Sample
  Efficiency and Simplicity", ICLR 2024 (https://arxiv.org/abs/1902.05605): batch renormalisation in actor and
  critics, no target critic (one joint forward pass over ``[s; s']``), wide critics, Adam's beta1 = 0.5,
  learning rate 1e-3, the actor and temperature updated every 3rd critic update; the values of rl-zoo3's CrossQ
  entries for MuJoCo (critics of 2048 units, ``learning_starts=5000``).
- :data:`SIMBA`: Lee et al., "SimBa: Simplicity Bias for Scaling Up Parameters in Deep Reinforcement Learning",
  ICLR 2025 (https://arxiv.org/abs/2410.09754), its SAC configuration: running observation normalisation,
  residual blocks with pre-LayerNorm (actor one block of 128, critics two blocks of 512), AdamW with learning rate
  1e-4 and weight decay 1e-2, initial temperature 0.01. Left as SACPlus's defaults: one update per env step
  (SimBa's SAC uses 2), the target entropy ``-dim(A)`` (SimBa's ``-dim(A)/2``) and the discount 0.99.

Both work with Box and Discrete action spaces.
"""

from __future__ import annotations

import copy
from typing import Any

import torch as th

__all__ = ["CROSSQ", "PRESETS", "SIMBA", "get"]

CROSSQ: dict[str, Any] = dict(
    policy="CrossQPolicy",
    learning_rate=1e-3,
    learning_starts=5000,
    policy_delay=3,
    use_target_critic=False,
    policy_kwargs=dict(
        net_arch=dict(pi=[256, 256], qf=[2048, 2048]),
        optimizer_kwargs=dict(betas=(0.5, 0.999)),
        batch_norm_momentum=0.01,
        batch_norm_eps=1e-3,
        renorm_warmup_steps=100_000,
    ),
)

SIMBA: dict[str, Any] = dict(
    policy="SimbaPolicy",
    learning_rate=1e-4,
    ent_coef="auto_0.01",
    policy_kwargs=dict(
        net_arch=dict(pi=[128], qf=[512, 512]),
        optimizer_class=th.optim.AdamW,
        optimizer_kwargs=dict(weight_decay=1e-2),
    ),
)

PRESETS: dict[str, dict[str, Any]] = {"CROSSQ": CROSSQ, "SIMBA": SIMBA}


def get(name: str) -> dict[str, Any]:
    """A copy of the preset ``name`` (``"CROSSQ"`` or ``"SIMBA"``, any case), safe to change."""
    preset = PRESETS.get(name.upper())
    if preset is None:
        raise ValueError(f"preset {name!r} is not known; accepted: {', '.join(map(repr, PRESETS))}")
    return copy.deepcopy(preset)
