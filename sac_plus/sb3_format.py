"""Moving agents between SACPlus and ``stable_baselines3.SAC``, in both directions.

SACPlus's policy has the modules and state-dict names of SB3's ``SACPolicy`` (actor ``latent_pi``, ``mu``,
``log_std``; critics ``qf0``, ``qf1``, ... as in ``ContinuousCritic``; ``mu.0`` with gSDE's clipped mean), and its
optimizers hold their parameters in the same order. So no tensor is reshaped either way:

- **In** (``SACPlus.load_from_sb3``, or ``SACPlus.load`` of an SB3 zip): SB3's own ``load`` reads the file, with
  SACPlus's policy class in place of SB3's (:func:`sb3_load_arguments`); afterwards :func:`adopt_sb3_model`
  drops what only SB3 keeps and gives the optimizers back their fused kernels.
- **Out** (``SACPlus.save_as_sb3``, :func:`save_as_sb3`): the zip ``SAC.save`` would write: SB3's policy class,
  the policy keywords SB3 knows, no attribute that only SACPlus has, so that a process without ``sac_plus`` reads
  it with ``SAC.load``.
"""

from __future__ import annotations

import io
import pathlib
from typing import TYPE_CHECKING, Any

from gymnasium import spaces
from stable_baselines3.common.buffers import DictReplayBuffer, ReplayBuffer
from stable_baselines3.common.save_util import recursive_getattr, save_to_zip_file
from stable_baselines3.sac import policies as sb3_policies

from sac_plus import checkpoint, policies

if TYPE_CHECKING:
    from sac_plus.sac import SACPlus

# Attributes of SB3 SAC's saved ``data`` that SACPlus has no use for (SACPlus finds batch-norm statistics itself)
SB3_ONLY_DATA = ("batch_norm_stats", "batch_norm_stats_target")
# Attributes of SACPlus that SB3's SAC does not have: left out of an exported zip
SACPLUS_ONLY_DATA = ("target_entropy_scale", "_target_entropy_spec", "on_divergence")
# Policy keywords of SACPlusPolicy that SB3's SACPolicy does not take
SACPLUS_ONLY_POLICY_KWARGS = ("init_scheme",)
# The optimizer settings that say how the update runs, not what it computes: SACPlus picks fused kernels
_IMPLEMENTATION_KEYS = ("foreach", "fused", "capturable", "differentiable")

# Each SB3 SAC policy and SACPlus's counterpart (same features extractor by default)
_POLICY_PAIRS = (
    (sb3_policies.CnnPolicy, policies.CnnPolicy),
    (sb3_policies.MultiInputPolicy, policies.MultiInputPolicy),
    (sb3_policies.SACPolicy, policies.SACPlusPolicy),
)


def our_policy_class(sb3_policy_class: type) -> type[policies.SACPlusPolicy]:
    """SACPlus's policy for SB3's."""
    return next(ours for theirs, ours in _POLICY_PAIRS if issubclass(sb3_policy_class, theirs))


def sb3_policy_class(our_class: type) -> type[sb3_policies.SACPolicy]:
    """SB3's policy for SACPlus's; a subclass of our own policies has no counterpart (it may add modules)."""
    for theirs, ours in _POLICY_PAIRS:
        if our_class is ours:
            return theirs
    raise ValueError(
        f"the policy class {our_class.__module__}.{our_class.__qualname__} has no counterpart in stable_baselines3.SAC; "
        "accepted: SACPlus's MlpPolicy, CnnPolicy or MultiInputPolicy"
    )


def sb3_load_arguments(
    info: checkpoint.CheckpointInfo, custom_objects: dict[str, Any] | None, kwargs: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """What SB3's ``load`` needs to read an SB3 SAC zip into SACPlus: SACPlus's policy class in place of SB3's."""
    assert info.policy_class is not None
    custom_objects = {**(custom_objects or {}), "policy_class": our_policy_class(info.policy_class)}
    return custom_objects, kwargs


def _use_fast_optimizer_kernels(optimizer: Any, optimizer_kwargs: dict[str, Any]) -> None:
    """Give an optimizer loaded from SB3's state the kernels :func:`~sac_plus.policies.build_optimizer` picks."""
    fresh = policies.build_optimizer(
        type(optimizer), [p for g in optimizer.param_groups for p in g["params"]], 0.0, optimizer_kwargs
    )
    for group, fresh_group in zip(optimizer.param_groups, fresh.param_groups, strict=False):
        group.update({key: fresh_group[key] for key in _IMPLEMENTATION_KEYS if key in fresh_group})


def adopt_sb3_model(model: SACPlus) -> None:
    """Finish reading an SB3 SAC zip: drop SB3-only attributes, use SACPlus's optimizer kernels."""
    for key in SB3_ONLY_DATA:
        model.__dict__.pop(key, None)
    model._target_entropy_spec = model.target_entropy  # SB3 saves the target in use; keep it, not our "auto"
    for optimizer in (model.actor.optimizer, model.critic.optimizer):
        _use_fast_optimizer_kernels(optimizer, model.policy.optimizer_kwargs)
    if model.ent_coef_optimizer is not None:
        _use_fast_optimizer_kernels(model.ent_coef_optimizer, {})


def layout_hint(error: BaseException) -> str:
    """A hint for a load error caused by the batched critic layout that sac_plus 0.1 saved."""
    if "q_networks.net" in str(error):
        return (
            ". The file stores the critics in the batched layout of sac_plus 0.1 (critic.q_networks.net.*), which "
            "this version does not read: it stores them as SB3 does (critic.qf0, ...), see docs/design_changes.md"
        )
    return ""


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
                for key in _IMPLEMENTATION_KEYS:
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
    data = _sb3_data(model)
    params = _sb3_parameters(model)
    # SB3's own policy must take these weights as they are: check before writing anything
    policy_kwargs = {k: v for k, v in data["policy_kwargs"].items() if k != "device"}
    sb3_policy = data["policy_class"](model.observation_space, model.action_space, model.lr_schedule, **policy_kwargs)
    sb3_policy.load_state_dict(params["policy"], strict=True)
    _, torch_variables = model._get_torch_save_params()
    pytorch_variables = {name: recursive_getattr(model, name) for name in torch_variables}
    if isinstance(path, io.BufferedIOBase):
        save_to_zip_file(path, data=data, params=params, pytorch_variables=pytorch_variables)
        return
    with checkpoint.atomic_write_path(path, "zip") as tmp:
        save_to_zip_file(tmp, data=data, params=params, pytorch_variables=pytorch_variables)
