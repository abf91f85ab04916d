"""
Synchronous distributed training (sac_plus.distributed, issue 8): real processes on 127.0.0.1 with gloo.

The multi-process tests start their workers with torchrun (as a user would) or, where a test must see how one
worker reacts to another's death, with a plain launcher that sets the variables torchrun sets.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.evaluation import evaluate_policy

from sac_plus import SACPlus
from sac_plus.distributed import (
    DistributedContext,
    DistributedSACPlus,
    _parse_params,
    init_distributed,
    rank_seed,
    read_world,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = ["batch_size=32", "learning_starts=100", "policy_kwargs={'net_arch': [32, 32]}"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""), **extra)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _torchrun(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    return subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _start_rank(rank: int, world_size: int, port: int, argv: list[str], cwd: Path, **extra: str) -> subprocess.Popen:
    env = _env(
        WORLD_SIZE=str(world_size),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        **extra,
    )
    return subprocess.Popen(
        [sys.executable, *argv], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


# ----------------------------------------------------------------------------------------------------------------
# Argument checks (in this process, no process group)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "WORLD_SIZE is not set"),
        ({"WORLD_SIZE": "0", "RANK": "0"}, "WORLD_SIZE=0"),
        ({"WORLD_SIZE": "two", "RANK": "0"}, "WORLD_SIZE='two'"),
        ({"WORLD_SIZE": "2"}, "RANK is not set"),
        ({"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "a", "MASTER_PORT": "1"}, "RANK=2"),
        ({"WORLD_SIZE": "2", "RANK": "1"}, "MASTER_ADDR and MASTER_PORT not set"),
    ],
)
def test_bad_world_is_a_clear_value_error(environ, message):
    with pytest.raises(ValueError, match=message):
        read_world(environ)


def test_read_world():
    environ = {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "29500"}
    assert read_world(environ) == (3, 4, 1)


def test_bad_backend_and_timeout_are_clear_value_errors(monkeypatch):
    for name, value in {"WORLD_SIZE": "1", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match="backend='mpi' is not supported; accepted: 'auto', 'gloo', 'nccl'"):
        init_distributed("mpi")
    with pytest.raises(ValueError, match="timeout=0"):
        init_distributed("gloo", timeout=0)
    if not th.cuda.is_available():
        with pytest.raises(ValueError, match="backend='nccl' needs CUDA"):
            init_distributed("nccl")
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(ValueError, match="WORLD_SIZE is not set"):
        init_distributed("gloo")


def test_episode_train_freq_is_refused_with_several_ranks(space_env, fast_kwargs):
    from gymnasium import spaces

    model = SACPlus("MlpPolicy", space_env(spaces.Discrete(3)), **fast_kwargs(train_freq=(1, "episode")))
    with pytest.raises(ValueError, match=r"train_freq=.*counts episodes"):
        DistributedSACPlus(model, DistributedContext(rank=0, world_size=2))


def test_seeds_and_params():
    assert [rank_seed(7, rank) for rank in range(3)] == [7, 8, 9]
    assert [rank_seed(7, rank, n_envs=4) for rank in range(3)] == [7, 11, 15]
    assert rank_seed(None, 1) is None
    assert _parse_params(["batch_size=64", "ent_coef=auto_0.1", "policy_kwargs={'net_arch': [8]}"]) == {
        "batch_size": 64,
        "ent_coef": "auto_0.1",
        "policy_kwargs": {"net_arch": [8]},
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        _parse_params(["batch_size"])


# ----------------------------------------------------------------------------------------------------------------
# Two workers

WORKER = textwrap.dedent(
    """
    import os
    import sys
    import torch as th
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from sac_plus import SACPlus
    from sac_plus.distributed import DistributedSACPlus, GradientAverager, destroy_distributed, init_distributed
    from sac_plus.distributed import rank_seed, train_distributed

    out = sys.argv[1]
    ctx = init_distributed("gloo", timeout=60)
    result = {}

    # 1. the hook: gradients averaged, a None gradient counts as zero, None everywhere stays None (not stepped)
    a, b, c = (th.nn.Parameter(th.zeros(n)) for n in (3, 2, 1))
    optimizer = th.optim.SGD([a, b, c], lr=1.0)
    GradientAverager(optimizer, ctx, "test")
    a.grad = th.full((3,), 2.0 * ctx.rank + 1.0)
    b.grad = th.full((2,), 4.0) if ctx.rank == 0 else None
    optimizer.step()
    result["hook"] = (a.detach().clone(), b.detach().clone(), c.detach().clone(), c.grad is None)

    # 2. 200 updates with the Python API; the process group is ours, so train_distributed leaves it open
    kwargs = dict(batch_size=32, learning_starts=100, policy_kwargs=dict(net_arch=[32, 32]), device="cpu")
    model = train_distributed("Pendulum-v1", 300, kwargs, save_path=out + "/model", seed=3)
    result["state"] = {k: v.clone() for k, v in model.policy.state_dict().items()}
    result["log_ent_coef"] = model.log_ent_coef.detach().clone()
    result["n_updates"] = model._n_updates
    result["observations"] = model.replay_buffer.observations[:300].copy()

    # 3. a callback on rank 0 that stops at step 37 stops every rank at the end of that rollout (step 40)
    class Stop(BaseCallback):
        def _on_step(self):
            return self.n_calls < 37

    seed = rank_seed(5, ctx.rank)
    kwargs.update(learning_starts=20, train_freq=4, gradient_steps=2)
    model = SACPlus("MlpPolicy", make_vec_env("Pendulum-v1", seed=seed), seed=seed, **kwargs)
    trainer = DistributedSACPlus(model, ctx)
    trainer.learn(1000, callback=Stop() if ctx.rank == 0 else None)
    result["stopped"] = (model.num_timesteps, model._n_updates)
    th.save(result, f"{out}/rank{ctx.rank}.pt")
    destroy_distributed()
    # leave as the CLI does (sac_plus/distributed.py, __main__): gloo's threads can abort interpreter finalisation
    sys.stdout.flush()
    os._exit(0)
    """
)


def test_two_workers_keep_identical_weights_and_save_an_ordinary_zip(tmp_path):
    (tmp_path / "worker.py").write_text(WORKER)
    run = _torchrun(["worker.py", str(tmp_path)], cwd=tmp_path, timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rank0, rank1 = (th.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))

    a, b, c, c_grad_none = rank0["hook"]
    assert th.equal(a, th.full((3,), -2.0)) and th.equal(b, th.full((2,), -2.0))  # mean(1, 3) = 2; mean(4, 0) = 2
    assert th.equal(c, th.zeros(1)) and c_grad_none
    assert all(th.equal(x, y) for x, y in zip(rank0["hook"][:3], rank1["hook"][:3], strict=True))

    assert rank0["n_updates"] == rank1["n_updates"] == 200
    assert rank0["state"].keys() == rank1["state"].keys()
    for name in rank0["state"]:
        assert th.equal(rank0["state"][name], rank1["state"][name]), f"{name} differs between the ranks"
    assert th.equal(rank0["log_ent_coef"], rank1["log_ent_coef"])
    assert rank0["log_ent_coef"].item() != 0.0  # alpha did learn (it starts at log 1 = 0)
    # the ranks explored with different seeds
    assert not np.array_equal(rank0["observations"], rank1["observations"])

    # rollouts of 4 steps; updates after those ending at 24, 28, 32, 36 (learning_starts=20); none at 40 (stopped)
    assert rank0["stopped"] == rank1["stopped"] == (40, 8)

    loaded = SACPlus.load(tmp_path / "model.zip", device="cpu")
    for name, value in loaded.policy.state_dict().items():
        assert th.equal(value, rank0["state"][name])
    assert th.equal(loaded.log_ent_coef.detach(), rank0["log_ent_coef"])


def test_command_line_with_torchrun(tmp_path):
    args = ["-m", "sac_plus.distributed", "--env", "Pendulum-v1", "--timesteps", "150", "--save", "cli/model"]
    run = _torchrun([*args, "--backend", "gloo", "--timeout", "60", "--eval-episodes", "1", "--params", *TINY], tmp_path, 240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "2 worker(s), 300 env steps, 50 updates of 2 x 32 samples" in run.stdout
    assert "mean return over 1 episodes" in run.stdout
    model = SACPlus.load(tmp_path / "cli" / "model.zip", device="cpu")
    assert model._n_updates == 50


def _pendulum():
    from stable_baselines3.common.env_util import make_vec_env

    return make_vec_env("Pendulum-v1")


# A worker that dies (or hangs) after its 60th optimizer step, i.e. after 20 updates of critic, actor and alpha.
FAULTY = textwrap.dedent(
    """
    import os, sys, time
    from torch.optim.optimizer import register_optimizer_step_post_hook
    steps = [0]
    def hook(optimizer, args, kwargs):
        steps[0] += 1
        if steps[0] == 60:
            if os.environ["FAULT"] == "exit":
                os._exit(1)
            time.sleep(3600)
    register_optimizer_step_post_hook(hook)
    from sac_plus.distributed import main
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.parametrize("fault", ["exit", "hang"])
def test_a_dead_or_hung_worker_ends_the_job_with_a_clear_error(tmp_path, fault):
    (tmp_path / "faulty.py").write_text(FAULTY)
    timeout = 5
    args = ["--env", "Pendulum-v1", "--timesteps", "5000", "--timeout", str(timeout), "--eval-episodes", "0", "--params"]
    args += TINY
    port = _free_port()
    healthy = _start_rank(0, 2, port, ["-m", "sac_plus.distributed", *args], tmp_path)
    faulty = _start_rank(1, 2, port, ["faulty.py", *args], tmp_path, FAULT=fault)
    try:
        start = time.monotonic()
        _, err = healthy.communicate(timeout=120)
        # the 20 updates take a few seconds; a dead peer is seen at once, a hung one after the timeout
        elapsed = time.monotonic() - start
    finally:
        faulty.kill()
        faulty.communicate()
    assert healthy.returncode == 1, err[-3000:]
    # normally at the critic step of update 21; a connection reset may also lose the last reply of update 20
    failure = r"rank 0 of 2 \(gloo\): the all-reduce of the (critic|actor|temperature) gradients at step (20|21) failed"
    assert re.search(failure, err), err[-3000:]
    assert f"timeout={timeout} s (--timeout)" in err
    if fault == "hang":
        assert "Timed out" in err
        assert elapsed >= timeout
    assert elapsed < 90


