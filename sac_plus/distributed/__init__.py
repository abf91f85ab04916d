"""
Synchronous distributed SACPlus on ``torch.distributed``: one learner over several processes, on one machine or
many, launched with ``torchrun``.

Every process (rank) runs its own environments and fills its own replay buffer (a shard of the job's experience);
every gradient step averages the gradients of the critics, the actor and the temperature over all ranks with one
all-reduce per optimizer step (gloo on CPU, NCCL on GPUs), so all ranks hold bit-identical weights. Rank 0 logs,
evaluates and saves; its zip is an ordinary SACPlus model.

Python API, for your own environments (run the script with ``torchrun``)::

    from sac_plus.distributed import train_distributed
    model = train_distributed(make_my_env, 20_000, dict(batch_size=256), save_path="runs/mine")

or, with full control over the model::

    ctx = init_distributed(backend="auto", timeout=60)
    model = SACPlus("MlpPolicy", make_vec_env(make_my_env, seed=rank_seed(0, ctx.rank)), seed=rank_seed(0, ctx.rank))
    DistributedSACPlus(model, ctx).learn(20_000)

The command line, ``torchrun --nproc-per-node 2 -m sac_plus.distributed --env Pendulum-v1 --timesteps 20000``, is
:mod:`sac_plus.distributed.__main__` (its options, exit statuses and signal handling); the checks of what comes from
outside (the torchrun variables, the backend, the timeout, the command line's input) are
:mod:`sac_plus.distributed.checks`.

Effective batch size: each gradient step averages ``world_size`` minibatches of ``batch_size`` samples, one from
each rank's buffer, so it is a step on ``world_size * batch_size`` samples; the learning rate is *not* scaled.
The design is the simplest synchronous data-parallel scheme (docs/design.md, "7. Beyond one process").

How the ranks stay in step:

- the weights: rank 0's are broadcast at the start, then every optimizer step is the same on every rank (a step
  pre-hook replaces each gradient by its mean over the ranks, :class:`GradientAverager`);
- the schedule: every rank must do the same gradient steps, each one a collective, so the model's structure and the
  training schedule are checked equal on every rank at the start (a ``ValueError`` on every rank otherwise), and
  ``train_freq`` must count steps, not episodes;
- the end: a callback runs on rank 0 only, and a stop it asks for is agreed on by all ranks at the end of the rollout
  (one all-reduce there), through the callback's ``on_step`` answer: all ranks stop at the same step;
- rank and world size come from the process group once it is initialised; the variables ``torchrun`` sets are read
  only to join it (its ``env://`` rendezvous), and for ``LOCAL_RANK``, which only they hold;
- every collective that fails (a peer died, hung or cannot be reached within the timeout) raises
  :class:`DistributedError`, naming the rank and the step; a peer lost at the final barrier, after training, is no
  loss on rank 0 (:class:`DistributedWarning`).

Multi-node use (where rank 0 runs, addresses, ports, firewalls): docs/distributed.md.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import torch as th
import torch.distributed as dist
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, ConvertCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.type_aliases import MaybeCallback, TrainFreq, TrainFrequencyUnit
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

from sac_plus.checkpoint import destination
from sac_plus.distributed.checks import (
    BACKENDS,
    DEFAULT_TIMEOUT_S,
    MAX_TIMEOUT_S,
    check_backend,
    check_count,
    check_timeout,
    read_local_rank,
    read_world,
)
from sac_plus.sac import SACPlus

__all__ = [
    "BACKENDS",
    "DEFAULT_TIMEOUT_S",
    "MAX_TIMEOUT_S",
    "DistributedContext",
    "DistributedError",
    "DistributedSACPlus",
    "DistributedWarning",
    "GradientAverager",
    "SaveInterrupted",
    "check_backend",
    "check_timeout",
    "destroy_distributed",
    "init_distributed",
    "main",
    "rank_seed",
    "read_world",
    "train_distributed",
]

_TIMEOUT_HINT = (
    "a peer process has probably died, hung or cannot be reached; every collective waits at most "
    "{timeout} (--timeout) for the others. Look at the other ranks' output for the first error"
)
_FINAL_BARRIER = "the final barrier (every rank waits there until all have trained and rank 0 has saved)"
# the timeout of the process group that init_distributed created (None: none, or one created by the caller)
_group_timeout: float | None = None


class DistributedError(RuntimeError):
    """A collective or the rendezvous failed: a peer died, hung, or cannot be reached within the timeout."""


class DistributedWarning(RuntimeWarning):
    """Rank 0 finished training and saving, but a peer was lost at the final barrier: the result is complete."""


class SaveInterrupted(SystemExit):
    """
    A termination signal (``SIGTERM``, ``SIGHUP``) arrived during :meth:`DistributedSACPlus.save`: the save was
    abandoned, its partial file removed, and any previous file left as it was. A ``SystemExit`` with status
    ``128 + signal``, so a script that does not catch it ends as if killed by the signal, after its cleanup.

    :param signum: the signal's number
    :param path: the file being saved
    """

    code: int  # 128 + signum (SystemExit's may be any exit status)

    def __init__(self, signum: int, path: str | os.PathLike):
        super().__init__(128 + signum)
        self.signum = signum
        self.path = path

    def __str__(self) -> str:
        return (
            f"{signal.Signals(self.signum).name} arrived while saving {self.path}: the save was abandoned and its partial "
            "file removed; a previous file at that path, if any, is left as it was"
        )


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


def _group_context(timeout: float | None = None, local_rank: int = 0) -> DistributedContext:
    """
    This process's context in the initialised process group: rank, world size and backend as the group has them.

    :param timeout: the group's timeout, for messages (default: the one :func:`init_distributed` gave it, or NaN for
        a group created by the caller, whose timeout is unknown)
    """
    if timeout is None:
        timeout = math.nan if _group_timeout is None else _group_timeout
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, dist.get_backend(), timeout)


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
    :return: this rank's :class:`DistributedContext`; an already initialised process group is reused, with its rank,
        world size and backend
    """
    global _group_timeout
    check_backend(backend)
    timeout = check_timeout(timeout)
    if not dist.is_available():
        raise DistributedError("this build of torch has no torch.distributed support")
    joined = dist.is_initialized()
    if joined:
        # torch.distributed has no notion of a rank on this machine: LOCAL_RANK, set by torchrun, is its only source
        local_rank = read_local_rank(os.environ)
    else:
        # Before the group exists, the variables torchrun sets are the only source of the rank and the world size
        # (the env:// rendezvous below reads the same ones); afterwards they come from the group
        rank, world_size, local_rank = read_world(os.environ)
    if backend == "auto":
        backend = "nccl" if _wants_cuda(device) else "gloo"
    if backend == "nccl":
        if not th.cuda.is_available():
            raise ValueError("backend='nccl' needs CUDA GPUs, and none is available; accepted on CPU: backend='gloo'")
        th.cuda.set_device(local_rank % th.cuda.device_count())
    if not joined:
        try:
            dist.init_process_group(
                backend=backend,
                init_method="env://",
                rank=rank,
                world_size=world_size,
                timeout=datetime.timedelta(seconds=timeout),
            )
        except Exception as exc:
            # no group, so no context: the rank and the address are those of the variables the rendezvous used
            joining = DistributedContext(rank, world_size, local_rank, backend, timeout)
            address = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
            raise DistributedError(
                f"{joining.describe()}: the rendezvous at {address} failed: {type(exc).__name__}: "
                f"{str(exc).rstrip('. ')}. Hint: every rank must reach rank 0's MASTER_ADDR:MASTER_PORT and all "
                f"WORLD_SIZE={world_size} ranks must start within timeout={timeout:g} s (--timeout)"
            ) from exc
        _group_timeout = timeout
    return _group_context(timeout, local_rank)


