"""
Synchronous distributed training (sac_plus.distributed): real processes on 127.0.0.1 with gloo.

The multi-process tests start their workers with torchrun (as a user would) or, where a test must see how one
worker reacts to another's death, with a plain launcher that sets the variables torchrun sets. The plain launcher
never hands a port from one process to another (bind, close, reuse: another process may take it in between): the
rendezvous store is hosted here, on a port the OS picked and this process holds, and the workers join it as
torchrun's workers join its agent's store (TORCHELASTIC_USE_AGENT_STORE). The slow imports of a worker happen
before a gate that the test opens once every worker is ready, so that the start-up of the others, on a loaded
machine, never counts against a worker's timeout.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch as th
import torch.distributed as dist
from stable_baselines3.common.evaluation import evaluate_policy

from sac_plus import SACPlus
from sac_plus.distributed import (
    MAX_TIMEOUT_S,
    DistributedContext,
    DistributedSACPlus,
    check_timeout,
    init_distributed,
    main,
    rank_seed,
    read_world,
)
from sac_plus.distributed.checks import check_params, parse_params

ROOT = Path(__file__).resolve().parents[1]
TINY = ["batch_size=32", "learning_starts=100", "policy_kwargs={'net_arch': [32, 32]}"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""), **extra)
    return env


@contextlib.contextmanager
def _rendezvous_store() -> Iterator[int]:
    """A rendezvous store hosted by this process on 127.0.0.1, on a port that stays bound while it runs; its port."""
    timeout = datetime.timedelta(seconds=120)
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, timeout=timeout, wait_for_workers=False)
    try:
        yield store.port
    finally:
        del store


def _torchrun(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    # --standalone: torchrun's agent hosts the store on a port the OS picks and keeps (no free-port race)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    return subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _start_rank(rank: int, world_size: int, port: int, argv: list[str], cwd: Path, **extra: str) -> subprocess.Popen:
    """Start one worker as torchrun would; ``port`` is a store of :func:`_rendezvous_store`, which it joins."""
    env = _env(
        WORLD_SIZE=str(world_size),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        TORCHELASTIC_USE_AGENT_STORE="True",
        GATE=str(cwd),
        **extra,
    )
    return subprocess.Popen(
        [sys.executable, *argv], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for(path: Path, processes: list[subprocess.Popen], timeout: float = 180) -> None:
    """Wait until ``path`` exists; fail with the output of a worker that exits first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        for process in processes:
            if process.poll() is not None:
                out, err = process.communicate()
                pytest.fail(f"a worker exited with {process.returncode} before {path.name}:\n{out[-3000:]}{err[-3000:]}")
        assert time.monotonic() < deadline, f"{path.name} did not appear within {timeout} s"
        time.sleep(0.02)


def _open_gate(cwd: Path, processes: list[subprocess.Popen]) -> None:
    """Let the workers of :data:`GATED` start their rendezvous, once all have done their imports."""
    for rank in range(len(processes)):
        _wait_for(cwd / f"ready{rank}", processes)
    (cwd / "go").touch()


def _finish(processes: list[subprocess.Popen], timeout: float = 120) -> list[tuple[int, str, str]]:
    """Wait for the workers; their (status, stdout, stderr). Raises ``TimeoutExpired`` after ``timeout``."""
    results = []
    for process in processes:
        out, err = process.communicate(timeout=timeout)
        results.append((process.returncode, out, err))
    return results


def _kill(processes: list[subprocess.Popen]) -> None:
    """Kill the workers still running (cleanup after a test, passed or failed)."""
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


