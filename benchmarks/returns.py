"""
Learning-quality benchmark: train SACPlus, SB3 SAC or SB3 DQN on one environment over several seeds and log
the deterministic evaluation return as training goes.

Each evaluation (SB3's ``EvalCallback``: deterministic policy, ``--eval-episodes`` episodes on a separate,
separately seeded environment) appends one row to ``benchmarks/results/returns_<env>.csv`` as soon as it is
done, so a study that is interrupted keeps what it measured. A study is resumable: a run (env, algo, variant,
seed, budget) whose final evaluation is already in the CSV is skipped; an unfinished one has its partial rows
removed and starts again.

Hyperparameters:

- ``sac_plus`` and ``sb3_sac`` get the *same* keywords: SB3's defaults, updated by ``--kwargs``;
- ``sb3_dqn`` uses rl-zoo3's tuned hyperparameters for the environment (``rl_zoo3/hyperparams/dqn.yml``),
  updated by ``--kwargs``;
- ``sb3_crossq`` is ``sb3_contrib.CrossQ`` with its own defaults, updated by ``--kwargs`` (e.g. the critic width);
- ``--preset NAME`` (``sac_plus`` only) starts from ``sac_plus.presets.NAME`` (its policy included) instead of
  SB3's defaults, then applies ``--kwargs``;
- ``--log-prob sb3`` (``sac_plus`` only): the Box actor's log-density computed as SB3 computes it, from
  ``a = tanh(n)`` as ``log N(n) - sum log(1 - a^2 + 1e-6)``, instead of SACPlus's exact one: short for the policy
  keyword ``tanh_jacobian_eps=1e-6`` in ``--kwargs``; give the run its own ``--variant``.

Examples::

    nice -n 10 python benchmarks/returns.py --env Pendulum-v1 --algo sac_plus --seeds 5 --steps 20000 --jobs 2
    nice -n 10 python benchmarks/returns.py --env CartPole-v1 --algo sac_plus --variant tes0.6 \\
        --kwargs '{"target_entropy_scale": 0.6}' --seeds 3 --steps 50000 --eval-freq 5000 --jobs 2
    nice -n 10 python benchmarks/returns.py --env HalfCheetah-v5 --algo sac_plus --preset CROSSQ --variant crossq256 \
        --kwargs '{"policy_kwargs": {"net_arch": {"pi": [256, 256], "qf": [256, 256]}}}' --seeds 3 --steps 100000
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import hashlib
import json
import multiprocessing as mp
import os
import pathlib
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

RESULTS_DIR = pathlib.Path(__file__).resolve().parent / "results"
FIELDS = ["env", "algo", "variant", "seed", "budget", "timesteps", "mean_return", "std_return", "wall_time"]
ALGOS = ("sac_plus", "sb3_sac", "sb3_dqn", "sb3_crossq")


def csv_path_for(env_id: str, results_dir: pathlib.Path = RESULTS_DIR) -> pathlib.Path:
    return results_dir / f"returns_{env_id}.csv"


@contextmanager
def locked(path: pathlib.Path) -> Iterator[None]:
    """An exclusive lock beside the CSV: seeds run as separate processes and append to the same file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # the lock file lives outside the repository (the CSV itself is replaced when partial rows are dropped)
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
    with open(pathlib.Path(tempfile.gettempdir()) / f"sac_plus_returns_{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_rows(path: pathlib.Path) -> list[dict[str, str]]:
    if not path.exists() or path.stat().st_size == 0:
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def append_row(path: pathlib.Path, row: dict[str, Any]) -> None:
    with locked(path):
        new = not path.exists() or path.stat().st_size == 0
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(row)
            f.flush()
            os.fsync(f.fileno())


def run_key(row: dict[str, Any]) -> tuple[str, str, str, int, int]:
    return (str(row["env"]), str(row["algo"]), str(row["variant"]), int(row["seed"]), int(row["budget"]))


def completed_runs(path: pathlib.Path) -> set[tuple[str, str, str, int, int]]:
    """Runs whose last evaluation reached their budget."""
    return {run_key(r) for r in read_rows(path) if int(r["timesteps"]) >= int(r["budget"])}


def drop_partial_run(path: pathlib.Path, key: tuple[str, str, str, int, int]) -> int:
    """Remove the rows of an unfinished run before it starts again (it restarts from scratch)."""
    with locked(path):
        rows = read_rows(path)
        kept = [r for r in rows if run_key(r) != key]
        if len(kept) != len(rows):
            tmp = path.with_suffix(".partial.tmp")
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=FIELDS)
                writer.writeheader()
                writer.writerows(kept)
            os.replace(tmp, path)
        return len(rows) - len(kept)


