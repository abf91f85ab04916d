"""
rl-zoo3 integration: SACPlus as the algorithm ``sac_plus`` of rl-zoo3, with its Optuna sampler.

rl-zoo3 has no plugin mechanism: its scripts look an algorithm up by name in the module-level tables
``ALGOS`` (``rl_zoo3.utils``, re-exported by ``rl_zoo3``, ``rl_zoo3.train``, ``rl_zoo3.enjoy``,
``rl_zoo3.exp_manager``, ...) and ``HYPERPARAMS_SAMPLER`` / ``HYPERPARAMS_CONVERTER``
(``rl_zoo3.hyperparams_opt``, imported by ``rl_zoo3.exp_manager``). :func:`register` adds ``sac_plus`` to
every one of those tables that is loaded, in place, so that rl-zoo3's own ``train()``, ``enjoy()``,
``record_video`` and ``ExperimentManager`` run SACPlus unchanged. rl-zoo3's files are not edited.

This is the only module of the package that imports rl_zoo3 (an optional extra: ``pip install
'sac_plus[zoo]'``), and it imports it only when :func:`register` is called.

What rl-zoo3 keys on the algorithm *name* and how ``sac_plus`` is made to behave like ``"sac"`` there
(rl-zoo3 2.9):

- the default hyperparameter file is ``rl_zoo3/hyperparams/<algo>.yml`` inside the rl_zoo3 package, which
  has no ``sac_plus.yml``: the command line (``python -m sac_plus.zoo train``) passes ``--conf-file`` with
  :func:`default_config_path` (``sac_plus/zoo/sac_plus.yml``, shipped with this package; ``crossq.yml`` or
  ``simba.yml`` with ``--preset``) unless one is given;
- ``enjoy`` and ``record_video`` load the algorithms of a hard-coded local list of off-policy names
  (``off_policy_algos``, which cannot be patched from outside) with ``buffer_size=1``, so that replaying an
  agent does not allocate its training replay buffer: for those commands the table holds
  :class:`SACPlusReplay`, whose ``load`` applies the same defaults;
- ``--eval-freq``, ``--n-eval-envs``, ``--save-replay-buffer`` and the deterministic evaluation are not
  keyed on the name in this version (they test ``hasattr(model, "save_replay_buffer")`` and the env id).
"""

from __future__ import annotations

import importlib
import importlib.resources
import pathlib
import sys
from typing import Any

from sac_plus.sac import SACPlus

__all__ = ["ALGO_NAME", "SACPlusReplay", "default_config_path", "register"]

ALGO_NAME = "sac_plus"
CONFIG_NAME = "sac_plus.yml"

# rl-zoo3's modules that hold (a reference to) one of the tables; importing them is side-effect free
# (rl_zoo3.record_video is not listed: it runs its script at import time under __main__ only, and it
# reads ALGOS from rl_zoo3.utils).
_ZOO_MODULES = (
    "rl_zoo3",
    "rl_zoo3.utils",
    "rl_zoo3.hyperparams_opt",
    "rl_zoo3.exp_manager",
    "rl_zoo3.train",
    "rl_zoo3.enjoy",
)


class SACPlusReplay(SACPlus):
    """
    What rl-zoo3's ``enjoy`` and ``record_video`` find in their table under ``sac_plus``: they only call
    ``load``, and for the off-policy algorithms they know by name they pass ``buffer_size=1`` (a replayed agent
    needs no replay buffer) and ``optimize_memory_usage=False``. ``load`` applies the same defaults and returns
    a plain :class:`~sac_plus.SACPlus`.
    """

    @classmethod
    def load(cls, path: Any, *args: Any, **kwargs: Any) -> SACPlus:  # type: ignore[override]
        kwargs.setdefault("buffer_size", 1)
        kwargs.setdefault("optimize_memory_usage", False)
        return SACPlus.load(path, *args, **kwargs)


# rl-zoo3 files shipped with the package: SACPlus's defaults and one per preset (sac_plus.presets)
CONFIG_FILES = {None: CONFIG_NAME, "crossq": "crossq.yml", "simba": "simba.yml"}


def default_config_path(preset: str | None = None) -> pathlib.Path | None:
    """
    The path of ``sac_plus.yml``, the rl-zoo3 hyperparameters that ship inside this package
    (``sac_plus/zoo/sac_plus.yml``, declared as package data), wherever the package is installed; with
    ``preset`` (``"crossq"`` or ``"simba"``), the file of that preset's entries (``crossq.yml``, ``simba.yml``).
    ``None`` when the package is not on a file system (imported from a zip archive) or the file is missing;
    then pass ``--conf-file``.
    """
    name = CONFIG_FILES.get(preset.lower() if preset is not None else None)
    if name is None:
        accepted = ", ".join(repr(key) for key in CONFIG_FILES if key is not None)
        raise ValueError(f"preset={preset!r} has no rl-zoo3 file; accepted: {accepted}")
    path = pathlib.Path(str(importlib.resources.files(__name__) / name))
    return path if path.is_file() else None


def _import_zoo() -> None:
    try:
        for name in _ZOO_MODULES:
            importlib.import_module(name)
    except ImportError as e:
        raise ImportError(
            f"sac_plus.zoo needs rl_zoo3 and optuna ({e}); install them with: pip install 'sac_plus[zoo]'"
        ) from e


def register(replay: bool = False) -> None:
    """
    Make ``sac_plus`` an rl-zoo3 algorithm: add it to every ``ALGOS``, ``HYPERPARAMS_SAMPLER`` and
    ``HYPERPARAMS_CONVERTER`` table of the loaded rl_zoo3 modules. Idempotent; call it again with another
    ``replay`` to switch.

    :param replay: register :class:`SACPlusReplay` (for ``enjoy`` and ``record_video``: loads without a
        replay buffer, as rl-zoo3 does for ``sac``) instead of :class:`~sac_plus.SACPlus` (for ``train``)
    """
    _import_zoo()
    from sac_plus.zoo.sampler import convert_sac_plus_params, sample_sac_plus_params

    entries = {
        "ALGOS": SACPlusReplay if replay else SACPlus,
        "HYPERPARAMS_SAMPLER": sample_sac_plus_params,
        "HYPERPARAMS_CONVERTER": convert_sac_plus_params,
    }
    found = dict.fromkeys(entries, False)
    # Every loaded rl_zoo3 module, not only the listed ones: a module that copied a table instead of
    # importing the shared dict (another version of rl-zoo3) gets the entry too.
    for module_name, module in list(sys.modules.items()):
        if module is None or not (module_name == "rl_zoo3" or module_name.startswith("rl_zoo3.")):
            continue
        for table_name, entry in entries.items():
            table = getattr(module, table_name, None)
            if isinstance(table, dict):
                table[ALGO_NAME] = entry
                found[table_name] = True
    missing = [name for name, ok in found.items() if not ok]
    if missing:
        raise RuntimeError(f"rl_zoo3 has no table {missing}: this rl-zoo3 version is not supported by sac_plus.zoo")