# A worker of the command line: the slow imports, then the gate (see the module docstring), then what
# `python -m sac_plus.distributed` runs. With HOLD_SAVE set, the model's save stops midway (after the partial file is
# created) and says so with the file "saving", until the file "resume" appears: the test signals or kills a worker
# at that moment. With FAULT set, the worker dies ("exit") or hangs ("hang") after its 60th optimizer step, i.e. after
# 20 updates of critic, actor and alpha.
GATED = textwrap.dedent(
    """
    import os, pathlib, sys, time
    from torch.optim.optimizer import register_optimizer_step_post_hook
    import sac_plus.distributed
    from sac_plus import SACPlus

    gate = pathlib.Path(os.environ["GATE"])
    if os.environ.get("HOLD_SAVE"):
        excluded = SACPlus._excluded_save_params

        def hold(self):
            (gate / "saving").touch()
            while not (gate / "resume").exists():
                time.sleep(0.01)
            return excluded(self)

        SACPlus._excluded_save_params = hold
    steps = [0]

    def fault(optimizer, args, kwargs):
        steps[0] += 1
        if steps[0] == 60:
            if os.environ["FAULT"] == "exit":
                os._exit(1)
            time.sleep(3600)

    if os.environ.get("FAULT"):
        register_optimizer_step_post_hook(fault)
    (gate / f"ready{os.environ['RANK']}").touch()
    while not (gate / "go").exists():
        time.sleep(0.01)
    status = sac_plus.distributed.main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
    """
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


@pytest.mark.parametrize("timeout", [float("inf"), float("nan"), 1e14, MAX_TIMEOUT_S + 1, 0, -1.0, True, "60"])
def test_a_timeout_that_torch_cannot_use_is_refused(timeout):
    # inf overflowed datetime.timedelta and 1e14 s gloo's int64 of nanoseconds, reported as rendezvous failures
    with pytest.raises(ValueError, match=r"accepted: a finite number of seconds > 0 and <= 2592000 \(30 days\)"):
        check_timeout(timeout)
    assert check_timeout(MAX_TIMEOUT_S) == MAX_TIMEOUT_S and check_timeout(5) == 5.0


BASE_ARGS = ["--env", "Pendulum-v1", "--timesteps", "100"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timeout", "inf"], "argument --timeout: 'inf' is not valid; accepted: a finite number of seconds > 0"),
        (["--timeout", "1e14"], "argument --timeout: '1e14' is not valid"),
        (["--timesteps", "0"], "argument --timesteps: '0' is not valid; accepted: an integer >= 1"),
        (["--timesteps", "-5"], "argument --timesteps: '-5' is not valid; accepted: an integer >= 1"),
        (["--n-envs", "0"], "argument --n-envs: '0' is not valid; accepted: an integer >= 1"),
        (["--log-interval", "0"], "argument --log-interval: '0' is not valid; accepted: an integer >= 1"),
        (["--seed", "-1"], "argument --seed: '-1' is not valid; accepted: an integer >= 0"),
    ],
)
def test_bad_options_exit_2_with_the_usage(args, message, capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main([*BASE_ARGS, *args])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--params", "batch_size=abc"], "--params batch_size='abc' is not valid (it is not a Python literal"),
        (["--params", "batch_size=True"], "SACPlus's batch_size takes int; accepted: an integer"),
        (["--params", "policy_kwargs={'net_arch': [64, 64}"], "accepted: a dict or None, written as a Python literal"),
        (["--params", "learning_rate=fast"], "SACPlus's learning_rate takes float | Schedule; accepted: a number"),
        (["--params", "foo=1"], "--params foo=...: 'foo' is not a SACPlus keyword; accepted: action_noise, batch_size"),
        (["--params", "device=cpu"], "--params device=...: device is set with --device, not with --params"),
        (["--params", "seed=3"], "--params seed=...: seed is set with --seed, not with --params"),
        (["--env", "Foo-v0"], "--env 'Foo-v0' is not valid: NameNotFound: Environment `Foo` doesn't exist"),
        (["--env", "no_such_module:Foo-v0"], "--env 'no_such_module:Foo-v0' is not valid: ModuleNotFoundError"),
        (["--device", "tpu"], "--device 'tpu' is not valid"),
    ],
)
def test_bad_input_exits_2_before_the_rendezvous(args, message, capsys, monkeypatch):
    # no torchrun variables: had the input passed, main would fail to join the job (also exit 2, another message)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main([*BASE_ARGS, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sac_plus.distributed: error: ") and message in err, err
    assert "WORLD_SIZE" not in err


def test_good_params_pass_the_checks():
    items = ["batch_size=64", "learning_rate=1e-3", "train_freq=(2, 'step')", "ent_coef=auto_0.1", "ent_coef=0.05"]
    items += ["policy_kwargs={'net_arch': [8]}", "action_noise=None", "gamma=1", "use_sde=False"]
    params = parse_params(items)
    assert check_params(params) == params


def test_episode_train_freq_is_refused_with_several_ranks(space_env, fast_kwargs):
    from gymnasium import spaces

    model = SACPlus("MlpPolicy", space_env(spaces.Discrete(3)), **fast_kwargs(train_freq=(1, "episode")))
    with pytest.raises(ValueError, match=r"train_freq=.*counts episodes"):
        DistributedSACPlus(model, DistributedContext(rank=0, world_size=2))


