"""Exporting a SACPlus agent to ``stable_baselines3.SAC``'s format (``SACPlus.save_as_sb3``).

SACPlus's policy has the modules and state-dict names of SB3's ``SACPolicy`` (actor ``latent_pi``, ``mu``,
``log_std``; critics ``qf0``, ``qf1``, ... as in ``ContinuousCritic``; ``mu.0`` with gSDE's clipped mean), and its
optimizers hold their parameters in the same order, so no tensor is reshaped either way. Reading an SB3 zip
is SB3's own ``load`` with SACPlus's policy class (:func:`sac_plus.checkpoint.load_model`); writing one, here,
is the zip ``SAC.save`` would write: SB3's policy class, the policy keywords SB3 knows and no attribute that
only SACPlus has, so that a process without ``sac_plus`` reads it with ``SAC.load``.
"""

from __future__ import annotations

import io
import pathlib
from typing import TYPE_CHECKING, Any

from gymnasium import spaces
from stable_baselines3.common.buffers import DictReplayBuffer, ReplayBuffer
from stable_baselines3.common.save_util import recursive_getattr, save_to_zip_file

from sac_plus import checkpoint
from sac_plus.checkpoint import IMPLEMENTATION_KEYS, sb3_policy_class

if TYPE_CHECKING:
    from sac_plus.sac import SACPlus

# Attributes of SACPlus that SB3's SAC does not have: left out of an exported zip
SACPLUS_ONLY_DATA = ("target_entropy_scale", "_target_entropy_spec", "on_divergence", "policy_delay", "use_target_critic")
# Policy keywords of SACPlusPolicy that SB3's SACPolicy does not take
SACPLUS_ONLY_POLICY_KWARGS = (
    "init_scheme", "matmul_dtype", "architecture", "block_expansion", "batch_norm", "batch_norm_momentum",
    "batch_norm_eps", "renorm_warmup_steps", "use_target_critic", "tanh_jacobian_eps",
)  # fmt: skip


def _sb3_data(model: SACPlus) -> dict[str, Any]:
    """The ``data`` entry SB3's ``SAC.save`` would write for this model."""
    data = model.__dict__.copy()
    state_dicts, torch_variables = model._get_torch_save_params()
    excluded = {*model._excluded_save_params(), *SACPLUS_ONLY_DATA}
    excluded.update(name.split(".")[0] for name in state_dicts + torch_variables)
    for key in excluded:
        data.pop(key, None)
    data["policy_class"] = sb3_policy_class(model.policy_class)
    data["policy_kwargs"] = {k: v for k, v in model.policy_kwargs.items() if k not in SACPLUS_ONLY_POLICY_KWARGS}
    buffer_class = data.get("replay_buffer_class")
    if buffer_class is not None and buffer_class.__module__.startswith("sac_plus"):
        # SACPlus's own buffers (the device buffer) are SB3 buffers with another storage: SB3 gets its default
        data["replay_buffer_class"] = DictReplayBuffer if isinstance(model.observation_space, spaces.Dict) else ReplayBuffer
        data["replay_buffer_kwargs"] = {}
    return data


def _sb3_parameters(model: SACPlus) -> dict[str, dict[str, Any]]:
    """Policy and optimizer state dicts, the optimizers without SACPlus's kernel choice (SB3 picks its own)."""
    params = model.get_parameters()
    for name, state in params.items():
        if name != "policy":
            for group in state["param_groups"]:
                for key in IMPLEMENTATION_KEYS:
                    group.pop(key, None)
    return params


def save_as_sb3(model: SACPlus, path: str | pathlib.Path | io.BufferedIOBase) -> None:
    """
    Write ``model`` as ``stable_baselines3.SAC.save`` would (atomically for a file path): the zip loads with
    ``SAC.load`` where ``sac_plus`` is not installed, with the same deterministic actions, Q-values, temperature
    and optimizer states, and training continues there.

    :raises ValueError: for Discrete actions (SB3's SAC has none) or a policy class SB3 has no counterpart for
    """
    if not isinstance(model.action_space, spaces.Box):
        raise ValueError(
            f"save_as_sb3 needs a Box action space: stable_baselines3.SAC has no Discrete actions (this model has "
            f"action_space={model.action_space}); save it with save() and load it with SACPlus.load"
        )
    policy = model.policy
    if policy.architecture != "mlp" or policy.batch_norm or policy.critic_target is None or model.policy_delay != 1:
        raise ValueError(
            "save_as_sb3 writes SB3 SAC's networks and update: this model has architecture="
            f"{policy.architecture!r}, batch_norm={policy.batch_norm}, use_target_critic={model.use_target_critic}, "
            f"policy_delay={model.policy_delay}; accepted: the SB3 SAC ones ('mlp', False, True, 1). Save it with save()"
        )
    data = _sb3_data(model)
    params = _sb3_parameters(model)
    # SB3's own policy must take these weights as they are: check before writing anything
    policy_kwargs = {k: v for k, v in data["policy_kwargs"].items() if k != "device"}
    sb3_policy = data["policy_class"](model.observation_space, model.action_space, model.lr_schedule, **policy_kwargs)
    sb3_policy.load_state_dict(params["policy"], strict=True)
    _, torch_variables = model._get_torch_save_params()
    pytorch_variables = {name: recursive_getattr(model, name) for name in torch_variables}
    checkpoint.write_atomically(
        path, "zip", lambda target: save_to_zip_file(target, data=data, params=params, pytorch_variables=pytorch_variables)
    )