def destroy_distributed(wait_for_peers: bool = True) -> None:
    """
    Leave the process group (a no-op when none is initialised). The group is destroyed even when the barrier fails.

    :param wait_for_peers: first wait until every rank is done (a barrier): a rank that tears gloo down while a peer
        still talks to it made that peer abort at exit ("terminate called without an active exception"). Pass
        ``False`` after a failure, when a peer may be dead and the barrier could only time out.
    :raises DistributedError: the barrier failed (a peer died, hung or cannot be reached). On rank 0 after a
        completed :meth:`DistributedSACPlus.learn`, that is no loss: every gradient step was a collective of all
        ranks, so every rank had finished training (:func:`train_distributed` turns it into a warning there).
    """
    global _group_timeout
    if not (dist.is_available() and dist.is_initialized()):
        return
    context = _group_context()
    try:
        if wait_for_peers:
            _collective(context, _FINAL_BARRIER, dist.barrier)
    finally:
        dist.destroy_process_group()
        _group_timeout = None


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
            + _TIMEOUT_HINT.format(timeout=_timeout_text(context.timeout))
        ) from exc


def _timeout_text(timeout: float) -> str:
    # NaN: a process group that this package did not create, whose timeout it does not know
    return "the process group's timeout" if math.isnan(timeout) else f"timeout={timeout:g} s"


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

    All the optimizer's gradients travel in one flat buffer per (device, dtype): one collective per step.

    Which parameters have a gradient is the same on every rank: SACPlus's losses are the same graph on every rank
    (the model's structure is checked equal at the start, and no loss branches on the data), and each of its
    optimizers holds only parameters of its own loss. So each parameter has a gradient on every rank, or on none: one
    frozen by the user (``requires_grad_(False)``, e.g. a pretrained features extractor) or left unused by a custom
    features extractor. Those are skipped, as the optimizer skips them everywhere. The gradients are dense: sparse ones
    come only from layers such as ``nn.Embedding(sparse=True)``, which SACPlus's networks do not have (and Adam, its
    optimizer, refuses them).

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
        buffers: dict[tuple[th.device, th.dtype], list[th.Tensor]] = {}
        for group in optimizer.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    buffers.setdefault((param.grad.device, param.grad.dtype), []).append(param.grad)
        what = f"the all-reduce of the {self.name} gradients at step {self.n_steps}"
        for grads in buffers.values():
            flat = _all_reduce(self.context, th.cat([grad.reshape(-1) for grad in grads]), what)
            flat.div_(self.context.world_size)
            offset = 0
            for grad in grads:
                grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
                offset += grad.numel()


