"""
The input checks of :mod:`sac_plus.distributed`: what comes from outside the program, checked before the rendezvous.

Every worker of a job gets the same input, so every worker fails the same check at once, with one ``ValueError`` that
names the value, what was wrong and what is accepted, instead of a traceback per worker or a hang in a collective:

- the variables that ``torchrun`` sets (:func:`read_world`), the backend and the timeout (:func:`check_backend`,
  :func:`check_timeout`), which the library checks too;
- the command line's ``--params`` (:func:`parse_params`, :func:`check_params`, against ``SACPlus.__init__``'s
  signature), ``--env`` and ``--device``.

This module imports nothing from the rest of the package, which imports it.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import math
import numbers
import os
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import torch as th

from sac_plus.sac import SACPlus

BACKENDS = ("auto", "gloo", "nccl")
DEFAULT_TIMEOUT_S = 60.0
# gloo counts a timeout in nanoseconds of an int64 (at most about 292 years) and refuses anything beyond: 30 days
# is far below that and above any pause a job could mean to allow
MAX_TIMEOUT_S = 30 * 86400.0


def _parse_int(environ: Mapping[str, str], name: str, default: str | None = None) -> int:
    value = environ.get(name, default)
    if value is None:
        raise ValueError(
            f"{name} is not set: sac_plus.distributed must be started by torchrun (e.g. `torchrun --nproc-per-node 2 "
            "-m sac_plus.distributed --env Pendulum-v1 --timesteps 20000`) or by a launcher that sets "
            "WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT"
        )
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not valid; accepted: an integer") from None


def read_local_rank(environ: Mapping[str, str]) -> int:
    """``LOCAL_RANK`` (0 when unset), this process's rank on its machine, which selects its GPU."""
    local_rank = _parse_int(environ, "LOCAL_RANK", "0")
    if local_rank < 0:
        raise ValueError(f"LOCAL_RANK={local_rank} is not valid; accepted: an integer >= 0")
    return local_rank


def read_world(environ: Mapping[str, str] | None = None) -> tuple[int, int, int]:
    """
    Read ``(rank, world_size, local_rank)`` from the variables ``torchrun`` sets.

    :param environ: the environment (``os.environ`` by default)
    :raises ValueError: ``WORLD_SIZE`` or ``RANK`` missing or not an integer, ``WORLD_SIZE < 1``, a rank out of range,
        or ``MASTER_ADDR``/``MASTER_PORT`` missing
    """
    environ = os.environ if environ is None else environ
    world_size = _parse_int(environ, "WORLD_SIZE")
    if world_size < 1:
        raise ValueError(f"WORLD_SIZE={world_size} is not valid; accepted: an integer >= 1 (the number of processes)")
    rank = _parse_int(environ, "RANK")
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} is not valid for WORLD_SIZE={world_size}; accepted: 0 <= RANK < WORLD_SIZE")
    local_rank = read_local_rank(environ)
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not environ.get(name)]
    if missing:
        raise ValueError(
            f"{' and '.join(missing)} not set (WORLD_SIZE={world_size}, RANK={rank}): start the job with torchrun, "
            "or set MASTER_ADDR and MASTER_PORT to the address and a free port of rank 0's machine"
        )
    return rank, world_size, local_rank


def check_backend(backend: str) -> str:
    """Raise a clear error for a backend that sac_plus.distributed does not support."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not supported; accepted: {', '.join(map(repr, BACKENDS))}")
    return backend


def check_timeout(timeout: float) -> float:
    """
    Raise a clear error for a timeout that ``torch.distributed`` cannot use; return it as a float.

    :param timeout: seconds, ``0 < timeout <= MAX_TIMEOUT_S`` (infinity overflows ``datetime.timedelta``, and gloo
        refuses values past an int64 of nanoseconds)
    """
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not math.isfinite(timeout)
        or not 0 < timeout <= MAX_TIMEOUT_S
    ):
        raise ValueError(
            f"timeout={timeout!r} is not valid; accepted: a finite number of seconds > 0 and <= {MAX_TIMEOUT_S:.0f} (30 days)"
        )
    return float(timeout)


def check_count(name: str, value: int) -> None:
    """Raise a clear error unless ``value`` is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}={value!r} is not valid; accepted: an integer >= 1")


