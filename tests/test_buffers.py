"""DeviceReplayBuffer: the same samples as SB3's ReplayBuffer, training with it, pickling, memory checks."""

from __future__ import annotations

import math
import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.vec_env import VecNormalize

from sac_plus import SACPlus
from sac_plus.buffers import FIELDS, DeviceReplayBuffer, bytes_per_transition

TRAIN_KEYS = ("train/critic_loss", "train/actor_loss", "train/ent_coef", "train/entropy", "train/q_mean")

SPACES = {
    "box_f32": (spaces.Box(-2.0, 2.0, (3,), np.float32), spaces.Box(-1.0, 1.0, (2,), np.float32)),
    "box_f64": (spaces.Box(-2.0, 2.0, (3,), np.float64), spaces.Box(-1.0, 1.0, (2,), np.float64)),
    "discrete_action": (spaces.Box(-2.0, 2.0, (4,), np.float32), spaces.Discrete(3)),
    "discrete_obs": (spaces.Discrete(5), spaces.Box(-1.0, 1.0, (1,), np.float32)),
    "image_uint8": (spaces.Box(0, 255, (3, 8, 8), np.uint8), spaces.Discrete(4)),
}


def _random_step(rng: np.random.Generator, observation_space: spaces.Space, action_space: spaces.Space, n_envs: int):
    """One VecEnv step of random data, as OffPolicyAlgorithm._store_transition hands it to ``add``."""

    def observation() -> np.ndarray:
        if isinstance(observation_space, spaces.Discrete):
            return rng.integers(0, observation_space.n, size=(n_envs,))
        if observation_space.dtype == np.uint8:
            return rng.integers(0, 256, size=(n_envs, *observation_space.shape), dtype=np.uint8)
        return rng.normal(size=(n_envs, *observation_space.shape)).astype(observation_space.dtype)

    if isinstance(action_space, spaces.Discrete):
        action = rng.integers(0, action_space.n, size=(n_envs,))
    else:
        action = rng.uniform(-1.0, 1.0, size=(n_envs, *action_space.shape)).astype(action_space.dtype)
    reward = rng.normal(size=n_envs)  # float64 from a VecEnv, stored as float32
    done = rng.random(n_envs) < 0.3
    infos = [{"TimeLimit.truncated": bool(d and rng.random() < 0.5)} for d in done]
    return observation(), observation(), action, reward, done, infos


def _filled_pair(name: str, n_envs: int, steps: int, handle_timeout_termination: bool = True, buffer_size: int = 40):
    observation_space, action_space = SPACES[name]
    kwargs = dict(device="cpu", n_envs=n_envs, handle_timeout_termination=handle_timeout_termination)
    sb3 = ReplayBuffer(buffer_size, observation_space, action_space, **kwargs)
    ours = DeviceReplayBuffer(buffer_size, observation_space, action_space, **kwargs)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        step = _random_step(rng, observation_space, action_space, n_envs)
        sb3.add(*step)
        ours.add(*step)
    return sb3, ours


def _as_network_input(tensor: th.Tensor, observation_space: spaces.Space) -> th.Tensor:
    """What the policy makes of a batch of observations before its networks (SB3's preprocess_obs)."""
    return preprocess_obs(tensor, observation_space, normalize_images=True)


def _assert_same_samples(sb3_data, our_data, observation_space: spaces.Space) -> None:
    for field in ("actions", "dones", "rewards"):
        expected, got = getattr(sb3_data, field), getattr(our_data, field)
        assert got.dtype == expected.dtype and got.shape == expected.shape, field
        assert th.equal(got, expected), field
    for field in ("observations", "next_observations"):
        expected, got = getattr(sb3_data, field), getattr(our_data, field)
        assert got.shape == expected.shape, field
        if observation_space.dtype == np.float64:
            assert got.dtype == th.float32, field  # stored as float32: what the networks see anyway
        else:
            assert got.dtype == expected.dtype, field
        # bit-identical network inputs
        assert th.equal(_as_network_input(got, observation_space), _as_network_input(expected, observation_space)), field
    assert our_data.discounts is None and sb3_data.discounts is None


# ----------------------------------------------------------------------------------------------------------------
# same content and samples as SB3's ReplayBuffer