def test_one_rank_stops_where_its_callback_says(space_env, fast_kwargs):
    """With one rank there is nothing to agree on (and no collective): a stop ends training at once, as in SACPlus."""
    from gymnasium import spaces
    from stable_baselines3.common.callbacks import BaseCallback

    class Stop(BaseCallback):
        def _on_step(self):
            return self.n_calls < 37

    model = SACPlus("MlpPolicy", space_env(spaces.Box(-1, 1, (1,))), **fast_kwargs(learning_starts=20, train_freq=4))
    trainer = DistributedSACPlus(model, DistributedContext(rank=0, world_size=1))
    trainer.learn(1000, callback=Stop())
    # rollouts of 4 steps; one update after those ending at 24, 28, 32 and 36 (learning_starts=20)
    assert (model.num_timesteps, model._n_updates) == (37, 4)


def test_seeds_and_params():
    assert [rank_seed(7, rank) for rank in range(3)] == [7, 8, 9]
    assert [rank_seed(7, rank, n_envs=4) for rank in range(3)] == [7, 11, 15]
    assert rank_seed(None, 1) is None
    assert parse_params(["batch_size=64", "ent_coef=auto_0.1", "policy_kwargs={'net_arch': [8]}"]) == {
        "batch_size": 64,
        "ent_coef": "auto_0.1",
        "policy_kwargs": {"net_arch": [8]},
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_params(["batch_size"])


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

    # 1. the hook: gradients averaged; a parameter with a gradient on no rank (frozen) keeps None, not stepped
    a, b, c = (th.nn.Parameter(th.zeros(n)) for n in (3, 2, 1))
    optimizer = th.optim.SGD([a, b, c], lr=1.0)
    GradientAverager(optimizer, ctx, "test")
    a.grad = th.full((3,), 2.0 * ctx.rank + 1.0)
    b.grad = th.full((2,), 4.0 * (1 - ctx.rank))
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
    # leave as the CLI does (sac_plus/distributed/__main__.py): gloo's threads can abort interpreter finalisation
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
    # the file actually written, .zip included, and where (with several machines rank 0 may run on any of them)
    assert f"saved {(tmp_path / 'cli' / 'model.zip').resolve()} on host {socket.gethostname()}" in run.stdout
    assert "mean return over 1 episodes" in run.stdout
    model = SACPlus.load(tmp_path / "cli" / "model.zip", device="cpu")
    assert model._n_updates == 50


def test_a_bad_keyword_value_is_a_worker_exit_2_under_torchrun(tmp_path):
    """
    A value that passes the checks of the command line but not SACPlus (an unknown policy keyword): every worker
    stops with one line and exit status 2 before training; torchrun itself exits 1 and lists the workers' statuses.
    """
    args = ["-m", "sac_plus.distributed", "--env", "Pendulum-v1", "--timesteps", "100", "--eval-episodes", "0"]
    run = _torchrun([*args, "--params", "policy_kwargs={'no_such_keyword': 1}"], tmp_path, 240)
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    # torchrun's summary: "rank      : 1 (local_rank: 1)", then "exitcode  : 2 (pid: ...)"
    statuses = re.findall(r"rank\s+: ([01]) \(local_rank: [01]\)\s+exitcode\s+: (-?\d+)", run.stderr)
    assert sorted(statuses) == [("0", "2"), ("1", "2")], run.stderr[-3000:]
    message = "got an unexpected keyword argument 'no_such_keyword'"
    assert run.stderr.count(message) == 2, run.stderr[-3000:]
    assert re.search(r"sac_plus.distributed: error: rank [01] of 2 \(gloo\): SACPlus\('MlpPolicy', env, ", run.stderr)
    assert "[rank0]: Traceback" not in run.stderr and "[rank1]: Traceback" not in run.stderr


def _pendulum():
    from stable_baselines3.common.env_util import make_vec_env

    return make_vec_env("Pendulum-v1")


@pytest.mark.parametrize("fault", ["exit", "hang"])
def test_a_dead_or_hung_worker_ends_the_job_with_a_clear_error(tmp_path, fault):
    (tmp_path / "gated.py").write_text(GATED)
    # A dead peer is seen at once whatever the timeout, so that one is long (a loaded machine never reaches it); a
    # hung one only after the timeout, which must still exceed the healthy worker's longest pause on a loaded machine
    timeout = 60 if fault == "exit" else 10
    args = ["--env", "Pendulum-v1", "--timesteps", "5000", "--timeout", str(timeout), "--eval-episodes", "0", "--params"]
    args += TINY
    with _rendezvous_store() as port:
        healthy = _start_rank(0, 2, port, ["gated.py", *args], tmp_path)
        faulty = _start_rank(1, 2, port, ["gated.py", *args], tmp_path, FAULT=fault)
        try:
            _open_gate(tmp_path, [healthy, faulty])
            start = time.monotonic()
            _, err = healthy.communicate(timeout=120)
            # the 20 updates take a few seconds; a dead peer is seen at once, a hung one after the timeout
            elapsed = time.monotonic() - start
        finally:
            _kill([faulty, healthy])
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
    """Rank 1 alone: nothing listens at MASTER_ADDR:MASTER_PORT, so the store never answers."""
    args = ["-m", "sac_plus.distributed", "--env", "Pendulum-v1", "--timesteps", "100", "--timeout", "2"]
    # bound (so that no other process can take the port meanwhile) but not listening: connections are refused
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        start = time.monotonic()
        lonely = _start_rank(1, 2, held.getsockname()[1], args, tmp_path)
        try:
            _, err = lonely.communicate(timeout=120)
        finally:
            _kill([lonely])
    assert lonely.returncode == 1
    assert "rank 1 of 2 (gloo): the rendezvous at 127.0.0.1:" in err and "timeout=2 s (--timeout)" in err
    assert time.monotonic() - start < 60


# ----------------------------------------------------------------------------------------------------------------
# The end of a job: the final barrier, a signal during the final save


@pytest.mark.parametrize("lost", [1, 0], ids=["rank 1 lost", "rank 0 lost"])
def test_a_peer_lost_while_rank_0_saves(tmp_path, lost):
    """
    Rank 0 holds its save midway; the test kills a worker (SIGKILL) at that moment. The other worker then fails
    in the final barrier (or finds its peer gone there): rank 0, whose training and save are complete, warns and
    exits 0; rank 1, whose rank 0 may not have saved, fails with exit status 1. Both say which collective failed.
    """
    (tmp_path / "gated.py").write_text(GATED)
    args = ["--env", "Pendulum-v1", "--timesteps", "150", "--save", "model", "--timeout", "60", "--eval-episodes", "0"]
    args += ["--params", *TINY]
    with _rendezvous_store() as port:
        ranks = [
            _start_rank(r, 2, port, ["gated.py", *args], tmp_path, **({"HOLD_SAVE": "1"} if r == 0 else {})) for r in (0, 1)
        ]
        try:
            _open_gate(tmp_path, ranks)
            _wait_for(tmp_path / "saving", ranks)
            ranks[lost].kill()
            ranks[lost].communicate()
            (tmp_path / "resume").touch()
            ((status, out, err),) = _finish([ranks[1 - lost]])
        finally:
            _kill(ranks)
    assert "Traceback" not in err, err[-3000:]
    if lost == 1:
        assert status == 0, err[-3000:]
        assert "sac_plus.distributed: warning: rank 0 of 2 (gloo): the final barrier" in err, err[-3000:]
        assert "rank 0's model is complete and saved: the job's result is not affected" in err
        assert f"saved {(tmp_path / 'model.zip').resolve()} on host {socket.gethostname()}" in out
        assert SACPlus.load(tmp_path / "model.zip", device="cpu")._n_updates == 50
    else:
        assert status == 1, err[-3000:]
        assert "sac_plus.distributed: error: rank 1 of 2 (gloo): the final barrier" in err, err[-3000:]
        assert "Rank 0 may have been lost while saving" in err
        assert not (tmp_path / "model.zip").exists()


def test_sigterm_during_the_final_save_removes_the_partial_file(tmp_path):
    """SIGTERM (how torchrun stops the workers of a failed job) midway through the save: the old zip is kept as it
    was, the partial file beside it is removed, and the worker exits 128 + 15 with a message."""
    (tmp_path / "gated.py").write_text(GATED)
    old = b"the previous model"
    (tmp_path / "model.zip").write_bytes(old)
    args = ["--env", "Pendulum-v1", "--timesteps", "20", "--save", "model", "--eval-episodes", "0", "--params", *TINY]
    with _rendezvous_store() as port:
        worker = _start_rank(0, 1, port, ["gated.py", *args], tmp_path, HOLD_SAVE="1")
        try:
            _open_gate(tmp_path, [worker])
            _wait_for(tmp_path / "saving", [worker])
            assert [p.name for p in tmp_path.glob(".model.zip.*.partial.zip")], "the save had not started its file"
            worker.send_signal(signal.SIGTERM)
            ((status, _, err),) = _finish([worker])
        finally:
            _kill([worker])
    assert status == 128 + signal.SIGTERM, err[-3000:]
    assert "sac_plus.distributed: error: rank 0 of 1 (gloo): SIGTERM arrived while saving" in err, err[-3000:]
    assert "Traceback" not in err
    assert (tmp_path / "model.zip").read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir() if "model" in p.name) == ["model.zip"]


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