def parse_params(items: list[str]) -> dict[str, Any]:
    """``--params KEY=VALUE ...`` as a dict: each value a Python literal, or else the text as a string."""
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--params {item!r} is not valid; accepted: KEY=VALUE, e.g. batch_size=256")
        try:
            params[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            params[key] = value  # a plain string, e.g. ent_coef=auto_0.1
    return params


# SACPlus arguments that the command line sets itself, each with the option that sets it
OWN_OPTIONS = {
    "policy": "--policy",
    "env": "--env",
    "seed": "--seed",
    "device": "--device",
    "verbose": "--verbose",
    "tensorboard_log": "--tensorboard-log",
}
# What a Python literal (all that --params can write) may be, by the type names of SACPlus's annotations; a name not
# here (Schedule, ActionNoise, a class) cannot be written as a literal
_LITERAL_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "int": ((int,), "an integer"),
    "float": ((int, float), "a number"),
    "bool": ((bool,), "True or False"),
    "str": ((str,), "a string"),
    "None": ((type(None),), "None"),
    "dict": ((dict,), "a dict"),
    "list": ((list,), "a list"),
    "tuple": ((tuple,), "a tuple"),
}


def _sac_keywords() -> dict[str, str]:
    """SACPlus's keywords that ``--params`` may set, with their annotations as text."""
    keywords = {}
    for name, parameter in inspect.signature(SACPlus.__init__).parameters.items():
        if name in ("self", *OWN_OPTIONS) or name.startswith("_") or parameter.kind is not parameter.POSITIONAL_OR_KEYWORD:
            continue
        annotation = parameter.annotation
        keywords[name] = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    return keywords


def check_params(params: dict[str, Any]) -> dict[str, Any]:
    """
    Check the ``--params`` keywords before any process starts training: each must be a SACPlus keyword without an
    option of its own, and its value of a type that the keyword's annotation allows.

    :raises ValueError: naming the keyword, what it got and what it accepts
    """
    keywords = _sac_keywords()
    for key, value in params.items():
        if key in OWN_OPTIONS:
            raise ValueError(f"--params {key}=...: {key} is set with {OWN_OPTIONS[key]}, not with --params")
        if key not in keywords:
            raise ValueError(f"--params {key}=...: {key!r} is not a SACPlus keyword; accepted: {', '.join(sorted(keywords))}")
        names = [part.split("[")[0].strip() for part in keywords[key].split("|")]
        allowed = [_LITERAL_TYPES[name] for name in names if name in _LITERAL_TYPES]
        types = tuple(t for entry in allowed for t in entry[0])
        if not types:
            continue  # no annotation this check understands
        # bool is an int to isinstance, but True is no batch size
        if isinstance(value, types) and not (isinstance(value, bool) and bool not in types):
            continue
        read_as = " (it is not a Python literal, so it was read as a string)" if isinstance(value, str) else ""
        raise ValueError(
            f"--params {key}={value!r} is not valid{read_as}: SACPlus's {key} takes {keywords[key]}; accepted: "
            + " or ".join(description for _, description in allowed)
            + ", written as a Python literal"
        )
    return params


def check_env_id(env_id: str) -> None:
    """
    Check that ``env_id`` names a registered Gymnasium env (``module:Id`` first imports ``module``, as ``gym.make``
    does), so that a typo fails before the rendezvous instead of in every worker's traceback.

    :raises ValueError: naming the id, Gymnasium's reason and what is accepted
    """
    module, _, name = env_id.rpartition(":")
    try:
        if module:
            importlib.import_module(module)
        gym.spec(name)
    except (gym.error.Error, ImportError) as exc:
        raise ValueError(
            f"--env {env_id!r} is not valid: {type(exc).__name__}: {exc}; accepted: a registered Gymnasium env id, "
            "e.g. Pendulum-v1, or 'module:Id-v0' to import the module that registers it"
        ) from None


def check_device(device: str) -> None:
    """Raise a clear error for a ``--device`` that torch cannot parse (``auto`` is SB3's: a GPU when there is one)."""
    if device == "auto":
        return
    try:
        th.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"--device {device!r} is not valid: {exc}; accepted: auto, cpu, cuda or cuda:N") from None
