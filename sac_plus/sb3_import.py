"""Import an agent saved by ``stable_baselines3.SAC`` into :class:`~sac_plus.SACPlus`.

The two policies hold the same numbers in different layouts:

- actor: the same module names (``features_extractor``, ``latent_pi``, ``mu``, ``log_std``), copied as they are.
  With gSDE and ``clip_mean > 0``, SB3 wraps ``mu`` in ``nn.Sequential(Linear, Hardtanh)`` (``mu.0.weight``);
  SACPlus clamps in ``forward`` instead (``mu.weight``), which computes the same.
- critics: SB3 has one ``nn.Sequential`` per critic, ``critic.qf{k}.{i}.weight`` of shape ``[out, in]``;
  SACPlus batches them, ``critic.q_networks.net.{i}.weight`` of shape ``[n_critics, in, out]`` (transposed and
  stacked) and ``bias`` of shape ``[n_critics, 1, out]``. The same for ``critic_target``.
- optimizers: each state tensor shaped like its parameter (Adam's ``exp_avg``, ``exp_avg_sq``) is mapped with
  the same transpose/stack; scalars (Adam's ``step``) are copied. So training resumes where SB3 stopped,
  with the same moments. The temperature (``log_ent_coef`` or the fixed ``ent_coef_tensor``) and its optimizer
  are copied.

Hyperparameters, counters (``num_timesteps``, ``_n_updates``) and spaces come from the zip's ``data`` as SB3's
``load`` reads them. What differs after import (see README, "Coming from stable_baselines3.SAC"): SACPlus counts
``target_update_interval`` across ``learn()`` calls, and updates critic, actor, then temperature.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch as th
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.sac import policies as sb3_policies

from sac_plus import policies
from sac_plus.checkpoint import SACPLUS, SB3_SAC, PathOrFile, inspect_checkpoint, wrap_and_check_env

if TYPE_CHECKING:
    from stable_baselines3.common.type_aliases import GymEnv

    from sac_plus.sac import SACPlus

# Attributes of SB3 SAC's saved ``data`` that SACPlus has no use for (SACPlus finds batch-norm statistics itself)
_SB3_ONLY_DATA = ("batch_norm_stats", "batch_norm_stats_target")

_ENSEMBLE_PARAMETER = re.compile(r"^(?P<prefix>(?:.*\.)?)q_networks\.net\.(?P<layer>\d+)\.(?P<kind>weight|bias)$")
_MU_PARAMETER = re.compile(r"^(?P<prefix>(?:.*\.)?)mu\.(?P<kind>weight|bias)$")

Combine = Callable[[list[th.Tensor]], th.Tensor]


def _stack_weights(tensors: list[th.Tensor]) -> th.Tensor:
    """``n`` nn.Linear weights ``[out, in]`` -> one ensemble weight ``[n, in, out]``."""
    return th.stack([tensor.transpose(0, 1) for tensor in tensors]).contiguous()


def _stack_biases(tensors: list[th.Tensor]) -> th.Tensor:
    """``n`` nn.Linear biases ``[out]`` -> one ensemble bias ``[n, 1, out]``."""
    return th.stack([tensor.unsqueeze(0) for tensor in tensors])


def _single(tensors: list[th.Tensor]) -> th.Tensor:
    return tensors[0]


def sb3_sources(name: str, n_critics: int, sb3_names: set[str] | dict[str, Any]) -> tuple[list[str], Combine]:
    """
    The SB3 SAC tensors that make up SACPlus's tensor ``name``, and how to combine them.

    Works for full state-dict names (``critic.q_networks.net.0.weight``) and for names relative to a module
    (``q_networks.net.0.weight``).
    """
    match = _ENSEMBLE_PARAMETER.match(name)
    if match:
        names = [f"{match['prefix']}qf{k}.{match['layer']}.{match['kind']}" for k in range(n_critics)]
        return names, _stack_weights if match["kind"] == "weight" else _stack_biases
    if name not in sb3_names:
        match = _MU_PARAMETER.match(name)
        if match and f"{match['prefix']}mu.0.{match['kind']}" in sb3_names:
            return [f"{match['prefix']}mu.0.{match['kind']}"], _single
    return [name], _single


def convert_state_dict(sb3_state: dict[str, th.Tensor], target: th.nn.Module, n_critics: int) -> dict[str, th.Tensor]:
    """
    SB3 SAC's policy state dict in SACPlus's layout, for ``target`` (a :class:`~sac_plus.SACPlusPolicy`).

    :raises ValueError: listing the tensors that have no counterpart on either side (a custom SB3 policy)
    """
    converted = {}
    used: set[str] = set()
    missing = []
    for name in target.state_dict():
        sources, combine = sb3_sources(name, n_critics, sb3_state)
        if not all(source in sb3_state for source in sources):
            missing.append(f"{name} (from {', '.join(sources)})")
            continue
        converted[name] = combine([sb3_state[source] for source in sources])
        used.update(sources)
    unused = sorted(set(sb3_state) - used)
    if missing or unused:
        raise ValueError(
            "the SB3 SAC policy does not map onto SACPlus's policy: "
            f"SACPlus tensors without an SB3 source: {missing or 'none'}; SB3 tensors left over: {unused or 'none'}"
        )
    return converted


def _parameter_names(module: th.nn.Module, optimizer: th.optim.Optimizer) -> list[str]:
    """Names (relative to ``module``) of the optimizer's parameters, in the order of its state dict."""
    names = {id(param): name for name, param in module.named_parameters()}
    return [names[id(param)] for group in optimizer.param_groups for param in group["params"]]


