"""
Synchronous distributed SACPlus on ``torch.distributed``: one learner over several processes, on one
machine or many, launched with ``torchrun``.

Every process (rank) runs its own environments and fills its own replay buffer (a shard of the job's
experience); every gradient step averages the gradients of the critics, the actor and the temperature over
all ranks with one all-reduce per optimizer step (gloo on CPU, NCCL on GPUs), so all ranks hold bit-identical
weights. Rank 0 logs, evaluates and saves; its zip is an ordinary SACPlus model.

Command line (``--timesteps`` counts the env steps of *each* worker)::

    torchrun --standalone --nproc-per-node 2 -m sac_plus.distributed --env Pendulum-v1 --timesteps 20000 --save runs/pendulum

Python API, for your own environments (run the script with ``torchrun``)::

    from sac_plus.distributed import train_distributed
    model = train_distributed(make_my_env, 20_000, dict(batch_size=256), save_path="runs/mine")

or, with full control over the model::

    ctx = init_distributed(backend="auto", timeout=60)
    model = SACPlus("MlpPolicy", make_vec_env(make_my_env, seed=rank_seed(0, ctx.rank)), seed=rank_seed(0, ctx.rank))
    DistributedSACPlus(model, ctx).learn(20_000)

Effective batch size: each gradient step averages ``world_size`` minibatches of ``batch_size`` samples, one from
each rank's buffer, so it is a step on ``world_size * batch_size`` samples; the learning rate is *not* scaled.
The design is the lecture's "simple synchronous way" (design.md, "Scale beyond one machine"; issue 8).
"""

from __future__ import annotations

import argparse
import ast
import datetime
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import torch as th
import torch.distributed as dist
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, ConvertCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.type_aliases import MaybeCallback, TrainFrequencyUnit
from stable_baselines3.common.vec_env import VecEnv

from sac_plus.sac import SACPlus

__all__ = [
    "BACKENDS",
    "DEFAULT_TIMEOUT_S",
    "DistributedContext",
    "DistributedError",
    "DistributedSACPlus",
    "GradientAverager",
    "destroy_distributed",
    "init_distributed",
    "main",
    "rank_seed",
    "read_world",
    "train_distributed",
]

BACKENDS = ("auto", "gloo", "nccl")
DEFAULT_TIMEOUT_S = 60.0

_TIMEOUT_HINT = (
    "a peer process has probably died, hung or cannot be reached; every collective waits at most "
    "timeout={timeout:g} s (--timeout) for the others. Look at the other ranks' output for the first error"
)


class DistributedError(RuntimeError):
    """A collective or the rendezvous failed: a peer died, hung, or cannot be reached within the timeout."""


@dataclass(frozen=True)
class DistributedContext:
    """
    Where this process stands in the job.

    :param rank: this process's rank, in ``[0, world_size)``
    :param world_size: number of processes in the job
    :param local_rank: rank on this machine (selects the GPU with NCCL)
    :param backend: ``"gloo"`` or ``"nccl"``
    :param timeout: seconds a collective (and the rendezvous) waits for the other ranks before failing
    """

    rank: int
    world_size: int
    local_rank: int = 0
    backend: str = "gloo"
    timeout: float = DEFAULT_TIMEOUT_S

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, evaluates and saves."""
        return self.rank == 0

    def describe(self) -> str:
        return f"rank {self.rank} of {self.world_size} ({self.backend})"


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
    local_rank = _parse_int(environ, "LOCAL_RANK", "0")
    if local_rank < 0:
        raise ValueError(f"LOCAL_RANK={local_rank} is not valid; accepted: an integer >= 0")
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not environ.get(name)]
    if missing:
        raise ValueError(
            f"{' and '.join(missing)} not set (WORLD_SIZE={world_size}, RANK={rank}): start the job with torchrun, "
            "or set MASTER_ADDR and MASTER_PORT to the address and a free port of rank 0's machine"
        )
    return rank, world_size, local_rank


def check_backend(backend: str) -> str:
    """Raise a clear error for a backend this module does not support."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not supported; accepted: {', '.join(map(repr, BACKENDS))}")
    return backend


