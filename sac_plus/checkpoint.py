"""Checkpoints: atomic writes, and one load path that checks a file before trusting it.

Writing: a failed or interrupted save never replaces a good file with a partial one (:func:`atomic_write_path`).

Reading: :func:`inspect_checkpoint` looks at a zip before SB3 unpickles it, so a truncated or corrupted file, a
file that is no model at all, a model of another algorithm, or an environment whose spaces differ from the
saved ones fails with a ``ValueError`` that names the file and what did not match (SB3 itself reports a CRC
error as "wasn't a zip-file", and a space mismatch without the file name). :func:`load_model` is what
``SACPlus.load`` and ``SACPlus.load_from_sb3`` run: it inspects a file once and hands it to SB3's ``load``, with
SACPlus's policy class in place of SB3's for a zip of ``stable_baselines3.SAC`` (the state dicts are the same).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import pathlib
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from gymnasium import spaces
from stable_baselines3.common.save_util import json_to_data, open_path
from stable_baselines3.sac import policies as sb3_policies

from sac_plus import legacy, policies
from sac_plus.policies import SACPlusPolicy

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.type_aliases import GymEnv
    from stable_baselines3.common.vec_env import VecEnv

    from sac_plus.sac import SACPlus

PathOrFile = str | os.PathLike | io.BufferedIOBase
# SACPlus or a subclass of it: what load_model reads a file into (sac.py imports this module, hence the string)
SACPlusT = TypeVar("SACPlusT", bound="SACPlus")

# The kinds of model zip that :func:`inspect_checkpoint` tells apart
SACPLUS = "sacplus"
SB3_SAC = "sb3_sac"
OTHER = "other"
# Attributes of SB3 SAC's saved ``data`` that SACPlus has no use for (SACPlus finds batch-norm statistics itself)
SB3_ONLY_DATA = ("batch_norm_stats", "batch_norm_stats_target")
# The optimizer settings that say how the update runs, not what it computes: SACPlus picks fused kernels
IMPLEMENTATION_KEYS = ("foreach", "fused", "capturable", "differentiable")


def destination(path: str | os.PathLike, suffix: str) -> pathlib.Path:
    """
    The file SB3 would write for ``path``: ``suffix`` is appended when the path has none (the rule of SB3's
    ``open_path``, which opens the file itself and so cannot name a destination without creating it).
    """
    target = pathlib.Path(path)
    if target.suffix == "":
        target = pathlib.Path(f"{target}.{suffix}")
    return target


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _mode_for(target: pathlib.Path) -> int:
    """The permission bits a plain ``open(target, "wb")`` gives: an existing file's, else 0o666 less the umask."""
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_current_umask()


def _fsync(path: str | os.PathLike, directory: bool = False) -> None:
    """Flush a file (or a directory entry, after a rename) to disk, where the platform allows it."""
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:  # e.g. directories cannot be opened on Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write_path(path: str | os.PathLike, suffix: str) -> Iterator[str]:
    """
    Yield a temporary path beside the destination; on success, flush it to disk and move it over the destination
    in one ``os.replace`` (atomic on POSIX and Windows), on any failure delete it and leave the destination
    untouched. The file gets the mode SB3's plain write would give it: an existing file's mode, else the
    default under the umask (``mkstemp`` alone would make it owner-only).

    :param path: where the file should end up (``suffix`` is appended when it has none, as SB3 does)
    :param suffix: file extension without dot, e.g. ``"zip"`` or ``"pkl"``
    """
    # through a symbolic link, as SB3's open(path, "wb") writes: the link stays a link and its target is replaced
    target = pathlib.Path(os.path.realpath(destination(path, suffix)))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=f".partial.{suffix}")
    os.close(fd)
    try:
        os.chmod(tmp, _mode_for(target))
        yield tmp
        _fsync(tmp)
        os.replace(tmp, target)
        _fsync(target.parent, directory=True)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_atomically(path: PathOrFile, suffix: str, write: Callable[[Any], None]) -> None:
    """``write(path)`` for an open file; for a file path, ``write`` to a temporary file moved into place
    (:func:`atomic_write_path`)."""
    if isinstance(path, io.BufferedIOBase):
        write(path)
        return
    with atomic_write_path(path, suffix) as tmp:
        write(tmp)


def describe(path: PathOrFile) -> str:
    """How error messages name a checkpoint: its path, or the name of an open file."""
    if isinstance(path, (str, os.PathLike)):
        return str(path)
    return str(getattr(path, "name", None) or f"<{type(path).__name__} object>")


