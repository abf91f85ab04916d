"""A replay buffer whose storage lives on the training device (an SB3 ``ReplayBuffer`` with the same API)."""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import BaseBuffer, ReplayBuffer
from stable_baselines3.common.preprocessing import get_action_dim, get_obs_shape
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.utils import get_device
from stable_baselines3.common.vec_env import VecNormalize

# Storage fields, in the order of SB3's ReplayBuffer
FIELDS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")
# rewards, dones and timeouts: one float32 each per transition, as in SB3
SCALAR_BYTES = 3 * 4


def storage_obs_dtype(observation_space: spaces.Space) -> np.dtype:
    """float32 for a Box of float64 observations (what the networks see anyway), the space's own dtype otherwise."""
    dtype = np.dtype(observation_space.dtype)
    if isinstance(observation_space, spaces.Box) and np.issubdtype(dtype, np.floating) and dtype.itemsize > 4:
        return np.dtype(np.float32)
    return dtype


def storage_action_dtype(action_space: spaces.Space) -> np.dtype:
    """As SB3's ``ReplayBuffer``: float64 actions are stored as float32, other dtypes as they are (Discrete: int64)."""
    dtype = np.dtype(action_space.dtype)
    return np.dtype(np.float32) if dtype == np.float64 else dtype


def bytes_per_transition(observation_space: spaces.Space, action_space: spaces.Space) -> int:
    """``2 * obs_size * obs_itemsize + action_dim * action_itemsize + 12`` (see :class:`DeviceReplayBuffer`)."""
    obs_size = int(np.prod(get_obs_shape(observation_space)))  # type: ignore[arg-type]
    obs_bytes = 2 * obs_size * storage_obs_dtype(observation_space).itemsize
    action_bytes = get_action_dim(action_space) * storage_action_dtype(action_space).itemsize
    return obs_bytes + action_bytes + SCALAR_BYTES


def available_memory(device: th.device) -> int | None:
    """
    Bytes that a new allocation on ``device`` can use, or ``None`` if unknown.

    CUDA: free memory reported by the driver plus what PyTorch's caching allocator holds but does not use.
    Other devices: the host's available memory (``psutil`` if installed, else ``MemAvailable`` of /proc/meminfo).
    """
    if device.type == "cuda":
        free, _total = th.cuda.mem_get_info(device)
        cached_unused = th.cuda.memory_reserved(device) - th.cuda.memory_allocated(device)
        return int(free + max(cached_unused, 0))
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    with contextlib.suppress(AttributeError, OSError, ValueError):
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return None


def _torch_dtype(dtype: np.dtype) -> th.dtype:
    return th.from_numpy(np.empty(0, dtype=dtype)).dtype


def _zeros(shape: tuple[int, ...], dtype: np.dtype, device: th.device) -> th.Tensor:
    if device.type == "cpu":
        # numpy's zeros maps fresh pages lazily, as SB3's buffer does: memory is committed as it is written
        return th.from_numpy(np.zeros(shape, dtype=dtype))
    return th.zeros(shape, dtype=_torch_dtype(dtype), device=device)


def _host_tensor(value: Any) -> th.Tensor:
    """A CPU tensor for ``value`` (a numpy array, list or scalar), sharing memory with it where possible."""
    array = np.ascontiguousarray(value)
    if not array.flags.writeable:
        array = array.copy()
    return th.from_numpy(array)