def convert_optimizer_state(
    sb3_state: dict[str, Any],
    sb3_module: th.nn.Module,
    sb3_optimizer: th.optim.Optimizer,
    module: th.nn.Module,
    optimizer: th.optim.Optimizer,
    n_critics: int,
) -> dict[str, Any]:
    """
    An SB3 optimizer state dict (for ``sb3_module``'s parameters) in the layout of ``optimizer`` (``module``'s).

    Tensors shaped like their parameter are combined as the parameters are (see :func:`sb3_sources`); others
    (Adam's ``step``) are copied from the first source. A parameter whose sources have no state (never stepped)
    gets none. Hyperparameters (lr, betas, eps, ...) come from SB3's state; how the update is run (``foreach``,
    ``fused``, ...) stays SACPlus's.
    """
    sb3_names = _parameter_names(sb3_module, sb3_optimizer)
    sb3_shapes = {name: tuple(param.shape) for name, param in sb3_module.named_parameters()}
    if len(sb3_state["param_groups"]) != len(optimizer.param_groups):
        raise ValueError(
            f"the SB3 optimizer has {len(sb3_state['param_groups'])} parameter groups, SACPlus's {len(optimizer.param_groups)}"
        )
    saved_indices = [index for group in sb3_state["param_groups"] for index in group["params"]]
    if len(saved_indices) != len(sb3_names):
        raise ValueError(f"the SB3 optimizer state holds {len(saved_indices)} parameters, its policy {len(sb3_names)}")
    sb3_index = dict(zip(sb3_names, saved_indices, strict=True))
    names = _parameter_names(module, optimizer)
    implementation_keys = {"foreach", "fused", "capturable", "differentiable"}

    state: dict[int, dict[str, Any]] = {}
    groups = []
    index = 0
    for group, sb3_group in zip(optimizer.param_groups, sb3_state["param_groups"], strict=True):
        new_group = {key: value for key, value in sb3_group.items() if key != "params" and key not in implementation_keys}
        new_group.update({key: group[key] for key in implementation_keys if key in group})
        new_group["params"] = []
        for _ in group["params"]:
            sources, combine = sb3_sources(names[index], n_critics, sb3_index)
            if not all(source in sb3_index for source in sources):
                raise ValueError(f"the optimizer's parameter {names[index]} has no SB3 source ({', '.join(sources)})")
            source_states = [sb3_state["state"].get(sb3_index[source]) for source in sources]
            if all(source_state for source_state in source_states):
                state[index] = {
                    key: combine([source_state[key] for source_state in source_states])
                    if isinstance(value, th.Tensor) and tuple(value.shape) == sb3_shapes[sources[0]] and value.dim() > 0
                    else value
                    for key, value in source_states[0].items()
                }
            new_group["params"].append(index)
            index += 1
        groups.append(new_group)
    return {"state": state, "param_groups": groups}


def our_policy_class(sb3_policy_class: type) -> type[policies.SACPlusPolicy]:
    """SACPlus's policy for SB3's: the same features extractor by default."""
    if issubclass(sb3_policy_class, sb3_policies.CnnPolicy):
        return policies.CnnPolicy
    if issubclass(sb3_policy_class, sb3_policies.MultiInputPolicy):
        return policies.MultiInputPolicy
    return policies.SACPlusPolicy