def resolve_load_path(path: PathOrFile) -> PathOrFile:
    """
    The file SB3 reads for ``path``: the path itself, else the path with ``.zip`` appended (SB3's rule).

    :raises FileNotFoundError: naming both candidates when neither exists
    """
    if not isinstance(path, (str, os.PathLike)):
        return path
    try:
        with open_path(pathlib.Path(path), "r", verbose=0, suffix="zip") as file:
            return pathlib.Path(file.name)
    except FileNotFoundError:
        raise FileNotFoundError(f"No model file at {path} (nor at {path}.zip)") from None


@dataclasses.dataclass
class CheckpointInfo:
    """What :func:`inspect_checkpoint` learned about a model zip without loading its weights."""

    path: PathOrFile
    name: str
    kind: str
    policy_class: type | None
    policy_class_name: str
    observation_space: spaces.Space | None
    action_space: spaces.Space | None
    members: list[str]


def _policy_class_name(raw: Any, policy_class: type | None) -> str:
    if policy_class is not None:
        return f"{policy_class.__module__}.{policy_class.__qualname__}"
    if isinstance(raw, dict):
        return f"a class from module {raw.get('__module__', '?')} (it could not be unpickled here)"
    return repr(raw)


def _classify(policy_class: type | None, raw_policy_class: Any, data_keys: set[str]) -> str:
    from stable_baselines3.sac.policies import SACPolicy

    if policy_class is not None:
        if issubclass(policy_class, SACPlusPolicy):
            return SACPLUS
        if issubclass(policy_class, SACPolicy):
            return SB3_SAC
        return OTHER
    # The class could not be unpickled (a custom policy whose module is not importable here): fall back to
    # what only SACPlus saves.
    if "target_entropy_scale" in data_keys:
        return SACPLUS
    module = raw_policy_class.get("__module__", "") if isinstance(raw_policy_class, dict) else ""
    return SB3_SAC if module.startswith("stable_baselines3.sac") else OTHER


def inspect_checkpoint(path: PathOrFile, custom_objects: dict[str, Any] | None = None) -> CheckpointInfo:
    """
    Check that ``path`` is an intact SB3 model zip and find out which algorithm saved it.

    Checks, in order: the file exists (SB3's ``.zip`` rule), it is a zip archive (a truncated zip is not: its
    directory is at the end), every member passes its CRC check, it has SB3's ``data`` and ``policy.pth``
    entries, and ``data`` is valid JSON. Only the policy class and the two spaces are unpickled.
    An open file is read and then rewound to where it was.

    :param custom_objects: as in ``SACPlus.load``; replaces these keys instead of unpickling them
    :return: the file's kind: :data:`SACPLUS`, :data:`SB3_SAC` or :data:`OTHER`, with the saved spaces
    :raises ValueError: naming the file and what is wrong with it
    """
    path = resolve_load_path(path)
    name = describe(path)
    file = None if isinstance(path, (str, os.PathLike)) else path
    start = 0 if file is None else file.tell()
    not_a_zip = ValueError(
        f"{name} is not a model file: it is not a valid zip archive (a model saved by SACPlus or SB3 is a "
        "zip file; this one may be truncated, e.g. by an interrupted copy or download, or be another kind of file)"
    )
    try:
        if not zipfile.is_zipfile(path):
            raise not_a_zip
        if file is not None:
            file.seek(start)
        try:
            with zipfile.ZipFile(path) as archive:
                members = archive.namelist()
                # A truncated model can still end with a complete zip: the weights (policy.pth) are themselves
                # zip files, stored uncompressed. Its members then start after the beginning of the file; a
                # model's first member starts at byte 0.
                if not members or min(info.header_offset for info in archive.infolist()) != 0:
                    raise not_a_zip
                bad_member = archive.testzip()
                if bad_member is not None:
                    raise ValueError(f"{name} is corrupted: its member {bad_member!r} fails its CRC check")
                if "data" not in members:
                    raise ValueError(
                        f"{name} is a zip file but not a saved SB3/SACPlus model: it has no 'data' entry (members: {members})"
                    )
                raw_json = archive.read("data").decode()
        except (zipfile.BadZipFile, zlib.error, EOFError, UnicodeDecodeError) as error:
            raise ValueError(f"{name} is corrupted: {type(error).__name__}: {error}") from error
    finally:
        if file is not None:
            file.seek(start)
    try:
        raw = json.loads(raw_json)
    except json.JSONDecodeError as error:
        raise ValueError(f"{name} is corrupted: its 'data' entry is not valid JSON ({error})") from error
    if not isinstance(raw, dict) or "policy_class" not in raw:
        raise ValueError(f"{name} is not a saved SB3/SACPlus model: its 'data' entry has no policy_class")
    if "policy.pth" not in members:
        raise ValueError(f"{name} is not a complete SB3/SACPlus model: it has no 'policy.pth' entry (members: {members})")

    wanted = {key: raw[key] for key in ("policy_class", "observation_space", "action_space") if key in raw}
    with warnings.catch_warnings():
        # a class that cannot be unpickled is reported below, by name
        warnings.simplefilter("ignore")
        loaded = json_to_data(json.dumps(wanted), custom_objects=custom_objects)
    policy_class = loaded.get("policy_class")
    if not isinstance(policy_class, type):
        policy_class = None
    observation_space = loaded.get("observation_space")
    action_space = loaded.get("action_space")
    return CheckpointInfo(
        path=path,
        name=name,
        kind=_classify(policy_class, raw["policy_class"], set(raw)),
        policy_class=policy_class,
        policy_class_name=_policy_class_name(raw["policy_class"], policy_class),
        # (a space of the old gym package is not compared here; SB3's load converts and checks it)
        observation_space=observation_space if isinstance(observation_space, spaces.Space) else None,
        action_space=action_space if isinstance(action_space, spaces.Space) else None,
        members=members,
    )