class DeviceReplayBuffer(ReplayBuffer):
    """
    SB3's ``ReplayBuffer`` with its storage in torch tensors on ``device`` (a GPU for the fast path): sampling
    draws the indices with torch on the device and gathers the batch there, with no host transfer and no host
    synchronisation. Select it with ``SACPlus(..., replay_buffer_class=DeviceReplayBuffer)``.

    Same constructor, ``add``/``extend``/``sample``/``size``/``reset`` and returned :class:`ReplayBufferSamples`
    as SB3's ``ReplayBuffer``; ``observations``, ``next_observations``, ``actions``, ``rewards``, ``dones`` and
    ``timeouts`` have SB3's shapes ``(buffer_size // n_envs, n_envs, ...)`` but are torch tensors. Differences:

    - Observations of a float ``Box`` wider than float32 (float64) are stored as float32, converted once in
      ``add`` (SB3 stores float64 and the policy converts the batch to float32 before the networks: the numbers
      the networks see are the same). Other observations keep their dtype (e.g. uint8 images). Actions as in SB3:
      float64 as float32, Discrete as int64 of shape ``[.., 1]``.
    - Indices come from torch's generator on the device (``th.randint``, seeded by SB3's ``set_random_seed``)
      rather than numpy's: same distribution (uniform over ``[0, size)``, a uniform env index per sample),
      different draws than SB3's buffer for the same seed.
    - ``sample(batch_size, env)`` with a ``VecNormalize`` ``env`` normalises on the CPU with numpy as SB3 does:
      that costs a device-to-host and a host-to-device copy of the batch per sample. The fast path is
      ``env=None`` (no VecNormalize). For float64 observations the normalisation then starts from the float32
      values, so it may differ from SB3's in the last float32 bit.
    - ``optimize_memory_usage=True`` is not supported (``ValueError``); Dict observation spaces are not either
      (``TypeError``: use SB3's ``DictReplayBuffer``).
    - Setting ``buffer.device`` moves the storage (``load_replay_buffer`` does this). The pickle
      (``save_replay_buffer``) holds CPU arrays, so it loads on a machine without the GPU it was saved from.

    **Memory**: ``buffer_size`` transitions (``n_envs * (buffer_size // n_envs)`` exactly) of

        ``bytes_per_transition = 2 * obs_size * obs_itemsize + action_dim * action_itemsize + 3 * 4``

    (observation and next observation; action; float32 reward, done and timeout), where ``obs_size`` is the
    number of elements of one observation and ``obs_itemsize`` the size of the stored dtype (4 for float32/64
    observations, 1 for uint8). For example HalfCheetah-v5 (17 float64 observations, 6 float32 actions):
    ``2 * 17 * 4 + 6 * 4 + 12 = 172`` bytes, 172 MB for 1M transitions (SB3's ``ReplayBuffer`` keeps the float64
    observations: 308 bytes, 308 MB). The constructor refuses with a ``ValueError`` when the total exceeds the
    memory available on the device (CUDA: ``torch.cuda.mem_get_info`` plus PyTorch's unused cache; CPU: the
    host's available memory). On the CPU the memory is committed lazily as transitions are written, as with
    SB3's numpy buffer; on a GPU it is allocated at construction.

    :param buffer_size: Max number of transitions in the buffer (over all envs)
    :param observation_space: Observation space
    :param action_space: Action space
    :param device: PyTorch device of the storage and of the sampled batches
    :param n_envs: Number of parallel environments
    :param optimize_memory_usage: must be False (not supported)
    :param handle_timeout_termination: treat a transition that ended by a time limit
        (``info["TimeLimit.truncated"]``) as not done, as SB3 does
    """

    observations: th.Tensor  # type: ignore[assignment]
    next_observations: th.Tensor  # type: ignore[assignment]
    actions: th.Tensor  # type: ignore[assignment]
    rewards: th.Tensor  # type: ignore[assignment]
    dones: th.Tensor  # type: ignore[assignment]
    timeouts: th.Tensor  # type: ignore[assignment]

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
    ):
        if isinstance(observation_space, spaces.Dict):
            raise TypeError(
                f"DeviceReplayBuffer does not support Dict observation spaces (got {observation_space}); "
                "use stable_baselines3.common.buffers.DictReplayBuffer (the default for Dict observations) instead"
            )
        if optimize_memory_usage:
            raise ValueError(
                "DeviceReplayBuffer does not support optimize_memory_usage=True; accepted: optimize_memory_usage=False "
                "(or SB3's ReplayBuffer, replay_buffer_class=None, for the memory-optimised variant)"
            )
        # BaseBuffer only records sizes, spaces and the device: SB3's numpy arrays are never allocated
        BaseBuffer.__init__(self, buffer_size, observation_space, action_space, device, n_envs=n_envs)
        self.buffer_size = max(buffer_size // n_envs, 1)
        self.optimize_memory_usage = False
        self.handle_timeout_termination = handle_timeout_termination
        self.obs_dtype = storage_obs_dtype(observation_space)
        self.action_dtype = storage_action_dtype(action_space)
        self.bytes_per_transition = bytes_per_transition(observation_space, action_space)
        self.nbytes = self.bytes_per_transition * self.buffer_size * self.n_envs
        self._check_fits(self.device)
        try:
            self._allocate()
        except th.cuda.OutOfMemoryError as error:
            raise self._does_not_fit(self.device, available_memory(self.device)) from error

    # -- memory ------------------------------------------------------------------------------------------------

    def _does_not_fit(self, device: th.device, available: int | None) -> ValueError:
        transitions = self.buffer_size * self.n_envs
        fits = "" if available is None else f" At most buffer_size={available // self.bytes_per_transition} fits."
        return ValueError(
            f"DeviceReplayBuffer(buffer_size={transitions}, n_envs={self.n_envs}) needs {self.nbytes} bytes "
            f"({self.nbytes / 1e9:.2f} GB: {self.bytes_per_transition} bytes per transition x {transitions} transitions) "
            f"on {device}, but only {available} bytes"
            + ("" if available is None else f" ({available / 1e9:.2f} GB)")
            + f" are available there.{fits} Accepted: a smaller buffer_size"
            + (", or device='cpu' (the buffer in host memory)." if device.type != "cpu" else ".")
        )

    def _check_fits(self, device: th.device) -> None:
        available = available_memory(device)
        if available is not None and self.nbytes > available:
            raise self._does_not_fit(device, available)

    def _allocate(self) -> None:
        shape = (self.buffer_size, self.n_envs)
        device = self.device
        self.observations = _zeros((*shape, *self.obs_shape), self.obs_dtype, device)
        self.next_observations = _zeros((*shape, *self.obs_shape), self.obs_dtype, device)
        self.actions = _zeros((*shape, self.action_dim), self.action_dtype, device)
        self.rewards = _zeros(shape, np.dtype(np.float32), device)
        self.dones = _zeros(shape, np.dtype(np.float32), device)
        self.timeouts = _zeros(shape, np.dtype(np.float32), device)

    # -- device and pickling -----------------------------------------------------------------------------------

    @property
    def device(self) -> th.device:
        return self._device

    @device.setter
    def device(self, device: th.device | str) -> None:
        """Set the device; the storage moves there (SB3's ``load_replay_buffer`` sets the model's device)."""
        device = get_device(device)
        # th.device("cuda") is the current CUDA device, which tensors name with its index ("cuda:0")
        if "observations" in self.__dict__ and self.observations.device != th.empty(0, device=device).device:
            self._check_fits(device)
            for name in FIELDS:
                setattr(self, name, getattr(self, name).to(device))
        self._device = device

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the storage as CPU numpy arrays (loads without the saving machine's GPU)."""
        state = self.__dict__.copy()
        for name in FIELDS:
            state[name] = state[name].cpu().numpy()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        saved_device = state["_device"]
        device = get_device(saved_device)
        if device != saved_device:
            warnings.warn(
                f"DeviceReplayBuffer was saved on {saved_device}, which is not available here: loaded on {device}",
                stacklevel=2,
            )
        state["_device"] = device
        for name in FIELDS:
            state[name] = th.from_numpy(state[name]).to(device)
        self.__dict__.update(state)

    # -- filling and sampling ----------------------------------------------------------------------------------

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """Store one step of the ``n_envs`` environments (numpy arrays, as SB3's ``add``): one copy per field."""
        if isinstance(self.observation_space, spaces.Discrete):
            obs = np.asarray(obs).reshape((self.n_envs, *self.obs_shape))
            next_obs = np.asarray(next_obs).reshape((self.n_envs, *self.obs_shape))
        action = np.asarray(action).reshape((self.n_envs, self.action_dim))
        pos = self.pos
        self._write(self.observations[pos], obs)
        self._write(self.next_observations[pos], next_obs)
        self._write(self.actions[pos], action)
        self._write(self.rewards[pos], reward)
        self._write(self.dones[pos], done)
        if self.handle_timeout_termination:
            self._write(self.timeouts[pos], [info.get("TimeLimit.truncated", False) for info in infos])
        self.pos += 1
        if self.pos == self.buffer_size:
            self.full = True
            self.pos = 0

    @staticmethod
    def _write(destination: th.Tensor, value: Any) -> None:
        """Convert on the host to the stored dtype (same rounding as numpy's), then one copy to the device."""
        source = _host_tensor(value)
        if source.dtype != destination.dtype:
            source = source.to(destination.dtype)
        destination.copy_(source)

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> ReplayBufferSamples:
        """
        Sample ``batch_size`` transitions uniformly (with replacement) from the filled part, indices drawn on the
        device. ``env``: a ``VecNormalize`` to normalise observations and rewards with (on the CPU, see above).
        """
        upper_bound = self.buffer_size if self.full else self.pos
        if upper_bound == 0:
            raise ValueError("cannot sample from an empty DeviceReplayBuffer: add transitions first")
        batch_inds = th.randint(0, upper_bound, (batch_size,), device=self.device)
        return self._get_samples(batch_inds, env=env)

    def _get_samples(
        self,
        batch_inds: np.ndarray | th.Tensor,
        env: VecNormalize | None = None,
        env_indices: np.ndarray | th.Tensor | None = None,
    ) -> ReplayBufferSamples:
        """
        The transitions at ``(batch_inds[i], env_indices[i])``, as SB3's ``ReplayBuffer._get_samples`` returns
        them. ``env_indices``: uniform random env indices (drawn on the device) when ``None``.
        """
        batch_inds = th.as_tensor(batch_inds, dtype=th.long, device=self.device)
        if env_indices is not None:
            flat = batch_inds * self.n_envs + th.as_tensor(env_indices, dtype=th.long, device=self.device)
        elif self.n_envs == 1:
            flat = batch_inds
        else:
            flat = batch_inds * self.n_envs + th.randint(0, self.n_envs, batch_inds.shape, device=self.device)

        def gather(storage: th.Tensor) -> th.Tensor:
            # storage is contiguous: (buffer_size, n_envs, ...) -> (buffer_size * n_envs, ...) is a view
            return storage.reshape(-1, *storage.shape[2:]).index_select(0, flat)

        observations = gather(self.observations)
        next_observations = gather(self.next_observations)
        # Only use dones that are not due to timeouts (timeouts stay 0 without handle_timeout_termination)
        dones = (gather(self.dones) * (1 - gather(self.timeouts))).reshape(-1, 1)
        rewards = gather(self.rewards).reshape(-1, 1)
        if env is not None:
            observations = self._to_device(self._normalize_obs(observations.cpu().numpy(), env))
            next_observations = self._to_device(self._normalize_obs(next_observations.cpu().numpy(), env))
            rewards = self._to_device(self._normalize_reward(rewards.cpu().numpy(), env))
        return ReplayBufferSamples(observations, gather(self.actions), next_observations, dones, rewards)

    def _to_device(self, array: Any) -> th.Tensor:
        return _host_tensor(array).to(self.device)