def check_timeout(timeout: float) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout={timeout!r} is not valid; accepted: a number of seconds > 0")
    return float(timeout)


def _wants_cuda(device: th.device | str) -> bool:
    if str(device) == "auto":
        return th.cuda.is_available()
    return th.device(device).type == "cuda"


def init_distributed(
    backend: str = "auto",
    timeout: float = DEFAULT_TIMEOUT_S,
    device: th.device | str = "auto",
) -> DistributedContext:
    """
    Join the job's process group (``env://`` rendezvous: the variables ``torchrun`` sets, see :func:`read_world`).

    :param backend: ``"gloo"`` (CPU), ``"nccl"`` (GPU), or ``"auto"``: NCCL when ``device`` is a GPU, else gloo
    :param timeout: seconds the rendezvous and every collective wait for the other ranks before failing
        with :class:`DistributedError`; it must exceed the longest pause of rank 0 alone (evaluation, saving)
    :param device: the device the model will use (``"auto"``: a GPU when there is one)
    :return: this rank's :class:`DistributedContext`; an already initialised process group is reused
    """
    check_backend(backend)
    timeout = check_timeout(timeout)
    if not dist.is_available():
        raise DistributedError("this build of torch has no torch.distributed support")
    rank, world_size, local_rank = read_world()
    if backend == "auto":
        backend = "nccl" if _wants_cuda(device) else "gloo"
    if backend == "nccl":
        if not th.cuda.is_available():
            raise ValueError("backend='nccl' needs CUDA GPUs, and none is available; accepted on CPU: backend='gloo'")
        th.cuda.set_device(local_rank % th.cuda.device_count())
    context = DistributedContext(rank, world_size, local_rank, backend, timeout)
    if dist.is_initialized():
        if dist.get_world_size() != world_size or dist.get_rank() != rank:
            raise ValueError(
                f"a process group is already initialised with rank {dist.get_rank()} of {dist.get_world_size()}, "
                f"but the environment says rank {rank} of {world_size}"
            )
        return DistributedContext(rank, world_size, local_rank, dist.get_backend(), timeout)
    try:
        dist.init_process_group(
            backend=backend,
            init_method="env://",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout),
        )
    except Exception as exc:
        address = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
        raise DistributedError(
            f"{context.describe()}: the rendezvous at {address} failed: {type(exc).__name__}: {str(exc).rstrip('. ')}. "
            f"Hint: every rank must reach rank 0's MASTER_ADDR:MASTER_PORT and all WORLD_SIZE={world_size} ranks "
            f"must start within timeout={timeout:g} s (--timeout)"
        ) from exc
    return context


def destroy_distributed(wait_for_peers: bool = True) -> None:
    """
    Leave the process group (a no-op when none is initialised).

    :param wait_for_peers: first wait until every rank is done (a barrier): a rank that tears gloo down while a peer
        still talks to it made that peer abort at exit ("terminate called without an active exception"). Pass
        ``False`` after a failure, when a peer may be dead and the barrier could only time out.
    """
    if dist.is_available() and dist.is_initialized():
        if wait_for_peers:
            dist.barrier()
        dist.destroy_process_group()


def rank_seed(seed: int | None, rank: int, n_envs: int = 1) -> int | None:
    """
    The seed of rank ``rank``: ``seed + rank * n_envs``. SB3 seeds env ``i`` of a VecEnv with ``seed + i``, so every env
    of the job gets its own seed and the ranks explore differently (with ``n_envs=1`` this is ``seed + rank``).
    """
    return None if seed is None else seed + rank * n_envs


def _comm_device(context: DistributedContext, tensor: th.Tensor) -> th.device:
    """NCCL moves CUDA tensors only; gloo moves CPU tensors (and CUDA ones)."""
    if context.backend == "nccl":
        return tensor.device if tensor.device.type == "cuda" else th.device("cuda", th.cuda.current_device())
    return tensor.device


def _collective(context: DistributedContext, what: str, function: Callable[[], Any]) -> Any:
    """Run one collective; any failure becomes a :class:`DistributedError` that names the rank, the step and a hint."""
    try:
        return function()
    except Exception as exc:
        raise DistributedError(
            f"{context.describe()}: {what} failed: {type(exc).__name__}: {str(exc).rstrip('. ')}. Hint: "
            + _TIMEOUT_HINT.format(timeout=context.timeout)
        ) from exc