def zoo_hyperparams(algo: str, env_id: str) -> dict[str, Any]:
    """
    rl-zoo3's hyperparameters for ``env_id``, turned into constructor keywords the way rl-zoo3's
    ``ExperimentManager`` does: ``policy_kwargs`` strings are evaluated, ``lin_<x>`` becomes a linear schedule,
    ``train_freq`` lists become tuples. ``n_envs`` is returned under the key ``"n_envs"``.
    """
    import importlib.resources

    import torch.nn as nn
    import yaml
    from rl_zoo3.utils import linear_schedule

    text = importlib.resources.files("rl_zoo3").joinpath("hyperparams", f"{algo}.yml").read_text()
    table = yaml.safe_load(text)
    if env_id not in table:
        raise ValueError(f"env={env_id!r} has no entry in rl_zoo3/hyperparams/{algo}.yml; entries: {sorted(table)}")
    hp = dict(table[env_id])
    unsupported = {"normalize", "env_wrapper", "vec_env_wrapper", "frame_stack", "callback", "monitor_kwargs"} & set(hp)
    if unsupported:
        raise ValueError(
            f"rl-zoo3's {algo} entry for {env_id} uses {sorted(unsupported)}, which this benchmark does not apply"
        )
    hp.pop("n_timesteps", None)
    hp.pop("policy", None)
    for key, value in list(hp.items()):
        if isinstance(value, str) and value.startswith("lin_"):
            hp[key] = linear_schedule(float(value[len("lin_") :]))
    if isinstance(hp.get("policy_kwargs"), str):
        hp["policy_kwargs"] = eval(hp["policy_kwargs"], {"__builtins__": {}}, {"dict": dict, "nn": nn})
    if isinstance(hp.get("train_freq"), list):
        hp["train_freq"] = tuple(hp["train_freq"])
    return hp