def test_an_unreachable_rendezvous_ends_with_a_clear_error(tmp_path):
    """Rank 1 alone: rank 0 never comes, so the store at MASTER_ADDR:MASTER_PORT never answers."""
    args = ["-m", "sac_plus.distributed", "--env", "Pendulum-v1", "--timesteps", "100", "--timeout", "2"]
    start = time.monotonic()
    lonely = _start_rank(1, 2, _free_port(), args, tmp_path)
    _, err = lonely.communicate(timeout=120)
    assert lonely.returncode == 1
    assert "rank 1 of 2 (gloo): the rendezvous at 127.0.0.1:" in err and "timeout=2 s (--timeout)" in err
    assert time.monotonic() - start < 60


@pytest.mark.learning
def test_pendulum_learns_with_two_workers(tmp_path):
    params = ["learning_rate=1e-3", "batch_size=128", "policy_kwargs={'net_arch': [64, 64]}"]
    args = ["-m", "sac_plus.distributed", "--env", "Pendulum-v1", "--timesteps", "10000", "--save", "model"]
    run = _torchrun([*args, "--eval-episodes", "0", "--params", *params], tmp_path, 1800)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    model = SACPlus.load(tmp_path / "model.zip", device="cpu")
    mean, std = evaluate_policy(model, _pendulum(), n_eval_episodes=10, deterministic=True)
    print(f"Pendulum-v1, 2 workers x 10k steps: mean return {mean:.1f} +- {std:.1f}")
    assert mean > -600, f"mean return {mean:.0f} after 10k steps per worker (random: about -1200)"