def _all_reduce(context: DistributedContext, tensor: th.Tensor, what: str, op=None) -> th.Tensor:
    """All-reduce in place (a copy to the communication device and back when needed)."""
    op = dist.ReduceOp.SUM if op is None else op
    device = _comm_device(context, tensor)
    buffer = tensor if tensor.device == device else tensor.to(device)
    _collective(context, what, lambda: dist.all_reduce(buffer, op=op))
    if buffer is not tensor:
        tensor.copy_(buffer)
    return tensor


def _broadcast(context: DistributedContext, tensor: th.Tensor, what: str) -> None:
    """Overwrite ``tensor`` in place with rank 0's value."""
    device = _comm_device(context, tensor)
    buffer = tensor if tensor.device == device and tensor.is_contiguous() else tensor.to(device).contiguous()
    _collective(context, what, lambda: dist.broadcast(buffer, src=0))
    if buffer is not tensor:
        tensor.copy_(buffer)


def _check_same(context: DistributedContext, what: str, fields: dict[str, int]) -> None:
    """
    Check that ``fields`` hold the same integers on every rank, with one all-reduce of ``[v, -v]`` under MAX.
    Every rank sees the same result, so every rank raises together (no rank is left waiting in a collective).
    """
    values = th.tensor([*fields.values()], dtype=th.float64)
    both = th.cat([values, -values])
    _all_reduce(context, both, f"the consistency check of {what}", op=dist.ReduceOp.MAX)
    n = len(fields)
    highest, lowest = both[:n], -both[n:]
    differing = [
        f"{name} (from {lowest[i].item():g} to {highest[i].item():g})"
        for i, name in enumerate(fields)
        if highest[i] != lowest[i]
    ]
    if differing:
        raise ValueError(
            f"{context.describe()}: {what} differs between ranks: {', '.join(differing)}. Every rank must use the "
            "same model and schedule, or the ranks would do different numbers of gradient steps and deadlock"
        )