def _train_freq(model: SACPlus) -> TrainFreq:
    """``model.train_freq``, which SB3 turns into a ``TrainFreq`` when it sets the model up (its attribute's type is
    still that of the argument, an int or a tuple)."""
    assert isinstance(model.train_freq, TrainFreq)
    return model.train_freq


def _model_optimizers(model: SACPlus) -> dict[str, th.optim.Optimizer]:
    optimizers = {"critic": model.critic.optimizer, "actor": model.actor.optimizer}
    if model.ent_coef_optimizer is not None:
        optimizers["temperature"] = model.ent_coef_optimizer
    return optimizers


class _SynchronizedStop(BaseCallback):
    """
    Runs rank 0's callback (other ranks have none) and makes every rank stop at the same step.

    A callback that stops training on rank 0 alone would leave the other ranks waiting in the next all-reduce
    until the timeout. Here a stop request is held until the last env step of the rollout, where one all-reduce
    (MAX of the flags) tells every rank whether any rank wants to stop; this callback's ``on_step`` answers ``False``
    there on every rank, so all stop at that same step, before the gradient steps of that rollout.

    The rollout's last step is found with the callback API alone: a rollout starts with ``on_rollout_start`` and is
    ``model.train_freq`` calls of ``on_step`` (one per step of the VecEnv; ``train_freq`` counts steps, not episodes,
    whenever there are several ranks), so this callback counts them. With one rank nothing needs agreeing and the
    callback's answer stops training at once; with no callback on any rank nothing can stop early, and no collective
    is spent.

    :param callback: rank 0's callback (``None`` on the other ranks)
    :param context: this rank's context
    :param synchronize: whether to agree on stopping (several ranks, and a callback on rank 0)
    """

    model: SACPlus  # set by init_callback: the model of DistributedSACPlus.learn

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
        self.rollout_steps = 0

    def _init_callback(self) -> None:
        if self.callback is not None:
            self.callback.init_callback(self.model)

    def _on_training_start(self) -> None:
        if self.callback is not None:
            self.callback.on_training_start(self.locals, self.globals)

    def _on_rollout_start(self) -> None:
        self.rollout_steps = 0
        if self.callback is not None:
            self.callback.on_rollout_start()

    def _on_step(self) -> bool:
        self.rollout_steps += 1
        wants_to_continue = self.callback is None or self.callback.on_step()
        if not self.synchronize:
            return wants_to_continue
        self.stop_requested |= not wants_to_continue
        if self.rollout_steps < _train_freq(self.model).frequency:
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
    :param context: this rank's context (default: that of the initialised process group, see :func:`init_distributed`)
    """

    def __init__(self, model: SACPlus, context: DistributedContext | None = None):
        if context is None:
            if not (dist.is_available() and dist.is_initialized()):
                raise ValueError("no process group is initialised: call init_distributed() first, or pass context=")
            context = _group_context()
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
        if self.context.world_size > 1 and _train_freq(self.model).unit != TrainFrequencyUnit.STEP:
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
        tensors: list[th.Tensor] = []
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
            "train_freq": _train_freq(model).frequency,
            "gradient_steps": model.gradient_steps,
            "learning_starts": model.learning_starts,
            "batch_size": model.batch_size,
            "target_update_interval": model.target_update_interval,
            "n_updates": model._n_updates,
        }
        self._check_same("the training schedule", fields)
        synchronize = False
        if self.world_size > 1:
            has_callback = th.tensor([float(self.is_main and callback is not None)])
            _all_reduce(self.context, has_callback, "the all-reduce of the callback flags", op=dist.ReduceOp.MAX)
            synchronize = bool(has_callback.item())
        synced = _SynchronizedStop(callback if self.is_main else None, self.context, synchronize)
        return model.learn(
            total_timesteps,
            callback=synced,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar and self.is_main,
        )

    def save(self, path: str | os.PathLike) -> None:
        """
        Save the model on rank 0 (an ordinary SACPlus zip); a no-op on the other ranks.

        The file is written atomically (a partial file beside it, then renamed). ``SIGTERM`` (how torchrun stops the
        workers of a failed job) and ``SIGHUP`` would kill the process mid-save and leave the hidden partial file
        behind, so while saving from the main thread they raise :class:`SaveInterrupted` instead, which removes it.
        A handler of your own for those signals is left alone.

        :param path: where to save (``.zip`` is appended when the path has no suffix)
        :raises SaveInterrupted: a termination signal arrived during the save
        """
        if self.is_main:
            with _signals_interrupt_save(destination(path, "zip")):
                self.model.save(path)

    def close(self) -> None:
        """Remove the gradient hooks: the model trains on its own again."""
        for averager in self.averagers:
            averager.remove()
        self.averagers = []


@contextlib.contextmanager
def _signals_interrupt_save(path: os.PathLike) -> Iterator[None]:
    """
    While the block runs, ``SIGTERM`` and ``SIGHUP`` raise :class:`SaveInterrupted` (only in the main thread, the
    only one Python can install handlers from, and only for signals with the default handler).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise SaveInterrupted(signum, path)

    previous = {}
    for signum in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):  # no SIGHUP on Windows
        if signum is not None and signal.getsignal(signum) is signal.SIG_DFL:
            previous[signum] = signal.signal(signum, interrupt)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


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
    vec_env_cls: type[DummyVecEnv] | type[SubprocVecEnv] | None = None,
) -> SACPlus:
    """
    Train one SACPlus learner over the processes of a ``torchrun`` job; call it on every rank with the same arguments.

    Each rank joins the process group, builds ``n_envs`` envs with ``make_vec_env(env, n_envs,
    seed=rank_seed(seed, rank, n_envs))`` and a model with the same seed, trains ``total_timesteps`` env steps of its
    own, and rank 0 saves to ``save_path``. The process group is left at the end (through a final barrier) if this
    function joined it; a peer lost at that barrier is a :class:`DistributedWarning` on rank 0, whose result is
    complete, and a :class:`DistributedError` on the other ranks.

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
    :param vec_env_cls: the VecEnv class (``DummyVecEnv`` by default), as in SB3's ``make_vec_env``
    :return: this rank's trained model (the weights are the same on every rank)
    :raises ValueError: a bad argument, or one that ``make_vec_env`` or ``SACPlus`` refuses (the original error is
        chained), before training starts
    :raises DistributedError: the rendezvous or a collective failed
    :raises SaveInterrupted: ``SIGTERM`` or ``SIGHUP`` during the save (see :meth:`DistributedSACPlus.save`)
    """
    sac_kwargs = dict(sac_kwargs or {})
    for reserved in ("seed", "env"):
        if reserved in sac_kwargs:
            raise ValueError(f"sac_kwargs[{reserved!r}] is set per rank by train_distributed; pass {reserved}= instead")
    check_count("total_timesteps", total_timesteps)
    check_count("n_envs", n_envs)
    was_initialized = dist.is_available() and dist.is_initialized()
    device = sac_kwargs.get("device", "auto")
    context = init_distributed(backend, timeout, device=device)
    vec_env = None
    trained = False
    try:
        if context.backend == "nccl" and str(device) in ("auto", "cuda"):
            sac_kwargs["device"] = f"cuda:{th.cuda.current_device()}"
        this_seed = rank_seed(seed, context.rank, n_envs)
        # Errors in building the envs and the model come from the arguments (the same on every rank, so every rank
        # fails here, before any collective): a ValueError that says which call failed, like the other checks
        try:
            vec_env = make_vec_env(env, n_envs=n_envs, seed=this_seed, env_kwargs=env_kwargs, vec_env_cls=vec_env_cls)
        except Exception as exc:
            raise ValueError(
                f"{context.describe()}: make_vec_env({env!r}, n_envs={n_envs}, env_kwargs={env_kwargs!r}) failed: "
                f"{type(exc).__name__}: {exc}; accepted: a registered Gymnasium env id or a function returning a new env"
            ) from exc
        if not context.is_main:
            sac_kwargs.update(verbose=0, tensorboard_log=None)
        shown = repr(sac_kwargs)  # before SACPlus adds its own entries to policy_kwargs
        try:
            model = SACPlus(policy, vec_env, seed=this_seed, **sac_kwargs)
        except Exception as exc:
            raise ValueError(
                f"{context.describe()}: SACPlus({policy!r}, env, **{shown}) failed: {type(exc).__name__}: {exc}"
            ) from exc
        trainer = DistributedSACPlus(model, context)
        trainer.learn(total_timesteps, callback=callback, log_interval=log_interval, progress_bar=progress_bar)
        trainer.close()
        if save_path is not None:
            trainer.save(save_path)
        trained = True
    finally:
        if vec_env is not None:
            vec_env.close()
        if not was_initialized and not trained:
            destroy_distributed(wait_for_peers=False)
    if not was_initialized:
        lost = _leave_after_training(context, saved=save_path is not None)
        if lost is not None:
            warnings.warn(lost, DistributedWarning, stacklevel=2)
    return model


