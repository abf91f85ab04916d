"""
Throughput of synchronous distributed SACPlus: env steps/s and updates/s with 1 and 2 workers.

For each network size, three runs on Pendulum-v1 with the same per-worker settings:

- ``plain``: one ordinary ``SACPlus.learn`` in one process (no torch.distributed), the reference;
- ``1``: one worker through ``sac_plus.distributed`` (gloo, world size 1: the cost of the hooks alone);
- ``2``: two workers started with torchrun, gradients averaged over gloo on 127.0.0.1.

Each worker runs one env, ``--timesteps`` env steps, one gradient step per env step after ``learning_starts``;
only ``learn()`` is timed (not the start of the processes). ``env_steps_per_s`` counts the steps of all workers;
``updates_per_s`` counts synchronous updates (each one on ``workers x batch_size`` samples, so
``samples_per_s = updates_per_s x workers x batch_size``); ``allreduce_share`` is the fraction of rank 0's
``learn()`` time spent inside ``torch.distributed.all_reduce`` (waiting for the other worker included).
Every process uses one intra-op thread (``OMP_NUM_THREADS=1``, as torchrun sets it), so two workers need
two free cores to run side by side.

Example::

    nice -n 10 python benchmarks/distributed.py --timesteps 1500
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time
from typing import Any

from returns import RESULTS_DIR

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIELDS = [
    "config",
    "net_arch",
    "batch_size",
    "workers",
    "timesteps_per_worker",
    "updates",
    "learn_s",
    "env_steps_per_s",
    "updates_per_s",
    "samples_per_s",
    "allreduce_share",
    "device",
    "cpu_cores",
    "loadavg_1min",
]
CONFIGS = {
    # SB3's SAC defaults: about 0.65 GFLOP per update (design.md, "Performance")
    "default": dict(net_arch=[256, 256], batch_size=256),
    # small nets: the update is cheap, so the cost of communication shows
    "small": dict(net_arch=[64, 64], batch_size=64),
}
LEARNING_STARTS = 100


def _sac_kwargs(config: str) -> dict[str, Any]:
    spec = CONFIGS[config]
    return dict(
        batch_size=spec["batch_size"],
        learning_starts=LEARNING_STARTS,
        policy_kwargs=dict(net_arch=spec["net_arch"]),
        device="cpu",
    )


def worker(config: str, timesteps: int, distributed: bool, out: pathlib.Path) -> None:
    """One process: train, time ``learn()``, and (rank 0) write the figures to ``out`` as JSON."""
    import torch as th
    import torch.distributed as dist
    from stable_baselines3.common.env_util import make_vec_env

    from sac_plus import SACPlus
    from sac_plus.distributed import DistributedSACPlus, destroy_distributed, init_distributed, rank_seed

    th.set_num_threads(1)
    rank, world_size = 0, 1
    context = None
    if distributed:
        context = init_distributed("gloo", timeout=120)
        rank, world_size = context.rank, context.world_size
    seed = rank_seed(0, rank)
    model = SACPlus("MlpPolicy", make_vec_env("Pendulum-v1", seed=seed), seed=seed, **_sac_kwargs(config))
    learner = DistributedSACPlus(model, context) if distributed else model

    in_all_reduce = [0.0]
    original = dist.all_reduce

    def timed_all_reduce(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            in_all_reduce[0] += time.perf_counter() - start

    dist.all_reduce = timed_all_reduce
    start = time.perf_counter()
    learner.learn(timesteps)
    seconds = time.perf_counter() - start
    dist.all_reduce = original
    if rank == 0:
        batch = model.batch_size
        result = dict(
            updates=model._n_updates,
            learn_s=round(seconds, 3),
            env_steps_per_s=round(world_size * model.num_timesteps / seconds, 1),
            updates_per_s=round(model._n_updates / seconds, 1),
            samples_per_s=round(model._n_updates * world_size * batch / seconds, 0),
            allreduce_share=round(in_all_reduce[0] / seconds, 3),
        )
        out.write_text(json.dumps(result))
    if distributed:
        destroy_distributed()


def run(config: str, workers: str, timesteps: int) -> dict[str, Any]:
    """Start one measurement (``workers``: ``"plain"``, ``"1"`` or ``"2"``) in fresh processes."""
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "result.json"
        script = [str(pathlib.Path(__file__).resolve()), "--worker", config, "--timesteps", str(timesteps), "--out", str(out)]
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        if workers == "plain":
            command = [sys.executable, *script]
        else:
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", workers]
            command += [*script, "--distributed"]
        loadavg = os.getloadavg()[0]
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
        result = json.loads(out.read_text())
    spec = CONFIGS[config]
    return dict(
        config=config,
        net_arch="x".join(map(str, spec["net_arch"])),
        batch_size=spec["batch_size"],
        workers=workers,
        timesteps_per_worker=timesteps,
        **result,
        device=f"cpu ({platform.processor() or platform.machine()})",
        cpu_cores=len(os.sched_getaffinity(0)),
        loadavg_1min=round(loadavg, 2),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=1500, help="env steps per worker")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--workers", nargs="+", default=["plain", "1", "2"], choices=["plain", "1", "2"])
    parser.add_argument("--csv", type=pathlib.Path, default=RESULTS_DIR / "distributed.csv")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--distributed", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=pathlib.Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker, args.timesteps, args.distributed, args.out)
        if args.distributed:
            # Leave as `python -m sac_plus.distributed` does: gloo's C++ threads can abort the interpreter's teardown
            # after a clean destroy_distributed() ("terminate called without an active exception"), which would fail
            # a finished measurement (subprocess.run(check=True) below). The result file is written and closed.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        return
    rows = []
    for config in args.configs:
        for workers in args.workers:
            row = run(config, workers, args.timesteps)
            print(json.dumps(row), flush=True)
            rows.append(row)
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with open(args.csv, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()