class GradientAverager:
    """
    An optimizer step pre-hook that replaces each gradient by its mean over all ranks, so every rank takes the
    same step from the same weights and the weights stay bit-identical.

    All the optimizer's gradients travel in one flat buffer per (device, dtype): one collective per step. A
    parameter whose gradient is ``None`` on some ranks counts as a zero gradient there; one whose gradient is
    ``None`` on every rank keeps ``None`` (the optimizer skips it everywhere, as it would on one process).

    :param optimizer: the optimizer whose gradients to average
    :param context: this rank's context
    :param name: the optimizer's name, for error messages
    """

    def __init__(self, optimizer: th.optim.Optimizer, context: DistributedContext, name: str):
        self.context = context
        self.name = name
        self.n_steps = 0
        self.handle = optimizer.register_step_pre_hook(self)

    def remove(self) -> None:
        self.handle.remove()

    @th.no_grad()
    def __call__(self, optimizer: th.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.n_steps += 1
        if self.context.world_size == 1:
            return  # the mean of one gradient is itself
        groups: dict[tuple[th.device, th.dtype], list[th.Tensor]] = {}
        for group in optimizer.param_groups:
            for param in group["params"]:
                groups.setdefault((param.device, param.dtype), []).append(param)
        what = f"the all-reduce of the {self.name} gradients at step {self.n_steps}"
        for params in groups.values():
            self._average(params, what)

    def _average(self, params: list[th.Tensor], what: str) -> None:
        grads = [param.grad for param in params]
        if any(grad is not None and grad.is_sparse for grad in grads):
            raise ValueError(f"{self.name}: sparse gradients are not supported by sac_plus.distributed")
        template = params[0]
        present = th.tensor([grad is not None for grad in grads], dtype=template.dtype, device=template.device)
        flat = th.cat(
            [
                (grad if grad is not None else th.zeros_like(param)).reshape(-1)
                for param, grad in zip(params, grads, strict=True)
            ]
            + [present]
        )
        _all_reduce(self.context, flat, what)
        # the counts are read (a host synchronisation on a GPU) only when this rank lacks a gradient
        counts = flat[-len(params) :].tolist() if any(grad is None for grad in grads) else [1.0] * len(params)
        flat = flat[: -len(params)].div_(self.context.world_size)
        offset = 0
        for param, grad, count in zip(params, grads, counts, strict=True):
            chunk = flat[offset : offset + param.numel()].view_as(param)
            offset += param.numel()
            if grad is not None:
                grad.copy_(chunk)
            elif count > 0:
                param.grad = chunk


def _model_optimizers(model: SACPlus) -> dict[str, th.optim.Optimizer]:
    optimizers = {"critic": model.critic.optimizer, "actor": model.actor.optimizer}
    if model.ent_coef_optimizer is not None:
        optimizers["temperature"] = model.ent_coef_optimizer
    return optimizers


class _SynchronizedStop(BaseCallback):
    """
    Runs rank 0's callback (other ranks have none) and makes every rank stop at the same rollout end.

    A callback that stops training on rank 0 alone would leave the other ranks waiting in the next all-reduce
    until the timeout. Here a stop request is held until the last env step of the rollout, where one all-reduce
    (MAX of the flags) tells every rank whether any rank wants to stop; they all stop at that same step, before
    the gradient steps of that rollout. With no callback on any rank nothing can stop early, and no collective
    is spent.
    """

    def __init__(self, callback: MaybeCallback, context: DistributedContext, synchronize: bool):
        super().__init__()
        if isinstance(callback, list):
            callback = CallbackList(callback)
        if callback is not None and not isinstance(callback, BaseCallback):
            callback = ConvertCallback(callback)
        self.callback: BaseCallback | None = callback
        self.context = context
        self.synchronize = synchronize
        self.stop_requested = False

    def _init_callback(self) -> None:
        if self.callback is not None:
            self.callback.init_callback(self.model)

    def _on_training_start(self) -> None:
        if self.callback is not None:
            self.callback.on_training_start(self.locals, self.globals)

    def _on_rollout_start(self) -> None:
        if self.callback is not None:
            self.callback.on_rollout_start()

    def _on_step(self) -> bool:
        if self.callback is not None and not self.callback.on_step():
            self.stop_requested = True
        if not self.synchronize or self.locals["num_collected_steps"] < self.locals["train_freq"].frequency:
            return True
        flag = th.tensor([float(self.stop_requested)])
        _all_reduce(self.context, flag, "the all-reduce of the stop flags at the end of a rollout", op=dist.ReduceOp.MAX)
        return flag.item() == 0.0

    def _on_rollout_end(self) -> None:
        if self.callback is not None:
            self.callback.on_rollout_end()

    def _on_training_end(self) -> None:
        if self.callback is not None:
            self.callback.on_training_end()

    def update_child_locals(self, locals_: dict[str, Any]) -> None:
        if self.callback is not None:
            self.callback.update_locals(locals_)


class DistributedSACPlus:
    """
    Makes a :class:`SACPlus` model one learner of a synchronous job: rank 0's weights are broadcast to every rank,
    and every optimizer step averages the gradients over the ranks (a step pre-hook on each of the model's
    optimizers), so all ranks keep identical weights. Ranks other than 0 get ``verbose=0`` and a logger with no
    output.

    Every rank must build the same model (policy, hyperparameters, ``n_envs``) on its own envs, preferably with its
    own seed (:func:`rank_seed`), and call :meth:`learn` with the same arguments: the ranks must do the same number
    of gradient steps, so ``train_freq`` must count steps, not episodes (episode lengths differ between ranks).
    This is checked, not assumed: a difference raises ``ValueError`` on every rank.

    Each gradient step is a step on ``world_size * batch_size`` samples (one minibatch per rank's buffer); the
    learning rate is not scaled. Each rank keeps its own ``VecNormalize`` statistics if it uses one, and its own
    batch-norm running statistics if the networks have any (only gradients are averaged); rank 0's are saved.

    :param model: this rank's model
    :param context: this rank's context (default: the initialised process group, see :func:`init_distributed`)
    """

    def __init__(self, model: SACPlus, context: DistributedContext | None = None):
        if context is None:
            if not (dist.is_available() and dist.is_initialized()):
                raise ValueError("no process group is initialised: call init_distributed() first, or pass context=")
            context = DistributedContext(dist.get_rank(), dist.get_world_size(), backend=dist.get_backend())
        self.model = model
        self.context = context
        self._check_model()
        self.optimizers = _model_optimizers(model)
        if not context.is_main:
            model.verbose = 0
            model.tensorboard_log = None
            model.set_logger(Logger(folder=None, output_formats=[]))
        self._check_same_structure()
        self._broadcast_state()
        self.averagers = [GradientAverager(optimizer, context, name) for name, optimizer in self.optimizers.items()]

    @property
    def rank(self) -> int:
        return self.context.rank

    @property
    def world_size(self) -> int:
        return self.context.world_size

    @property
    def is_main(self) -> bool:
        return self.context.is_main

    def _check_model(self) -> None:
        if not isinstance(self.model, SACPlus):
            raise TypeError(f"model={self.model!r} is not supported; accepted: a SACPlus instance")
        if self.context.backend == "nccl" and self.model.device.type != "cuda":
            raise ValueError(
                f"backend='nccl' needs the model on a GPU, but model.device={self.model.device}; "
                "accepted: device='cuda' with NCCL, or backend='gloo' for a CPU model"
            )
        if self.context.world_size > 1 and self.model.train_freq.unit != TrainFrequencyUnit.STEP:
            raise ValueError(
                f"train_freq={self.model.train_freq} counts episodes; with several ranks, episodes end at different "
                "times, so the ranks would do different numbers of gradient steps and deadlock. "
                "Accepted: train_freq=N or (N, 'step')"
            )

    def _policy_tensors(self) -> list[th.Tensor]:
        tensors = list(self.model.policy.state_dict().values())
        if self.model.log_ent_coef is not None:
            tensors.append(self.model.log_ent_coef)
        return tensors

    def _optimizer_state_tensors(self) -> list[th.Tensor]:
        tensors = []
        for optimizer in self.optimizers.values():
            for group in optimizer.param_groups:
                for param in group["params"]:
                    state = optimizer.state.get(param, {})
                    tensors.extend(value for _, value in sorted(state.items()) if isinstance(value, th.Tensor))
        return tensors

    def _check_same_structure(self) -> None:
        tensors = self._policy_tensors()
        fields = {
            "the number of policy tensors": len(tensors),
            "the number of policy numbers": sum(t.numel() for t in tensors),
            "the number of optimizer state tensors": len(self._optimizer_state_tensors()),
        }
        for name, optimizer in self.optimizers.items():
            fields[f"the size of the {name} optimizer"] = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
        self._check_same("the model", fields)

    def _check_same(self, what: str, fields: dict[str, int]) -> None:
        if self.context.world_size > 1:
            _check_same(self.context, what, fields)

    @th.no_grad()
    def _broadcast_state(self) -> None:
        """Rank 0's actor, critics, target critics (parameters and buffers), log(alpha) and optimizer state."""
        if self.context.world_size == 1:
            return
        for tensor in self._policy_tensors():
            _broadcast(self.context, tensor.data, "the broadcast of rank 0's weights")
        for tensor in self._optimizer_state_tensors():
            _broadcast(self.context, tensor.data, "the broadcast of rank 0's optimizer state")

    def learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "SACPlus",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SACPlus:
        """
        ``SACPlus.learn`` on every rank, in step. ``total_timesteps`` counts this rank's env steps, so the job
        collects ``world_size * total_timesteps`` transitions. ``callback`` and ``progress_bar`` are used on rank 0
        only (other ranks ignore them); a callback that stops training stops every rank, at the end of the rollout.

        :return: the model
        """
        model = self.model
        fields = {
            "total_timesteps": total_timesteps,
            "reset_num_timesteps": int(reset_num_timesteps),
            "num_timesteps": 0 if reset_num_timesteps else model.num_timesteps,
            "n_envs": model.n_envs,
            "train_freq": model.train_freq.frequency,
            "gradient_steps": model.gradient_steps,
            "learning_starts": model.learning_starts,
            "batch_size": model.batch_size,
            "target_update_interval": model.target_update_interval,
            "n_updates": model._n_updates,
        }
        self._check_same("the training schedule", fields)
        has_callback = th.tensor([float(self.is_main and callback is not None)])
        if self.world_size > 1:
            _all_reduce(self.context, has_callback, "the all-reduce of the callback flags", op=dist.ReduceOp.MAX)
        synced = _SynchronizedStop(callback if self.is_main else None, self.context, bool(has_callback.item()))
        return model.learn(
            total_timesteps,
            callback=synced,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar and self.is_main,
        )

    def save(self, path: str | os.PathLike) -> None:
        """Save the model on rank 0 (an ordinary SACPlus zip); a no-op on the other ranks."""
        if self.is_main:
            self.model.save(path)

    def close(self) -> None:
        """Remove the gradient hooks: the model trains on its own again."""
        for averager in self.averagers:
            averager.remove()
        self.averagers = []


def train_distributed(
    env: str | Callable[[], gym.Env],
    total_timesteps: int,
    sac_kwargs: dict[str, Any] | None = None,
    save_path: str | os.PathLike | None = None,
    *,
    policy: str = "MlpPolicy",
    n_envs: int = 1,
    seed: int | None = 0,
    backend: str = "auto",
    timeout: float = DEFAULT_TIMEOUT_S,
    callback: MaybeCallback = None,
    log_interval: int = 4,
    progress_bar: bool = False,
    env_kwargs: dict[str, Any] | None = None,
    vec_env_cls: type[VecEnv] | None = None,
) -> SACPlus:
    """
    Train one SACPlus learner over the processes of a ``torchrun`` job; call it on every rank with the same arguments.

    Each rank builds ``n_envs`` envs with ``make_vec_env(env, n_envs, seed=rank_seed(seed, rank, n_envs))`` and a model
    with the same seed, joins the process group, trains ``total_timesteps`` env steps of its own, and rank 0 saves
    to ``save_path``. The process group is left at the end if this function joined it.

    :param env: a Gymnasium env id, or a function that returns a new env (your own environment)
    :param total_timesteps: env steps per rank (the job collects ``world_size * total_timesteps``)
    :param sac_kwargs: keywords of :class:`SACPlus` (``batch_size`` is per rank: each gradient step sees
        ``world_size * batch_size`` samples; ``learning_rate`` is used as given)
    :param save_path: where rank 0 saves the model zip (``None``: not saved)
    :param policy: the policy (``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"``)
    :param n_envs: envs per rank
    :param seed: the job's seed; rank ``r`` uses :func:`rank_seed` ``(seed, r, n_envs)``
    :param backend: ``"auto"``, ``"gloo"`` or ``"nccl"`` (see :func:`init_distributed`)
    :param timeout: seconds the rendezvous and each collective wait for the other ranks
    :param callback: callback(s), run on rank 0 only
    :param log_interval: episodes between log dumps (rank 0)
    :param progress_bar: show a progress bar on rank 0
    :param env_kwargs: keywords for the env constructor
    :param vec_env_cls: the VecEnv class (``DummyVecEnv`` by default)
    :return: this rank's trained model (the weights are the same on every rank)
    """
    sac_kwargs = dict(sac_kwargs or {})
    for reserved in ("seed", "env"):
        if reserved in sac_kwargs:
            raise ValueError(f"sac_kwargs[{reserved!r}] is set per rank by train_distributed; pass {reserved}= instead")
    was_initialized = dist.is_available() and dist.is_initialized()
    device = sac_kwargs.get("device", "auto")
    context = init_distributed(backend, timeout, device=device)
    vec_env = None
    try:
        if context.backend == "nccl" and str(device) in ("auto", "cuda"):
            sac_kwargs["device"] = f"cuda:{th.cuda.current_device()}"
        this_seed = rank_seed(seed, context.rank, n_envs)
        vec_env = make_vec_env(env, n_envs=n_envs, seed=this_seed, env_kwargs=env_kwargs, vec_env_cls=vec_env_cls)
        if not context.is_main:
            sac_kwargs.update(verbose=0, tensorboard_log=None)
        model = SACPlus(policy, vec_env, seed=this_seed, **sac_kwargs)
        trainer = DistributedSACPlus(model, context)
        trainer.learn(total_timesteps, callback=callback, log_interval=log_interval, progress_bar=progress_bar)
        trainer.close()
        if save_path is not None:
            trainer.save(save_path)
        return model
    finally:
        if vec_env is not None:
            vec_env.close()
        if not was_initialized:
            destroy_distributed(wait_for_peers=sys.exc_info()[1] is None)


def _parse_params(items: list[str]) -> dict[str, Any]:
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


def _argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchrun --nproc-per-node N -m sac_plus.distributed",
        description="Synchronous distributed SACPlus: each worker collects with its own envs and buffer, gradients are "
        "averaged over the workers at every step; rank 0 logs, evaluates and saves. "
        "Each gradient step sees N x batch_size samples; the learning rate is not scaled.",
    )
    parser.add_argument("--env", required=True, help="Gymnasium env id, e.g. Pendulum-v1")
    parser.add_argument("--timesteps", type=int, required=True, help="env steps per worker")
    parser.add_argument("--save", default=None, help="where rank 0 saves the model zip")
    parser.add_argument("--backend", default="auto", choices=BACKENDS, help="gloo (CPU), nccl (GPU), auto (default)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help="seconds the rendezvous and each all-reduce wait for the other workers (default %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="job seed; worker r uses seed + r * n_envs")
    parser.add_argument("--n-envs", type=int, default=1, help="envs per worker")
    parser.add_argument("--policy", default="MlpPolicy")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument(
        "--params",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="SACPlus keywords, e.g. batch_size=256 learning_rate=1e-3 \"policy_kwargs={'net_arch': [64, 64]}\"",
    )
    parser.add_argument("--eval-freq", type=int, default=0, help="evaluate on rank 0 every N steps (0: only at the end)")
    parser.add_argument("--eval-episodes", type=int, default=10, help="episodes per evaluation on rank 0 (0: none)")
    parser.add_argument("--log-interval", type=int, default=4, help="episodes between log dumps on rank 0")
    parser.add_argument("--tensorboard-log", default=None, help="tensorboard folder (rank 0)")
    parser.add_argument("--verbose", type=int, default=1, help="rank 0's verbosity (others: 0)")
    parser.add_argument("--progress-bar", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (1 with a message on stderr when a collective fails)."""
    args = _argument_parser().parse_args(argv)
    sac_kwargs = _parse_params(args.params)
    sac_kwargs.update(device=args.device, verbose=args.verbose, tensorboard_log=args.tensorboard_log)
    rank = os.environ.get("RANK", "?")
    callback = None
    eval_env = None
    if args.eval_freq > 0 and args.eval_episodes > 0 and rank == "0":
        eval_env = make_vec_env(args.env, n_envs=1, seed=args.seed + 10_000)
        callback = EvalCallback(eval_env, n_eval_episodes=args.eval_episodes, eval_freq=args.eval_freq, verbose=args.verbose)
    start = time.perf_counter()
    try:
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
        print(f"sac_plus.distributed: error: {exc}", file=sys.stderr, flush=True)
        return 1
    except ValueError as exc:
        print(f"sac_plus.distributed: error: {exc}", file=sys.stderr, flush=True)
        return 2
    finally:
        if eval_env is not None:
            eval_env.close()
    seconds = time.perf_counter() - start
    if rank == "0":
        world_size = int(os.environ["WORLD_SIZE"])
        steps = world_size * model.num_timesteps
        print(
            f"sac_plus.distributed: {world_size} worker(s), {steps} env steps, {model._n_updates} updates of "
            f"{world_size} x {model.batch_size} samples in {seconds:.1f} s "
            f"({steps / seconds:.0f} env steps/s, {model._n_updates / seconds:.1f} updates/s)",
            flush=True,
        )
        if args.save is not None:
            print(f"sac_plus.distributed: saved {args.save}", flush=True)
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