@pytest.mark.parametrize("name", list(SPACES))
@pytest.mark.parametrize(("n_envs", "steps"), [(1, 25), (3, 35)])  # 3 envs: buffer_size 13, wraps around
@pytest.mark.parametrize("handle_timeout_termination", [True, False])
def test_same_samples_as_sb3_replay_buffer(name, n_envs, steps, handle_timeout_termination):
    sb3, ours = _filled_pair(name, n_envs, steps, handle_timeout_termination)
    observation_space = SPACES[name][0]
    assert (ours.buffer_size, ours.pos, ours.full, ours.size()) == (sb3.buffer_size, sb3.pos, sb3.full, sb3.size())
    assert ours.obs_shape == sb3.obs_shape and ours.action_dim == sb3.action_dim
    assert ours.handle_timeout_termination == sb3.handle_timeout_termination and ours.optimize_memory_usage is False
    for field in FIELDS:
        stored, expected = getattr(ours, field), getattr(sb3, field)
        assert tuple(stored.shape) == expected.shape, field
        np.testing.assert_array_equal(stored.numpy(), expected.astype(stored.numpy().dtype), err_msg=field)
    if handle_timeout_termination:
        assert ours.timeouts.sum() > 0  # the comparison covers transitions that were cut by a time limit

    batch_size = 64
    for seed in range(3):
        np.random.seed(seed)
        batch_inds = np.random.randint(0, sb3.size(), size=batch_size)
        state = np.random.get_state()
        env_indices = np.random.randint(0, high=n_envs, size=(batch_size,))  # what SB3's _get_samples draws next
        np.random.set_state(state)
        expected = sb3._get_samples(batch_inds)
        _assert_same_samples(expected, ours._get_samples(batch_inds, env_indices=env_indices), observation_space)
        # the same with the indices as tensors
        got = ours._get_samples(th.as_tensor(batch_inds), env_indices=th.as_tensor(env_indices))
        _assert_same_samples(expected, got, observation_space)


def test_same_samples_with_vec_normalize():
    venv = VecNormalize(make_vec_env("Pendulum-v1", n_envs=2, seed=0), gamma=0.99)
    venv.reset()
    for _ in range(30):  # statistics that are not the identity
        venv.step(np.array([venv.action_space.sample() for _ in range(2)]))
    observation_space, action_space = venv.observation_space, venv.action_space
    sb3 = ReplayBuffer(20, observation_space, action_space, device="cpu", n_envs=2)
    ours = DeviceReplayBuffer(20, observation_space, action_space, device="cpu", n_envs=2)
    rng = np.random.default_rng(1)
    for _ in range(10):
        obs = rng.normal(size=(2, 3)).astype(np.float32)
        step = (obs, obs + 1, rng.uniform(-2, 2, (2, 1)).astype(np.float32), rng.normal(size=2), np.zeros(2, bool), [{}, {}])
        sb3.add(*step)
        ours.add(*step)
    batch_inds = np.arange(10).repeat(2)
    np.random.seed(0)
    state = np.random.get_state()
    env_indices = np.random.randint(0, high=2, size=(20,))  # what SB3's _get_samples draws
    np.random.set_state(state)
    expected = sb3._get_samples(batch_inds, env=venv)
    got = ours._get_samples(batch_inds, env=venv, env_indices=env_indices)
    _assert_same_samples(expected, got, observation_space)
    # normalised: not the stored values
    raw = ours._get_samples(batch_inds, env_indices=env_indices)
    assert not th.equal(got.observations, raw.observations) and not th.equal(got.rewards, raw.rewards)
    venv.close()


# ----------------------------------------------------------------------------------------------------------------
# sampling with torch


@pytest.mark.parametrize("n_envs", [1, 3])
def test_sample_draws_from_the_filled_part_and_every_env(n_envs):
    space = spaces.Box(-1e6, 1e6, (1,), np.float32)
    buffer = DeviceReplayBuffer(30, space, spaces.Box(-1, 1, (1,), np.float32), device="cpu", n_envs=n_envs)
    with pytest.raises(ValueError, match="empty"):
        buffer.sample(4)
    for t in range(7):  # observation = 10 * step + env
        obs = (10 * t + np.arange(n_envs, dtype=np.float32)).reshape(n_envs, 1)
        buffer.add(obs, obs, np.zeros((n_envs, 1)), np.zeros(n_envs), np.zeros(n_envs, bool), [{}] * n_envs)
    th.manual_seed(0)
    data = buffer.sample(2000)
    assert data.observations.shape == (2000, 1) and data.actions.shape == (2000, 1)
    assert data.rewards.shape == data.dones.shape == (2000, 1)
    values = data.observations.flatten().long()
    steps, envs = values // 10, values % 10
    assert set(steps.tolist()) == set(range(7))  # uniform over [0, size): every filled step drawn, no other
    assert set(envs.tolist()) == set(range(n_envs))
    # reproducible with torch's seed
    th.manual_seed(0)
    assert th.equal(buffer.sample(2000).observations, data.observations)