def wrap_and_check_env(
    algorithm_class: type[BaseAlgorithm], info: CheckpointInfo, env: GymEnv | None, verbose: int = 0
) -> VecEnv | None:
    """
    Wrap ``env`` as the algorithm would (Monitor, DummyVecEnv, image transpose) and check that its spaces are
    the saved ones.

    :raises ValueError: naming the file, which space differs, the saved space and the env's
    """
    if env is None:
        return None
    vec_env = algorithm_class._wrap_env(env, verbose)
    for what, saved, given in (
        ("observation", info.observation_space, vec_env.observation_space),
        ("action", info.action_space, vec_env.action_space),
    ):
        if saved is not None and saved != given:
            raise ValueError(
                f"Cannot load {info.name} with this env: the {what} spaces do not match. The model was saved with "
                f"{what}_space={saved}, the env has {what}_space={given}. Pass an env like the one the model was "
                "trained on, or env=None to only predict."
            )
    return vec_env


# Each SB3 SAC policy and SACPlus's counterpart (same features extractor by default)
_POLICY_PAIRS = (
    (sb3_policies.CnnPolicy, policies.CnnPolicy),
    (sb3_policies.MultiInputPolicy, policies.MultiInputPolicy),
    (sb3_policies.SACPolicy, policies.SACPlusPolicy),
)


def our_policy_class(sb3_policy_class: type) -> type[policies.SACPlusPolicy]:
    """SACPlus's policy for SB3's."""
    return next(ours for theirs, ours in _POLICY_PAIRS if issubclass(sb3_policy_class, theirs))


# What SB3's load raises for a zip that does not fit (KeyError: a missing entry, RuntimeError: a state dict of other
# shapes, AssertionError: its checks); load_model re-raises them with the file named
_SB3_LOAD_ERRORS = (ValueError, KeyError, RuntimeError, AssertionError)


def policy_class_for(policy: str | type) -> str | type[policies.SACPlusPolicy]:
    """
    The ``policy`` argument of ``SACPlus(policy, env)`` as SACPlus reads it: an alias stays an alias (SB3 resolves
    it), SB3's own SAC policy classes (``stable_baselines3.sac.MlpPolicy``, ...) are SACPlus's of the same name,
    and any other class must be a :class:`~sac_plus.policies.SACPlusPolicy` (a subclass of SB3's ``SACPolicy``
    lacks what SACPlus's update calls).
    """
    if isinstance(policy, str) or (isinstance(policy, type) and issubclass(policy, SACPlusPolicy)):
        return policy
    counterpart = next((ours for theirs, ours in _POLICY_PAIRS if policy is theirs), None)
    if counterpart is not None:
        return counterpart
    name = f"{policy.__module__}.{policy.__qualname__}" if isinstance(policy, type) else repr(policy)
    raise ValueError(
        f"policy={name} is not a SACPlus policy; accepted: 'MlpPolicy', 'CnnPolicy', 'MultiInputPolicy', "
        "'CrossQPolicy', 'SimbaPolicy', SB3's SAC policy classes (read as SACPlus's of the same name), or a "
        "subclass of sac_plus.SACPlusPolicy (a custom SB3 SACPolicy: subclass SACPlusPolicy instead)"
    )


def sb3_policy_class(our_class: type) -> type[sb3_policies.SACPolicy]:
    """SB3's policy for SACPlus's; a subclass of our own policies has no counterpart (it may add modules)."""
    for theirs, ours in _POLICY_PAIRS:
        if our_class is ours:
            return theirs
    raise ValueError(
        f"the policy class {our_class.__module__}.{our_class.__qualname__} has no counterpart in stable_baselines3.SAC; "
        "accepted: SACPlus's MlpPolicy, CnnPolicy or MultiInputPolicy"
    )