def _leave_after_training(context: DistributedContext, saved: bool) -> str | None:
    """
    Leave the process group after a completed training, through the final barrier.

    A peer lost at that barrier is no loss on rank 0: every gradient step was a collective of all ranks, so every
    rank had finished training, and rank 0 has saved. Rank 0 gets the message of a warning back; another rank raises,
    since rank 0 may have been the one lost, while saving.

    :param context: this rank's context
    :param saved: whether rank 0 saved the model
    :return: ``None``, or (on rank 0) why the barrier failed and why that does not matter
    :raises DistributedError: the barrier failed on a rank other than 0
    """
    try:
        destroy_distributed()
    except DistributedError as exc:
        if not context.is_main:
            raise DistributedError(f"{exc}. Rank 0 may have been lost while saving: check that its zip is complete") from exc
        return (
            f"{exc}. Training had finished on every rank (every gradient step is a collective of all ranks) and rank 0's "
            f"model is {'complete and saved' if saved else 'complete'}: the job's result is not affected"
        )
    return None


def main(argv: list[str] | None = None) -> int:
    """
    The command line, ``python -m sac_plus.distributed`` (see :mod:`sac_plus.distributed.__main__`); returns the
    worker's exit status.
    """
    # imported here, not at the top: the command line imports this package
    from sac_plus.distributed.__main__ import main as command_line

    return command_line(argv)