def test_sample_after_wrapping_uses_the_whole_buffer():
    space = spaces.Box(-1e6, 1e6, (1,), np.float32)
    buffer = DeviceReplayBuffer(5, space, spaces.Discrete(2), device="cpu")
    for t in range(8):
        obs = np.full((1, 1), t, np.float32)
        buffer.add(obs, obs, np.array([1]), np.zeros(1), np.zeros(1, bool), [{}])
    assert buffer.full and buffer.pos == 3 and buffer.size() == 5
    data = buffer.sample(500)
    assert set(data.observations.flatten().long().tolist()) == {3, 4, 5, 6, 7}
    assert data.actions.dtype == th.int64 and data.actions.shape == (500, 1)


# ----------------------------------------------------------------------------------------------------------------
# training with SACPlus


class TorchIndexedReplayBuffer(ReplayBuffer):
    """SB3's ReplayBuffer drawing its indices as DeviceReplayBuffer does (torch's generator), for a comparison."""

    def sample(self, batch_size, env=None):
        upper_bound = self.buffer_size if self.full else self.pos
        batch_inds = th.randint(0, upper_bound, (batch_size,), device=self.device).numpy()
        return self._get_samples(batch_inds, env=env)


class Float64ObsEnv(gym.Env):
    """Observations in float64 (as MuJoCo's), a Box action, a short episode that ends by a time limit."""

    def __init__(self):
        super().__init__()
        self.observation_space = spaces.Box(-np.inf, np.inf, (3,), np.float64)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self.np_random.normal(size=3), {}

    def step(self, action):
        self._t += 1
        obs = self.np_random.normal(size=3) / 3.0  # float64 values that float32 cannot hold exactly
        return obs, -float(np.sum(np.square(action))) + obs[0], self._t % 17 == 0, self._t >= 25, {}


def _params(model: SACPlus) -> list[th.Tensor]:
    tensors = [p.detach().clone() for p in model.policy.parameters()]
    if model.log_ent_coef is not None:
        tensors.append(model.log_ent_coef.detach().clone())
    return tensors


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1", "float64_obs"])
def test_training_gives_the_same_parameters_as_the_default_buffer_for_the_same_indices(fast_kwargs, env_id):
    """With the same indices, the device buffer's batches are those of SB3's: training is bit-identical."""
    models = {}
    for buffer_class in (TorchIndexedReplayBuffer, DeviceReplayBuffer):
        env = Float64ObsEnv() if env_id == "float64_obs" else env_id
        model = SACPlus("MlpPolicy", env, replay_buffer_class=buffer_class, **fast_kwargs())
        model.learn(200)
        assert type(model.replay_buffer) is buffer_class
        models[buffer_class] = model
    sb3, ours = models[TorchIndexedReplayBuffer], models[DeviceReplayBuffer]
    assert ours._n_updates == sb3._n_updates == 150
    for expected, got in zip(_params(sb3), _params(ours), strict=True):
        assert th.equal(expected, got)
    for key in TRAIN_KEYS:
        assert ours.logger.name_to_value[key] == sb3.logger.name_to_value[key], key


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1"])
def test_sacplus_trains_with_the_device_buffer(fast_kwargs, env_id):
    model = SACPlus(
        "MlpPolicy", make_vec_env(env_id, n_envs=2, seed=0), replay_buffer_class=DeviceReplayBuffer, **fast_kwargs()
    )
    model.learn(300)
    assert isinstance(model.replay_buffer, DeviceReplayBuffer) and model.replay_buffer.n_envs == 2
    assert model._n_updates > 100
    for key in TRAIN_KEYS:
        assert math.isfinite(model.logger.name_to_value[key]), key
    for param in model.policy.parameters():
        assert th.isfinite(param).all()


# ----------------------------------------------------------------------------------------------------------------
# pickling: save_replay_buffer / load_replay_buffer


def test_save_and_load_replay_buffer_round_trip(fast_kwargs, tmp_path):
    model = SACPlus("MlpPolicy", "Pendulum-v1", replay_buffer_class=DeviceReplayBuffer, **fast_kwargs(buffer_size=150))
    model.learn(200)  # wraps around
    saved = model.replay_buffer
    path = tmp_path / "buffer.pkl"
    model.save_replay_buffer(path)

    other = SACPlus("MlpPolicy", "Pendulum-v1", replay_buffer_class=DeviceReplayBuffer, **fast_kwargs(buffer_size=150))
    other.load_replay_buffer(path)
    loaded = other.replay_buffer
    assert isinstance(loaded, DeviceReplayBuffer) and loaded is not saved
    assert (loaded.pos, loaded.full, loaded.buffer_size, loaded.n_envs) == (saved.pos, saved.full, 150, 1)
    assert loaded.device == other.device
    for field in FIELDS:
        assert th.equal(getattr(loaded, field), getattr(saved, field)), field
        assert getattr(loaded, field).device == loaded.device
    th.manual_seed(3)
    expected = saved.sample(16)
    th.manual_seed(3)
    got = loaded.sample(16)
    for field in ("observations", "actions", "next_observations", "dones", "rewards"):
        assert th.equal(getattr(got, field), getattr(expected, field)), field
    # the loaded buffer is independent storage and training goes on with it
    other.learn(20, reset_num_timesteps=False)
    assert loaded.pos != saved.pos or not th.equal(loaded.observations, saved.observations)