def merge_kwargs(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` wins; ``policy_kwargs`` are merged key by key."""
    merged = {**base, **override}
    if "policy_kwargs" in base and "policy_kwargs" in override:
        merged["policy_kwargs"] = {**base["policy_kwargs"], **override["policy_kwargs"]}
    return merged


def model_kwargs(algo: str, env_id: str, override: dict[str, Any], preset: str | None = None) -> tuple[dict[str, Any], int]:
    """Constructor keywords (``policy`` included) and number of training envs for ``algo`` on ``env_id``."""
    if preset is not None:
        if algo != "sac_plus":
            raise ValueError(f"--preset is for --algo sac_plus, not {algo!r}")
        from sac_plus import presets

        base: dict[str, Any] = presets.get(preset)
    elif algo in ("sac_plus", "sb3_sac", "sb3_crossq"):
        base = {}  # each algorithm's own defaults (SB3's for both SACs)
    elif algo == "sb3_dqn":
        base = zoo_hyperparams("dqn", env_id)
    else:
        raise ValueError(f"algo={algo!r}; accepted: {', '.join(ALGOS)}")
    kwargs = merge_kwargs(base, override)
    if isinstance(kwargs.get("target_entropy_scale"), list):
        # JSON has no schedules: [start, end, end_fraction] is SB3's LinearSchedule (target entropy annealing)
        from stable_baselines3.common.utils import LinearSchedule

        kwargs["target_entropy_scale"] = LinearSchedule(*kwargs["target_entropy_scale"])
    n_envs = int(kwargs.pop("n_envs", 1))
    kwargs.setdefault("policy", "MlpPolicy")
    return kwargs, n_envs


def algo_class(algo: str):
    if algo == "sac_plus":
        from sac_plus import SACPlus

        return SACPlus
    if algo == "sb3_sac":
        from stable_baselines3 import SAC

        return SAC
    if algo == "sb3_dqn":
        from stable_baselines3 import DQN

        return DQN
    if algo == "sb3_crossq":
        from sb3_contrib import CrossQ

        return CrossQ
    raise ValueError(f"algo={algo!r}; accepted: {', '.join(ALGOS)}")


def train_one(spec: dict[str, Any]) -> tuple[str, int, float]:
    """One seed, in its own process: train with an EvalCallback and append a CSV row per evaluation."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import numpy as np
    import torch as th
    from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    th.set_num_threads(1)
    env_id, algo, variant, seed, budget = spec["key"]
    path = pathlib.Path(spec["csv"])
    kwargs, n_envs = model_kwargs(algo, env_id, spec["kwargs"], spec["preset"])
    start = time.perf_counter()
    last_logged = [-1]

    def log(timesteps: int, returns: np.ndarray) -> None:
        append_row(
            path,
            {
                "env": env_id,
                "algo": algo,
                "variant": variant,
                "seed": seed,
                "budget": budget,
                "timesteps": timesteps,
                "mean_return": f"{float(np.mean(returns)):.4f}",
                "std_return": f"{float(np.std(returns)):.4f}",
                "wall_time": f"{time.perf_counter() - start:.2f}",
            },
        )
        last_logged[0] = timesteps

    class LogEvaluation(BaseCallback):
        """Called by EvalCallback after each evaluation: write the row now, not at the end."""

        def _on_step(self) -> bool:
            log(self.parent.num_timesteps, np.asarray(self.parent.evaluations_results[-1]))
            return True

    # Separate environments for training and evaluation, seeded apart (SB3 seeds env i of a VecEnv with seed + i).
    train_env = make_vec_env(env_id, n_envs=n_envs, seed=seed)
    eval_env = make_vec_env(env_id, n_envs=1, seed=seed + 10_000)
    model = algo_class(algo)(env=train_env, seed=seed, verbose=0, device="cpu", **kwargs)
    # EvalCallback counts calls (one per VecEnv step), each n_envs timesteps
    eval_freq = max(1, spec["eval_freq"] // n_envs)
    tmpdir = tempfile.TemporaryDirectory(prefix="sac_plus_eval_")
    evaluation = EvalCallback(
        eval_env,
        n_eval_episodes=spec["eval_episodes"],
        eval_freq=eval_freq,
        deterministic=True,
        callback_after_eval=LogEvaluation(),
        # EvalCallback keeps the per-episode returns only when it has a log_path (it also saves them there)
        log_path=tmpdir.name,
        verbose=0,
    )

    def evaluate_now() -> np.ndarray:
        """The same evaluation as EvalCallback's, outside its schedule."""
        returns, _ = evaluate_policy(
            model, eval_env, n_eval_episodes=spec["eval_episodes"], deterministic=True, return_episode_rewards=True
        )
        return np.asarray(returns)

    if spec["eval_at_start"]:
        log(0, evaluate_now())
    model.learn(total_timesteps=budget, callback=evaluation)
    if last_logged[0] < model.num_timesteps or last_logged[0] < budget:
        # the budget is not a multiple of eval_freq: evaluate the final policy anyway, it is the one reported
        log(max(model.num_timesteps, budget), evaluate_now())
    train_env.close()
    eval_env.close()
    tmpdir.cleanup()
    return f"{algo}/{variant}/seed{seed}", last_logged[0], time.perf_counter() - start


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", required=True, help="Gymnasium id, e.g. Pendulum-v1, CartPole-v1")
    parser.add_argument("--algo", required=True, choices=ALGOS)
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=int, default=None, help="run seeds 0..K-1 (default 3)")
    seeds.add_argument("--seed-list", type=str, default=None, help="comma-separated seeds, e.g. 3,4")
    parser.add_argument("--steps", type=int, required=True, help="training budget in environment steps")
    parser.add_argument("--preset", default=None, help="sac_plus only: start from sac_plus.presets.PRESET, e.g. CROSSQ")
    parser.add_argument(
        "--log-prob", choices=("exact", "sb3"), default="exact", help="sac_plus only: SB3's log-density (an ablation)"
    )
    parser.add_argument("--variant", default="default", help="name of this configuration in the CSV and plots")
    parser.add_argument(
        "--kwargs",
        default="{}",
        help="JSON constructor keywords, e.g. '{\"target_entropy_scale\": 0.6}'; a list [start, end, end_fraction] "
        "for target_entropy_scale is a linear schedule",
    )
    parser.add_argument("--jobs", type=int, default=1, help="seeds trained in parallel (one process each)")
    parser.add_argument("--eval-freq", type=int, default=None, help="evaluate every F timesteps (default: steps // 20)")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--no-eval-at-start", action="store_true", help="skip the evaluation of the untrained policy")
    parser.add_argument("--results-dir", type=pathlib.Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.eval_episodes < 10:
        parser.error(f"--eval-episodes={args.eval_episodes}: the benchmark requires at least 10")
    if args.seed_list is not None:
        args.seed_values = [int(s) for s in args.seed_list.split(",") if s.strip()]
    else:
        args.seed_values = list(range(args.seeds if args.seeds is not None else 3))
    if args.log_prob != "exact" and (args.algo != "sac_plus" or args.variant == "default"):
        parser.error("--log-prob sb3 is an ablation of sac_plus: give it --algo sac_plus and a --variant of its own")
    args.kwargs_dict = json.loads(args.kwargs)
    if not isinstance(args.kwargs_dict, dict):
        parser.error(f"--kwargs={args.kwargs!r} must be a JSON object")
    if args.log_prob == "sb3":
        args.kwargs_dict = merge_kwargs(args.kwargs_dict, {"policy_kwargs": {"tanh_jacobian_eps": 1e-6}})
    if args.eval_freq is None:
        args.eval_freq = max(1, args.steps // 20)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    path = csv_path_for(args.env, args.results_dir)
    model_kwargs(args.algo, args.env, args.kwargs_dict, args.preset)  # fail now on a bad configuration, not in every worker
    with locked(path):
        done = completed_runs(path)
    specs = []
    for seed in args.seed_values:
        key = (args.env, args.algo, args.variant, seed, args.steps)
        if key in done:
            print(f"skip {args.algo}/{args.variant}/seed{seed}: {args.steps} steps already complete in {path}", flush=True)
            continue
        dropped = drop_partial_run(path, key)
        if dropped:
            print(f"restart {args.algo}/{args.variant}/seed{seed}: dropped {dropped} rows of an unfinished run", flush=True)
        specs.append(
            {
                "key": key,
                "csv": str(path),
                "kwargs": args.kwargs_dict,
                "preset": args.preset,
                "eval_freq": args.eval_freq,
                "eval_episodes": args.eval_episodes,
                "eval_at_start": not args.no_eval_at_start,
            }
        )
    if not specs:
        return 0
    print(
        f"{len(specs)} runs of {args.algo}/{args.variant} on {args.env} ({args.steps} steps), {args.jobs} at a time",
        flush=True,
    )
    if args.jobs <= 1:
        results = map(train_one, specs)
        for name, timesteps, seconds in results:
            print(f"done {name}: {timesteps} steps in {seconds:.0f} s", flush=True)
    else:
        # spawn: each seed is a fresh interpreter with one torch thread, no state shared with the parent
        with mp.get_context("spawn").Pool(min(args.jobs, len(specs)), maxtasksperchild=1) as pool:
            for name, timesteps, seconds in pool.imap_unordered(train_one, specs):
                print(f"done {name}: {timesteps} steps in {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
