"""Reading the zips of sac_plus 0.1, whose critics were stored in a batched layout.

sac_plus 0.1 kept each critic layer of all ``n_critics`` critics as one tensor: ``critic.q_networks.net.{i}.weight``
of shape ``[n_critics, in, out]`` and ``bias`` of shape ``[n_critics, 1, out]`` (the same under ``critic_target``),
and gSDE's clipped mean as a plain ``actor.mu`` (clamped in ``forward``). This version stores the critics as SB3
does (``critic.qf{k}.{i}.weight`` of shape ``[out, in]``) and the clipped mean as SB3's ``mu.0``. :func:`convert`
rewrites a 0.1 zip's tensors, the critic optimizer's Adam moments included, into the current layout, so that
``SACPlus.load`` reads such a file with the same weights, optimizer states and counters.
"""

from __future__ import annotations

import io
import re
from typing import Any

import torch as th
from stable_baselines3.common.save_util import load_from_zip_file, save_to_zip_file

_BATCHED = re.compile(r"^(?P<prefix>critic(?:_target)?\.)q_networks\.net\.(?P<layer>\d+)\.(?P<kind>weight|bias)$")


def is_batched_layout_error(error: BaseException) -> bool:
    """Whether a load error comes from the batched critic layout of sac_plus 0.1."""
    return "q_networks.net" in str(error)


def _member(tensor: th.Tensor, kind: str, k: int) -> th.Tensor:
    """Critic ``k``'s slice of a batched tensor, laid out as ``nn.Linear`` lays it out."""
    return tensor[k].t().contiguous() if kind == "weight" else tensor[k, 0].clone()


def convert_policy(state: dict[str, th.Tensor], clipped_mean: bool) -> dict[str, th.Tensor]:
    """A 0.1 policy state dict in the current layout (critics one module each, SB3's ``mu.0`` for gSDE)."""
    converted: dict[str, th.Tensor] = {}
    batched: dict[str, list[tuple[str, str, th.Tensor]]] = {}
    for name, tensor in state.items():
        match = _BATCHED.match(name)
        if match:
            batched.setdefault(match["prefix"], []).append((match["layer"], match["kind"], tensor))
        elif clipped_mean and name.startswith("actor.mu."):
            converted[name.replace("actor.mu.", "actor.mu.0.", 1)] = tensor
        else:
            converted[name] = tensor
    for prefix, layers in batched.items():
        n_critics = layers[0][2].shape[0]
        for k in range(n_critics):  # critic by critic, each layer in order: the current registration order
            for layer, kind, tensor in layers:
                converted[f"{prefix}qf{k}.{layer}.{kind}"] = _member(tensor, kind, k)
    return converted


def convert_critic_optimizer(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """
    The 0.1 critic optimizer's state in the current parameter order: ``names`` are the 0.1 parameter names in the
    optimizer's order; each batched parameter's moments are split as its tensor is.
    """
    (group,) = state["param_groups"]
    old_index = dict(zip(names, group["params"], strict=True))
    new_state: dict[int, dict[str, Any]] = {}
    new_params: list[int] = []

    def add(source: str, kind: str | None, k: int) -> None:
        index = len(new_params)
        new_params.append(index)
        saved = state["state"].get(old_index[source])
        if saved:
            new_state[index] = {
                key: _member(value, kind, k) if kind is not None and key in ("exp_avg", "exp_avg_sq") else value
                for key, value in saved.items()
            }

    plain = [name for name in names if not _BATCHED.match(name)]
    batched = [name for name in names if _BATCHED.match(name)]
    for name in plain:
        add(name, None, 0)
    n_critics = state["state"][old_index[batched[0]]]["exp_avg"].shape[0] if batched and state["state"] else None
    if n_critics is None and batched:
        raise ValueError("the critic optimizer of this sac_plus 0.1 zip has no state to tell the number of critics from")
    for k in range(n_critics or 0):
        for name in batched:
            match = _BATCHED.match(name)
            assert match is not None
            add(name, match["kind"], k)
    return {"state": new_state, "param_groups": [{**group, "params": new_params}]}


def convert(path: Any, device: str | th.device = "cpu") -> io.BytesIO:
    """The 0.1 zip at ``path`` rewritten in the current layout, as an in-memory zip for SB3's ``load``."""
    data, loaded, pytorch_variables = load_from_zip_file(path, device=device)
    assert data is not None
    params: dict[str, Any] = dict(loaded)  # SB3 types it as tensors; it holds state dicts
    policy_kwargs = data.get("policy_kwargs") or {}
    clipped_mean = bool(data.get("use_sde")) and float(policy_kwargs.get("clip_mean", 2.0)) > 0
    old_policy = params["policy"]
    buffers = ("running_mean", "running_var", "num_batches_tracked")  # in the state dict, not in the optimizer
    critic_names = [name[len("critic.") :] for name in old_policy if name.startswith("critic.") and not name.endswith(buffers)]
    if policy_kwargs.get("share_features_extractor", False):
        critic_names = [name for name in critic_names if "features_extractor" not in name]
    params["policy"] = convert_policy(old_policy, clipped_mean)
    if "critic.optimizer" in params:
        full_names = [f"critic.{name}" for name in critic_names]
        params["critic.optimizer"] = convert_critic_optimizer(params["critic.optimizer"], full_names)
    buffer = io.BytesIO()
    save_to_zip_file(buffer, data=data, params=params, pytorch_variables=pytorch_variables)
    buffer.seek(0)
    return buffer
