"""
Command line: ``torchrun --nproc-per-node N -m sac_plus.distributed --env ENV --timesteps STEPS [options]``.

Every worker (a process that torchrun starts) checks its input, joins the job, trains with
:func:`sac_plus.distributed.train_distributed` (``--timesteps`` counts the env steps of *each* worker) and leaves
through the final barrier; rank 0 evaluates, saves and prints the results. Example::

    torchrun --standalone --nproc-per-node 2 -m sac_plus.distributed --env Pendulum-v1 --timesteps 20000 --save runs/pendulum

Exit status of each worker (torchrun itself exits 1 whenever a worker fails, and lists the workers' statuses in its
summary); every error is one line on stderr, ``sac_plus.distributed: error: ...``, that says what failed:

- 0: trained (and saved); also on rank 0 when a peer is lost after training, at the final barrier (a warning);
- 1: a collective or the rendezvous failed (:class:`~sac_plus.distributed.DistributedError`: a peer died, hung or
  cannot be reached);
- 2: bad command-line input or configuration (an option, ``--env``, a ``--params`` keyword or value, the
  ``torchrun`` variables), found before training starts (:mod:`sac_plus.distributed.checks`); every worker has the
  same input, so every worker stops at once;
- 128 + N: signal N (143: ``SIGTERM``, how torchrun stops the workers of a failed job) arrived during the final save,
  whose partial file was removed (:class:`~sac_plus.distributed.SaveInterrupted`).

The worker leaves with ``os._exit``, after flushing its output and closing its logs: gloo's threads cannot always be
torn down by the interpreter (see the end of this file).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sac_plus.checkpoint import destination
from sac_plus.distributed import (
    BACKENDS,
    DEFAULT_TIMEOUT_S,
    MAX_TIMEOUT_S,
    DistributedError,
    SaveInterrupted,
    _leave_after_training,
    check_timeout,
    destroy_distributed,
    init_distributed,
    train_distributed,
)
from sac_plus.distributed.checks import check_device, check_env_id, check_params, parse_params
from sac_plus.sac import SACPlus


def _int_at_least(lowest: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``lowest`` (argparse turns the error into exit status 2 with the usage)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < lowest:
            raise argparse.ArgumentTypeError(f"{text!r} is not valid; accepted: an integer >= {lowest}")
        return value

    return parse


def _timeout_arg(text: str) -> float:
    try:
        return check_timeout(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not valid; accepted: a finite number of seconds > 0 and <= {MAX_TIMEOUT_S:.0f} (30 days)"
        ) from None


def _argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchrun --nproc-per-node N -m sac_plus.distributed",
        description="Synchronous distributed SACPlus: each worker collects with its own envs and buffer, gradients are "
        "averaged over the workers at every step; rank 0 logs, evaluates and saves. "
        "Each gradient step sees N x batch_size samples; the learning rate is not scaled. Exit status of a worker: "
        "0 done, 1 a collective or the rendezvous failed, 2 bad input, 143 SIGTERM during the final save.",
    )
    parser.add_argument("--env", required=True, help="Gymnasium env id, e.g. Pendulum-v1")
    parser.add_argument("--timesteps", type=_int_at_least(1), required=True, help="env steps per worker (>= 1)")
    parser.add_argument("--save", default=None, help="where rank 0 saves the model zip (.zip is appended if missing)")
    parser.add_argument("--backend", default="auto", choices=BACKENDS, help="gloo (CPU), nccl (GPU), auto (default)")
    parser.add_argument(
        "--timeout",
        type=_timeout_arg,
        default=DEFAULT_TIMEOUT_S,
        help="seconds the rendezvous and each all-reduce wait for the other workers (default %(default)s, "
        f"at most {MAX_TIMEOUT_S:.0f})",
    )
    parser.add_argument("--seed", type=_int_at_least(0), default=0, help="job seed; worker r uses seed + r * n_envs")
    parser.add_argument("--n-envs", type=_int_at_least(1), default=1, help="envs per worker")
    parser.add_argument("--policy", default="MlpPolicy", choices=sorted(SACPlus.policy_aliases))
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument(
        "--params",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="SACPlus keywords, e.g. batch_size=256 learning_rate=1e-3 \"policy_kwargs={'net_arch': [64, 64]}\"",
    )
    parser.add_argument(
        "--eval-freq", type=_int_at_least(0), default=0, help="evaluate on rank 0 every N steps (0: only at the end)"
    )
    parser.add_argument(
        "--eval-episodes", type=_int_at_least(0), default=10, help="episodes per evaluation on rank 0 (0: none)"
    )
    parser.add_argument("--log-interval", type=_int_at_least(1), default=4, help="episodes between log dumps on rank 0")
    parser.add_argument("--tensorboard-log", default=None, help="tensorboard folder (rank 0)")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="rank 0's verbosity (others: 0)")
    parser.add_argument("--progress-bar", action="store_true")
    return parser


def _error(message: Any, status: int) -> int:
    print(f"sac_plus.distributed: error: {message}", file=sys.stderr, flush=True)
    return status


def main(argv: list[str] | None = None) -> int:
    """
    The command line; returns the worker's exit status (see the module's docstring): 0 done, 1 a collective or the
    rendezvous failed, 2 bad input (argparse's own errors exit 2 with the usage), 128 + N a signal during the final
    save. Every error is one line on stderr that says what failed.
    """
    args = _argument_parser().parse_args(argv)
    # The input is checked before the rendezvous: every worker has the same, so every worker stops here at once
    try:
        sac_kwargs = check_params(parse_params(args.params))
        check_env_id(args.env)
        check_device(args.device)
    except ValueError as exc:
        return _error(exc, 2)
    sac_kwargs.update(device=args.device, verbose=args.verbose, tensorboard_log=args.tensorboard_log)
    try:
        context = init_distributed(args.backend, args.timeout, device=args.device)
    except DistributedError as exc:
        return _error(exc, 1)
    except ValueError as exc:  # not started by torchrun, or no GPU for NCCL
        return _error(exc, 2)
    callback = None
    eval_env = None
    start = time.perf_counter()
    try:
        if args.eval_freq > 0 and args.eval_episodes > 0 and context.is_main:
            eval_env = make_vec_env(args.env, n_envs=1, seed=args.seed + 10_000)
            callback = EvalCallback(
                eval_env, n_eval_episodes=args.eval_episodes, eval_freq=args.eval_freq, verbose=args.verbose
            )
        # the process group is ours: train_distributed leaves it open, and the final barrier is handled below
        model = train_distributed(
            args.env,
            args.timesteps,
            sac_kwargs,
            args.save,
            policy=args.policy,
            n_envs=args.n_envs,
            seed=args.seed,
            backend=args.backend,
            timeout=args.timeout,
            callback=callback,
            log_interval=args.log_interval,
            progress_bar=args.progress_bar,
        )
    except DistributedError as exc:
        destroy_distributed(wait_for_peers=False)
        return _error(exc, 1)
    except ValueError as exc:
        destroy_distributed(wait_for_peers=False)
        return _error(exc, 2)
    except SaveInterrupted as exc:
        destroy_distributed(wait_for_peers=False)
        return _error(f"{context.describe()}: {exc}", exc.code)
    finally:
        if eval_env is not None:
            eval_env.close()
    seconds = time.perf_counter() - start
    try:
        lost = _leave_after_training(context, saved=args.save is not None)
    except DistributedError as exc:
        return _error(exc, 1)
    if lost is not None:
        print(f"sac_plus.distributed: warning: {lost}", file=sys.stderr, flush=True)
    if context.is_main:
        world_size = context.world_size
        steps = world_size * model.num_timesteps
        print(
            f"sac_plus.distributed: {world_size} worker(s), {steps} env steps, {model._n_updates} updates of "
            f"{world_size} x {model.batch_size} samples in {seconds:.1f} s "
            f"({steps / seconds:.0f} env steps/s, {model._n_updates / seconds:.1f} updates/s)",
            flush=True,
        )
        if args.save is not None:
            # the absolute path and the host: with several machines, rank 0 may not run where torchrun was started
            saved = os.path.abspath(destination(args.save, "zip"))
            print(f"sac_plus.distributed: saved {saved} on host {socket.gethostname()}", flush=True)
        if args.eval_episodes > 0:
            final_env = make_vec_env(args.env, n_envs=1, seed=args.seed + 20_000)
            mean, std = evaluate_policy(model, final_env, n_eval_episodes=args.eval_episodes, deterministic=True)
            final_env.close()
            print(f"sac_plus.distributed: mean return over {args.eval_episodes} episodes: {mean:.1f} +- {std:.1f}", flush=True)
    model.logger.close()  # flushes TensorBoard and CSV output: the command leaves with os._exit (below)
    return 0


if __name__ == "__main__":
    status = main()
    # Leave without the interpreter's teardown, whatever the status. After a failed collective, gloo's threads still
    # wait in a receive from the dead peer and cannot be torn down. After a success (barrier, then
    # destroy_process_group), a worker still aborted at exit now and then ("terminate called without an active
    # exception", SIGABRT; once in CI, 0 of 35 runs here): gloo's C++ threads are destroyed during interpreter
    # finalisation (pytorch/pytorch#179291). The model zip and the logs are closed by now; stdout/stderr are flushed.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