def load_from_sb3(
    algorithm_class: type[SACPlus],
    path: PathOrFile,
    env: GymEnv | None = None,
    device: th.device | str = "auto",
    custom_objects: dict[str, Any] | None = None,
    force_reset: bool = True,
    **kwargs: Any,
) -> SACPlus:
    """
    Build a SACPlus from a zip saved by ``stable_baselines3.SAC``: same hyperparameters, spaces, counters,
    weights, temperature and optimizer states (see the module docstring for the mapping).

    :param path: the zip saved by ``stable_baselines3.SAC.save``
    :param env: the environment to run the model on (``None`` to only predict); its spaces must be the saved ones
    :param device: device for the model
    :param custom_objects: replace these saved objects instead of unpickling them (as in ``load``)
    :param force_reset: reset the env before training (as in SB3's ``load``)
    :param kwargs: attributes to change on the model (as in SB3's ``load``), e.g. ``learning_starts=0``
    :raises ValueError: naming the file, when it is not an intact SB3 SAC zip, when the env does not fit, or when
        its policy does not map onto SACPlus's (a custom policy)
    """
    info = inspect_checkpoint(path, custom_objects)
    if info.kind == SACPLUS:
        raise ValueError(f"{info.name} was saved by SACPlus, not by stable_baselines3.SAC: load it with SACPlus.load")
    if info.kind != SB3_SAC:
        raise ValueError(
            f"{info.name} was not saved by stable_baselines3.SAC: its policy class is {info.policy_class_name} "
            "(load_from_sb3 converts SB3 SAC models only)"
        )
    vec_env = wrap_and_check_env(algorithm_class, info, env)
    data, params, pytorch_variables = load_from_zip_file(info.path, device=device, custom_objects=custom_objects)
    if data is None or "policy" not in params:
        raise ValueError(f"{info.name} has no data or no policy weights")

    sb3_policy_class = data.pop("policy_class")
    policy_kwargs = dict(data.get("policy_kwargs") or {})
    policy_kwargs.pop("device", None)
    if (
        isinstance(policy_kwargs.get("net_arch"), list)
        and policy_kwargs["net_arch"]
        and isinstance(policy_kwargs["net_arch"][0], dict)
    ):
        policy_kwargs["net_arch"] = policy_kwargs["net_arch"][0]  # SB3 < 1.8 format, as SB3's load converts it
    if "policy_kwargs" in kwargs and kwargs["policy_kwargs"] != policy_kwargs:
        raise ValueError(
            f"policy_kwargs cannot change when loading {info.name}: saved {policy_kwargs}, given {kwargs['policy_kwargs']}"
        )
    data["observation_space"] = info.observation_space
    data["action_space"] = info.action_space
    for key in _SB3_ONLY_DATA:
        data.pop(key, None)
    # SB3 saves the target entropy in use (its "auto" already resolved): keep it, not our own "auto" heuristic
    data["_target_entropy_spec"] = data.get("target_entropy", "auto")
    if vec_env is not None:
        if force_reset:
            data["_last_obs"] = None
        data["n_envs"] = vec_env.num_envs
    elif "env" in data:
        vec_env = data["env"]

    model = algorithm_class(our_policy_class(sb3_policy_class), env=vec_env, device=device, _init_setup_model=False)
    model.__dict__.update(data)
    # the init is overwritten by the imported weights; "pytorch" (SB3's) says where the architecture comes from
    model.policy_kwargs = {**policy_kwargs, "init_scheme": policy_kwargs.get("init_scheme", "pytorch")}
    model.__dict__.update(kwargs)
    model._setup_model()

    try:
        _load_weights(model, sb3_policy_class, policy_kwargs, params, pytorch_variables or {})
    except (ValueError, RuntimeError, KeyError) as error:
        raise ValueError(f"Could not import {info.name} (saved by stable_baselines3.SAC): {error}") from error
    if model.use_sde:
        model.policy.reset_noise()
    return model


def _load_weights(
    model: SACPlus,
    sb3_policy_class: type,
    policy_kwargs: dict[str, Any],
    params: dict[str, Any],
    pytorch_variables: dict[str, Any],
) -> None:
    """Weights, optimizer states and temperature of the SB3 zip's ``params``/``pytorch_variables`` into ``model``."""
    # SB3's own policy, only to learn which parameter each optimizer state belongs to (its order is SB3's
    # parameter registration order, which only SB3's modules know); it checks the saved weights too.
    sb3_policy = sb3_policy_class(model.observation_space, model.action_space, lambda _: 0.0, **policy_kwargs).to(model.device)
    sb3_policy.load_state_dict(params["policy"])

    n_critics = model.critic.n_critics
    model.policy.load_state_dict(convert_state_dict(params["policy"], model.policy, n_critics))
    for name, sb3_module, module in (
        ("actor.optimizer", sb3_policy.actor, model.actor),
        ("critic.optimizer", sb3_policy.critic, model.critic),
    ):
        if name in params:
            module.optimizer.load_state_dict(
                convert_optimizer_state(params[name], sb3_module, sb3_module.optimizer, module, module.optimizer, n_critics)
            )
    if model.ent_coef_optimizer is not None and "ent_coef_optimizer" in params:
        model.ent_coef_optimizer.load_state_dict(params["ent_coef_optimizer"])
    for name in ("log_ent_coef", "ent_coef_tensor"):
        value = pytorch_variables.get(name)
        if value is not None and getattr(model, name, None) is not None:
            # in place, so that the temperature optimizer keeps pointing at log_ent_coef (SB3 issue #391)
            getattr(model, name).data.copy_(value.data)