def test_pickle_holds_cpu_arrays_and_falls_back_to_the_cpu(tmp_path):
    buffer = DeviceReplayBuffer(10, *SPACES["box_f32"], device="cpu")
    step = _random_step(np.random.default_rng(0), *SPACES["box_f32"], 1)
    buffer.add(*step)
    state = buffer.__getstate__()
    assert all(isinstance(state[field], np.ndarray) for field in FIELDS)
    if th.cuda.is_available():
        return
    # a buffer saved on a GPU loads on a machine without one, on the CPU, with a warning
    buffer._device = th.device("cuda", 0)
    with pytest.warns(UserWarning, match="not available here"):
        loaded = pickle.loads(pickle.dumps(buffer))
    assert loaded.device == th.device("cpu") and loaded.observations.device == th.device("cpu")
    assert th.equal(loaded.observations, buffer.observations)


def test_setting_the_device_keeps_the_storage_there():
    buffer = DeviceReplayBuffer(10, *SPACES["discrete_action"], device="cpu")
    buffer.add(*_random_step(np.random.default_rng(0), *SPACES["discrete_action"], 1))
    before = buffer.observations.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        buffer.device = "cpu"
    assert buffer.device == th.device("cpu") and th.equal(buffer.observations, before)


# ----------------------------------------------------------------------------------------------------------------
# memory, unsupported options


def test_docstring_memory_formula_matches_the_allocated_tensors():
    for observation_space, action_space in SPACES.values():
        buffer = DeviceReplayBuffer(12, observation_space, action_space, device="cpu", n_envs=2)
        allocated = sum(getattr(buffer, field).nbytes for field in FIELDS)
        assert allocated == buffer.nbytes == 12 * bytes_per_transition(observation_space, action_space)
    # the docstring's example: HalfCheetah-v5's spaces
    half_cheetah = (spaces.Box(-np.inf, np.inf, (17,), np.float64), spaces.Box(-1.0, 1.0, (6,), np.float32))
    assert bytes_per_transition(*half_cheetah) == 172
    assert "2 * 17 * 4 + 6 * 4 + 12 = 172" in DeviceReplayBuffer.__doc__


def test_refuses_a_buffer_that_does_not_fit():
    with pytest.raises(ValueError, match="are available there") as error:
        DeviceReplayBuffer(10**13, *SPACES["box_f32"], device="cpu")
    message = str(error.value)
    needed = 10**13 * bytes_per_transition(*SPACES["box_f32"])
    assert "buffer_size=10000000000000" in message and f"needs {needed} bytes" in message
    assert "bytes per transition" in message and "available" in message and "At most buffer_size=" in message


def test_refuses_a_buffer_that_does_not_fit_from_sacplus(fast_kwargs):
    with pytest.raises(ValueError, match="buffer_size=10000000000000"):
        SACPlus("MlpPolicy", "Pendulum-v1", replay_buffer_class=DeviceReplayBuffer, **fast_kwargs(buffer_size=10**13))


def test_optimize_memory_usage_is_refused(fast_kwargs):
    with pytest.raises(ValueError, match="optimize_memory_usage=True"):
        DeviceReplayBuffer(10, *SPACES["box_f32"], device="cpu", optimize_memory_usage=True, handle_timeout_termination=False)
    with pytest.raises(ValueError, match="optimize_memory_usage"):
        SACPlus(
            "MlpPolicy",
            "Pendulum-v1",
            replay_buffer_class=DeviceReplayBuffer,
            optimize_memory_usage=True,
            replay_buffer_kwargs=dict(handle_timeout_termination=False),
            **fast_kwargs(),
        )


def test_dict_observations_are_refused():
    observation_space = spaces.Dict({"a": spaces.Box(-1, 1, (2,), np.float32)})
    with pytest.raises(TypeError, match="DictReplayBuffer"):
        DeviceReplayBuffer(10, observation_space, spaces.Discrete(2), device="cpu")