def _use_fast_optimizer_kernels(optimizer: Any, optimizer_kwargs: dict[str, Any]) -> None:
    """Give an optimizer loaded from SB3's state the kernels :func:`~sac_plus.policies.build_optimizer` picks."""
    fresh = policies.build_optimizer(
        type(optimizer), [p for g in optimizer.param_groups for p in g["params"]], 0.0, optimizer_kwargs
    )
    for group, fresh_group in zip(optimizer.param_groups, fresh.param_groups, strict=False):
        group.update({key: fresh_group[key] for key in IMPLEMENTATION_KEYS if key in fresh_group})


def adopt_sb3_model(model: SACPlus) -> None:
    """Finish reading an SB3 SAC zip: drop SB3-only attributes, use SACPlus's optimizer kernels."""
    for key in SB3_ONLY_DATA:
        model.__dict__.pop(key, None)
    model._target_entropy_spec = model.target_entropy  # SB3 saves the target in use; keep it, not our "auto"
    for optimizer in (model.actor.optimizer, model.critic.optimizer):
        _use_fast_optimizer_kernels(optimizer, model.policy.optimizer_kwargs)
    if model.ent_coef_optimizer is not None:
        _use_fast_optimizer_kernels(model.ent_coef_optimizer, {})


def load_model(
    algorithm_class: type[SACPlusT],
    sb3_load: Callable[..., SACPlusT],
    path: PathOrFile,
    sb3_sac_only: bool,
    env: GymEnv | None,
    device: str | Any,
    custom_objects: dict[str, Any] | None,
    print_system_info: bool,
    force_reset: bool,
    **kwargs: Any,
) -> SACPlusT:
    """
    ``SACPlus.load`` and ``SACPlus.load_from_sb3``: inspect the file once (:func:`inspect_checkpoint`), check the
    env's spaces, then read it with SB3's ``load`` (``sb3_load``). A zip of ``stable_baselines3.SAC`` is read with
    SACPlus's policy class in SB3's place: the state dicts are the same (:mod:`sac_plus.sb3_format`).

    :param sb3_sac_only: accept only zips of ``stable_baselines3.SAC`` (``load_from_sb3``); otherwise such a zip
        is read with a warning
    :raises ValueError: naming the file, for a file that is not an intact SACPlus or SB3 SAC model or an env whose
        spaces differ from the saved ones; an error of SB3's loader keeps its type (e.g. ``RuntimeError`` for a
        state dict that does not fit the policy) and gets the file's name in its message
    """
    info = inspect_checkpoint(path, custom_objects)
    name = algorithm_class.__name__
    if sb3_sac_only and info.kind != SB3_SAC:
        raise ValueError(
            f"{info.name} was not saved by stable_baselines3.SAC: its policy class is {info.policy_class_name}"
            f"{f' (load it with {name}.load)' if info.kind == SACPLUS else ''}; load_from_sb3 reads SB3 SAC models only"
        )
    if info.kind == OTHER:
        raise ValueError(
            f"{info.name} was not saved by {name}: its policy class is {info.policy_class_name}, so it was saved by "
            f"another algorithm. {name}.load reads models saved by {name} or by stable_baselines3.SAC; load this file "
            "with the algorithm that saved it."
        )
    if info.kind == SB3_SAC:
        if not sb3_sac_only:
            warnings.warn(
                f"{info.name} was saved by stable_baselines3.SAC (policy {info.policy_class_name}); it is read as "
                f"{name}.load_from_sb3 reads it. Save the loaded model to store it in {name}'s own format.",
                UserWarning,
                stacklevel=3,
            )
        assert info.policy_class is not None
        custom_objects = {**(custom_objects or {}), "policy_class": our_policy_class(info.policy_class)}
    vec_env = wrap_and_check_env(algorithm_class, info, env)
    load_args = dict(env=vec_env, device=device, custom_objects=custom_objects, print_system_info=print_system_info, **kwargs)
    try:
        try:
            model = sb3_load(info.path, force_reset=force_reset, **load_args)
        except RuntimeError as error:
            if info.kind != SACPLUS or not legacy.is_batched_layout_error(error):
                raise
            warnings.warn(
                f"{info.name} was saved by sac_plus 0.1, whose critics had a batched layout; it is read in the current "
                "layout (SB3's critic.qf0, ...). Save the loaded model to store it so.",
                UserWarning,
                stacklevel=3,
            )
            model = sb3_load(legacy.convert(info.path), force_reset=force_reset, **load_args)
    except _SB3_LOAD_ERRORS as error:
        # the type SB3's load raises (a state-dict mismatch is a RuntimeError there), with the file named
        message = f"Could not load {info.name} into {name}: {type(error).__name__}: {error}"
        if type(error) in _SB3_LOAD_ERRORS:
            raise type(error)(message) from error
        if hasattr(error, "add_note"):  # Python >= 3.11
            error.add_note(message)
        raise
    if info.kind == SB3_SAC:
        adopt_sb3_model(model)
    return model
