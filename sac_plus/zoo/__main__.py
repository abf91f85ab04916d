"""
Command line: ``python -m sac_plus.zoo {train,enjoy,record} [rl-zoo3 flags]``.

Registers ``sac_plus`` in rl-zoo3 (:func:`sac_plus.zoo.register`) and hands the remaining flags to
rl-zoo3's own script: ``rl_zoo3.train.train()``, ``rl_zoo3.enjoy.enjoy()`` or ``rl_zoo3.record_video``.
Every rl-zoo3 flag works as documented there (``python -m sac_plus.zoo train -h``). Defaults that differ
from plain rl-zoo3, each overridden by giving the flag:

- ``--algo sac_plus``;
- ``train``: ``--conf-file`` with the ``sac_plus.yml`` shipped in this package
  (:func:`sac_plus.zoo.default_config_path`) when the algorithm is ``sac_plus`` (rl-zoo3 would look for
  ``hyperparams/sac_plus.yml`` inside its own package); ``--preset crossq`` or ``--preset simba`` (a flag of
  this command line, not rl-zoo3's) takes the file of that preset (``sac_plus.presets``) instead;
- ``train -optimize`` without ``--storage`` and ``--study-name``: ``--storage
  sqlite:///<log folder>/sac_plus/optuna.db --study-name sac_plus_<env>`` (rl-zoo3 keeps trials in memory
  only); running the same command again adds trials to the same study;
- ``enjoy`` and ``record``: ``--folder logs``, where ``train`` writes (rl-zoo3's default is its folder of
  pretrained agents, ``rl-trained-agents``, and none of those is a SACPlus).

Examples::

    python -m sac_plus.zoo train --env Pendulum-v1 -n 20000 --eval-freq 5000
    python -m sac_plus.zoo train --preset crossq --env HalfCheetah-v5 -n 100000
    python -m sac_plus.zoo enjoy --env Pendulum-v1 --no-render -n 1000
    python -m sac_plus.zoo train --env CartPole-v1 -optimize --n-trials 20 --storage sqlite:///optuna.db --study-name cp
"""

from __future__ import annotations

import argparse
import pathlib
import runpy
import sys
from collections.abc import Sequence

from sac_plus.zoo import ALGO_NAME, default_config_path, register

COMMANDS = ("train", "enjoy", "record")
RL_ZOO_DEFAULT_ENV = "CartPole-v1"  # rl-zoo3's default --env
USAGE = f"""usage: python -m sac_plus.zoo {{{",".join(COMMANDS)}}} [rl-zoo3 flags]

  train   rl-zoo3's train; defaults: --algo {ALGO_NAME}, --conf-file <sac_plus package>/zoo/sac_plus.yml
          --preset crossq|simba: --conf-file <sac_plus package>/zoo/crossq.yml or simba.yml
          with -optimize (Optuna): --storage sqlite:///<log folder>/sac_plus/optuna.db --study-name sac_plus_<env>
  enjoy   rl-zoo3's enjoy (replay a trained agent, --no-render without a display); default --folder logs
  record  rl-zoo3's record_video (needs moviepy and a renderable env); default --folder logs

'python -m sac_plus.zoo COMMAND -h' lists the flags of rl-zoo3's script."""


def _given(argv: Sequence[str], *flags: str, switch: bool = False) -> tuple[bool, str | None]:
    """
    Whether one of ``flags`` is in ``argv``, and its last value: an option taking one value, or with
    ``switch`` a flag without value (``store_true``).
    """
    parser = argparse.ArgumentParser(add_help=False)
    if switch:
        parser.add_argument(*flags, dest="value", action="store_const", const="1", default=None)
    else:
        parser.add_argument(*flags, dest="value", default=None)
    try:
        known, _ = parser.parse_known_args(list(argv))
    except SystemExit:  # the flag is there without its value: rl-zoo3's parser will report it
        return True, None
    return known.value is not None, known.value


def _pop_preset(argv: list[str]) -> tuple[list[str], str | None]:
    """``argv`` without this command line's own ``--preset NAME``, and ``NAME`` (``None`` if not given)."""
    given, preset = _given(argv, "--preset")
    if not given:
        return argv, None
    if preset is None:
        raise SystemExit("error: --preset needs a value: crossq or simba")
    rest: list[str] = []
    skip = False
    for index, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg == "--preset":
            skip = index + 1 < len(argv)
        elif not arg.startswith("--preset="):
            rest.append(arg)
    return rest, preset


def with_defaults(command: str, argv: Sequence[str]) -> list[str]:
    """
    ``argv`` with this command line's defaults put in front: argparse keeps the last value of a flag, so
    a flag the user gives always wins over a default.
    """
    argv, preset = _pop_preset(list(argv))
    defaults: list[str] = []
    algo_given, algo = _given(argv, "--algo")
    if not algo_given:
        defaults += ["--algo", ALGO_NAME]
        algo = ALGO_NAME
    if command == "train":
        conf_given, _ = _given(argv, "-conf", "--conf-file")
        if preset is not None and (conf_given or algo != ALGO_NAME):
            raise SystemExit("error: --preset picks the --conf-file of --algo sac_plus; give one or the other")
        if algo == ALGO_NAME and not conf_given:
            try:
                config = default_config_path(preset)
            except ValueError as e:
                raise SystemExit(f"error: --preset: {e}") from e
            if config is None:
                raise SystemExit(
                    "error: the hyperparameter file shipped with the sac_plus package (sac_plus/zoo/) was not found "
                    "(is the package installed from a zip archive?); pass one with --conf-file PATH"
                )
            defaults += ["--conf-file", str(config)]
        optimize, _ = _given(argv, "-optimize", "--optimize-hyperparameters", switch=True)
        storage_given, _ = _given(argv, "--storage")
        study_given, _ = _given(argv, "--study-name")
        if algo == ALGO_NAME and optimize and not storage_given and not study_given:
            # Trials are kept in SQLite (rl-zoo3 would keep them in memory only), in a study that the same
            # command resumes: <log folder>/sac_plus/optuna.db, study "sac_plus_<env>"
            _, log_folder = _given(argv, "-f", "--log-folder")
            _, env_id = _given(argv, "--env")
            db = pathlib.Path(log_folder or "logs").resolve() / ALGO_NAME / "optuna.db"
            db.parent.mkdir(parents=True, exist_ok=True)
            defaults += ["--storage", f"sqlite:///{db}", "--study-name", f"{ALGO_NAME}_{env_id or RL_ZOO_DEFAULT_ENV}"]
    else:
        if preset is not None:
            raise SystemExit("error: --preset is a flag of train only")
        folder_given, _ = _given(argv, "-f", "--folder")
        if not folder_given:
            defaults += ["--folder", "logs"]
    return defaults + argv


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        raise SystemExit(0 if argv else 2)
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(USAGE, file=sys.stderr)
        raise SystemExit(f"error: unknown command {command!r}; accepted: {', '.join(COMMANDS)}")
    rest = with_defaults(command, rest)
    # enjoy/record: load without a replay buffer, as rl-zoo3 does for "sac"
    register(replay=command != "train")
    # rl-zoo3's scripts parse sys.argv themselves
    sys.argv = [f"python -m sac_plus.zoo {command}", *rest]
    if command == "train":
        from rl_zoo3.train import train

        train()
    elif command == "enjoy":
        from rl_zoo3.enjoy import enjoy

        enjoy()
    else:
        # rl-zoo3's record_video is a script (its code runs under `if __name__ == "__main__"`)
        runpy.run_module("rl_zoo3.record_video", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
