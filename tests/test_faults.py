"""Faults and bad input: resuming, atomic saves, bad checkpoint files, non-finite data, divergence, bad keywords."""

from __future__ import annotations

import os
import pathlib
import struct
import zipfile

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from nested import assert_nested_equal
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, VecCheckNan

from sac_plus import SACPlus
from sac_plus.monitor import DIVERGENCE_CHECK_INTERVAL
from sac_plus.sac import DivergenceError

BOX = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
DISCRETE = spaces.Discrete(3)


def all_parameters(model: SACPlus) -> dict[str, th.Tensor]:
    tensors = dict(model.policy.state_dict())
    if model.log_ent_coef is not None:
        tensors["log_ent_coef"] = model.log_ent_coef
    return tensors


# ---------------------------------------------------------------------------------------------------- resuming


@pytest.mark.parametrize("action_space", [BOX, DISCRETE], ids=["box", "discrete"])
def test_resume_restores_every_piece_and_continues_identically(tmp_path, space_env, fast_kwargs, action_space):
    def make_env():
        return DummyVecEnv([lambda: space_env(action_space)])

    # target_update_interval=2 and train_freq=2: the counters' phase matters for what follows
    kwargs = fast_kwargs(learning_starts=30, target_update_interval=2, train_freq=2, gradient_steps=3)
    original = SACPlus("MlpPolicy", make_env(), **kwargs).learn(90)
    assert original._n_updates > 0
    original.save(tmp_path / "model.zip")
    original.save_replay_buffer(tmp_path / "buffer.pkl")

    loaded = SACPlus.load(tmp_path / "model.zip", env=make_env(), device="cpu")
    loaded.load_replay_buffer(tmp_path / "buffer.pkl")

    # each piece, exactly
    assert loaded.num_timesteps == original.num_timesteps == 90
    assert loaded._n_updates == original._n_updates
    assert loaded._episode_num == original._episode_num
    assert loaded.target_entropy == original.target_entropy
    assert th.equal(loaded.log_ent_coef, original.log_ent_coef)
    assert_nested_equal(loaded.critic_target.state_dict(), original.critic_target.state_dict(), "critic_target")
    assert_nested_equal(loaded.policy.state_dict(), original.policy.state_dict(), "policy")
    for name in ("actor.optimizer", "critic.optimizer", "ent_coef_optimizer"):
        loaded_state = loaded.get_parameters()[name]
        original_state = original.get_parameters()[name]
        assert loaded_state["state"], f"{name} has no state: the test would not check the moments"
        assert_nested_equal(loaded_state, original_state, name)
    # the temperature optimizer still steps the loaded log_ent_coef (not a stale copy)
    assert loaded.ent_coef_optimizer.param_groups[0]["params"][0] is loaded.log_ent_coef
    assert loaded.replay_buffer.pos == original.replay_buffer.pos
    assert loaded.replay_buffer.full == original.replay_buffer.full
    for field in ("observations", "actions", "rewards", "next_observations", "dones", "timeouts"):
        np.testing.assert_array_equal(getattr(loaded.replay_buffer, field), getattr(original.replay_buffer, field))

    # continued training from the loaded model equals continued training from the original
    original.set_env(make_env())  # a fresh env in the same state for both (the loaded model was given one)
    for model in (original, loaded):
        model.set_random_seed(7)
        model.learn(50, reset_num_timesteps=False)
    assert loaded.num_timesteps == original.num_timesteps == 140
    assert loaded._n_updates == original._n_updates
    assert_nested_equal(all_parameters(loaded), all_parameters(original), "after continued training")
    assert_nested_equal(loaded.critic.optimizer.state_dict(), original.critic.optimizer.state_dict(), "critic.optimizer after")


def test_resume_without_replay_buffer_keeps_counters_but_restarts_the_buffer(tmp_path, space_env, fast_kwargs):
    model = SACPlus("MlpPolicy", space_env(BOX), **fast_kwargs(learning_starts=30)).learn(60)
    model.save(tmp_path / "model")  # SB3's rule: ".zip" is appended
    loaded = SACPlus.load(tmp_path / "model", env=space_env(BOX))
    assert (loaded.num_timesteps, loaded._n_updates) == (model.num_timesteps, model._n_updates)
    assert loaded.replay_buffer.size() == 0
    loaded.learn(10, reset_num_timesteps=False)
    assert loaded.num_timesteps == 70


# ---------------------------------------------------------------------------------------------------- atomic save


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("simulated failure while writing the zip (e.g. disk full)")


class FailingSaveSACPlus(SACPlus):
    """Writes SB3's zip as SACPlus does, but with ``fail_save`` set, serialising a PyTorch variable fails midway."""

    fail_save = False

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "unpicklable"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, variables = super()._get_torch_save_params()
        if self.fail_save:
            # the "data" entry is already in the zip when this variable is serialised
            self.unpicklable = Unpicklable()
            return state_dicts, [*variables, "unpicklable"]
        return state_dicts, variables


def test_failed_save_leaves_the_previous_zip_intact(tmp_path, space_env, fast_kwargs):
    model = FailingSaveSACPlus("MlpPolicy", space_env(BOX), **fast_kwargs(learning_starts=20)).learn(40)
    path = tmp_path / "model.zip"
    model.save(path)
    good_bytes = path.read_bytes()
    obs = np.stack([model.observation_space.sample() for _ in range(8)])
    actions = model.predict(obs, deterministic=True)[0]

    model.learn(30, reset_num_timesteps=False)  # the weights change, so a new complete zip would differ
    model.fail_save = True
    with pytest.raises(RuntimeError, match="simulated failure"):
        model.save(path)

    assert path.read_bytes() == good_bytes
    assert sorted(os.listdir(tmp_path)) == ["model.zip"], "a temporary file was left behind"
    loaded = SACPlus.load(path)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], actions)

    # the scenario is a real one: SB3's own (non-atomic) save leaves a broken file behind
    plain = tmp_path / "plain.zip"
    plain.write_bytes(good_bytes)
    with pytest.raises(RuntimeError, match="simulated failure"):
        BaseAlgorithm.save(model, plain)
    with pytest.raises(ValueError, match=r"plain\.zip"):
        SACPlus.load(plain)


def test_failed_replay_buffer_save_leaves_the_previous_file_intact(tmp_path, space_env, fast_kwargs):
    model = SACPlus("MlpPolicy", space_env(BOX), **fast_kwargs(learning_starts=20)).learn(30)
    path = tmp_path / "buffer.pkl"
    model.save_replay_buffer(path)
    good_bytes = path.read_bytes()
    model.replay_buffer.unpicklable = Unpicklable()
    with pytest.raises(RuntimeError, match="simulated failure"):
        model.save_replay_buffer(path)
    assert path.read_bytes() == good_bytes
    assert sorted(os.listdir(tmp_path)) == ["buffer.pkl"]


# ---------------------------------------------------------------------------------------------------- bad files


@pytest.fixture
def saved_model(tmp_path, space_env, fast_kwargs) -> pathlib.Path:
    """A small SACPlus zip (Box actions, 3-dim observations), saved after some training."""
    path = tmp_path / "saved" / "model.zip"
    SACPlus("MlpPolicy", space_env(BOX), **fast_kwargs(learning_starts=20)).learn(30).save(path)
    return path


def member_data_offset(path: pathlib.Path, member: str) -> tuple[int, int]:
    """Offset and size of a member's (stored) bytes inside the zip."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    raw = path.read_bytes()
    name_length, extra_length = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
    return info.header_offset + 30 + name_length + extra_length, info.compress_size


def test_corrupted_member_names_the_file_and_the_member(tmp_path, saved_model):
    offset, size = member_data_offset(saved_model, "policy.pth")
    raw = bytearray(saved_model.read_bytes())
    raw[offset + size // 2] ^= 0xFF
    path = tmp_path / "corrupted.zip"
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"corrupted\.zip is corrupted: its member 'policy\.pth' fails its CRC check"):
        SACPlus.load(path)


@pytest.mark.parametrize("keep", [0.5, 0.97], ids=["half", "all-but-the-end"])
def test_truncated_zip_names_the_file(tmp_path, saved_model, keep):
    raw = saved_model.read_bytes()
    path = tmp_path / "truncated.zip"
    path.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(ValueError, match=r"truncated\.zip is not a model file: it is not a valid zip archive.*truncated"):
        SACPlus.load(path)


def test_non_zip_file_names_the_file(tmp_path):
    path = tmp_path / "notes.zip"
    path.write_text("these are not the weights you are looking for\n")
    with pytest.raises(ValueError, match=r"notes\.zip is not a model file"):
        SACPlus.load(path)


def test_zip_that_is_not_a_model_names_the_file_and_its_members(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(
        ValueError, match=r"other\.zip is a zip file but not a saved SB3/SACPlus model: it has no 'data'.*readme"
    ):
        SACPlus.load(path)


def test_missing_file_names_both_candidates(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing.*nothing\.zip"):
        SACPlus.load(tmp_path / "nothing")


@pytest.mark.parametrize(
    ("algorithm", "env_id", "policy_name"),
    [(DQN, "CartPole-v1", "DQNPolicy"), (PPO, "Pendulum-v1", "ActorCriticPolicy")],
    ids=["dqn", "ppo"],
)
def test_zip_of_another_algorithm_names_the_file_and_the_policy_class(tmp_path, algorithm, env_id, policy_name):
    path = tmp_path / f"{algorithm.__name__.lower()}.zip"
    algorithm("MlpPolicy", env_id, policy_kwargs=dict(net_arch=[8]), device="cpu").save(path)
    with pytest.raises(ValueError, match=rf"{path.name} was not saved by SACPlus: its policy class is .*{policy_name}"):
        SACPlus.load(path)
    with pytest.raises(ValueError, match=rf"{path.name} was not saved by stable_baselines3\.SAC"):
        SACPlus.load_from_sb3(path)


@pytest.mark.parametrize(
    ("env_factory", "what"),
    [
        (lambda: gym.make("CartPole-v1"), "observation"),  # observation (and action) space differ
        (lambda: gym.make("Pendulum-v1"), "observation"),  # Box(3) but other bounds
        (lambda: gym.wrappers.RescaleAction(gym.make("MountainCarContinuous-v0"), -1.0, 1.0), "observation"),
    ],
    ids=["cartpole", "pendulum", "mountaincar"],
)
@pytest.mark.filterwarnings("ignore:.*precision lowered by casting")
def test_observation_space_mismatch_names_the_file_and_both_spaces(saved_model, env_factory, what):
    with pytest.raises(ValueError, match=rf"Cannot load .*model\.zip with this env: the {what} spaces do not match") as info:
        SACPlus.load(saved_model, env=env_factory())
    message = str(info.value)
    assert "Box(-1.0, 1.0, (3,), float32)" in message  # the saved one
    assert "env has observation_space=" in message


def test_action_space_mismatch_names_the_file_and_both_spaces(saved_model, space_env):
    with pytest.raises(ValueError, match=r"model\.zip with this env: the action spaces do not match") as info:
        SACPlus.load(saved_model, env=space_env(spaces.Box(-2.0, 2.0, shape=(2,), dtype=np.float32)))
    assert "action_space=Box(-1.0, 1.0, (2,), float32)" in str(info.value)
    assert "action_space=Box(-2.0, 2.0, (2,), float32)" in str(info.value)
    with pytest.raises(ValueError, match="action spaces do not match"):
        SACPlus.load(saved_model, env=space_env(DISCRETE))


def test_intact_file_and_open_file_load(saved_model, space_env):
    """The checks do not reject good input: a path, a path without suffix, and an open file."""
    assert SACPlus.load(saved_model, env=space_env(BOX)).num_timesteps == 30
    assert SACPlus.load(str(saved_model)[: -len(".zip")]).num_timesteps == 30
    with open(saved_model, "rb") as file:
        assert SACPlus.load(file).num_timesteps == 30


# ---------------------------------------------------------------------------------------------------- non-finite env data


class NonFiniteEnv(gym.Env):
    """Returns NaN in the observation or the reward at step ``at``."""

    def __init__(self, where: str, at: int = 15, action_space: spaces.Space = BOX):
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
        self.action_space = action_space
        self.where, self.at, self._t = where, at, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return np.zeros(3, dtype=np.float32), {}

    def step(self, action):
        self._t += 1
        obs = np.zeros(3, dtype=np.float32)
        reward = 0.0
        if self._t == self.at:
            if self.where == "observation":
                obs[1] = np.nan
            else:
                reward = np.inf
        return obs, reward, False, self._t >= 30, {}


@pytest.mark.parametrize(("where", "bad"), [("observation", "nan"), ("reward", "inf")])
def test_vec_check_nan_stops_non_finite_env_data_with_a_clear_error(fast_kwargs, where, bad):
    env = VecCheckNan(DummyVecEnv([lambda: NonFiniteEnv(where)]), raise_exception=True)
    model = SACPlus("MlpPolicy", env, **fast_kwargs(learning_starts=5))
    with pytest.raises(ValueError, match=rf"found {bad} in {where}s"):
        model.learn(40)
    assert model.num_timesteps == 14  # stopped at the bad step, before storing it


@pytest.mark.parametrize("action_space", [BOX, DISCRETE], ids=["box", "discrete"])
@pytest.mark.parametrize("where", ["observation", "reward"])
def test_non_finite_env_data_without_vec_check_nan_is_named_at_its_step(fast_kwargs, where, action_space):
    """Without VecCheckNan, a NaN from the env is named at the step it comes (not later as a divergence)."""
    envs = [lambda: NonFiniteEnv(where, 100, action_space), lambda: NonFiniteEnv(where, 3, action_space)]
    model = SACPlus("MlpPolicy", DummyVecEnv(envs), **fast_kwargs(learning_starts=5))
    with pytest.raises(
        ValueError, match=rf"non-finite {where} \(NaN or inf\) at num_timesteps=\d+, env index 1\b.*VecCheckNan"
    ):
        model.learn(300)
    assert model.replay_buffer.size() < 20 and np.all(np.isfinite(model.replay_buffer.rewards))


def test_predict_refuses_a_non_finite_observation(space_env, fast_kwargs):
    model = SACPlus("MlpPolicy", space_env(DISCRETE), **fast_kwargs())
    obs = np.stack([model.observation_space.sample() for _ in range(3)]).astype(np.float32)
    obs[2, 0] = np.nan
    with pytest.raises(ValueError, match=r"non-finite observation \(NaN or inf, in row 2\)"):
        model.predict(obs)


# ---------------------------------------------------------------------------------------------------- divergence


def poison_critic(model: SACPlus) -> None:
    """A critic weight becomes NaN, as after an overflowing update."""
    with th.no_grad():
        next(model.critic.qf0.parameters()).view(-1)[0] = float("nan")


@pytest.mark.parametrize("action_space", [BOX, DISCRETE], ids=["box", "discrete"])
def test_divergence_raises_with_quantity_update_and_hint(space_env, fast_kwargs, action_space):
    model = SACPlus("MlpPolicy", space_env(action_space), **fast_kwargs(learning_starts=20)).learn(40)
    first_poisoned_update = model._n_updates  # updates are numbered from 0
    assert first_poisoned_update > 0
    poison_critic(model)
    with pytest.raises(DivergenceError) as info:
        model.learn(30, reset_num_timesteps=False)
    message = str(info.value)
    assert "critic loss" in message
    assert "non-finite" in message
    assert f"gradient update {first_poisoned_update} " in message
    assert "learning rate" in message and "rewards" in message  # the hints


def test_divergence_from_a_huge_learning_rate_is_detected(space_env, fast_kwargs):
    model = SACPlus(
        "MlpPolicy",
        space_env(BOX),
        **fast_kwargs(learning_starts=20, learning_rate=1e12, ent_coef=1e30, policy_kwargs=dict(net_arch=[8])),
    )
    with pytest.raises(DivergenceError, match=r"became non-finite \(NaN or inf\) at gradient update \d+"):
        model.learn(400)
    assert model.num_timesteps < 400


def test_divergence_stop_ends_training_cleanly(space_env, fast_kwargs):
    model = SACPlus("MlpPolicy", space_env(BOX), on_divergence="stop", **fast_kwargs(learning_starts=20)).learn(40)
    poison_critic(model)
    with pytest.warns(RuntimeWarning, match=rf"critic loss.*gradient update {model._n_updates} .*on_divergence='stop'"):
        model.learn(200, reset_num_timesteps=False)
    assert model.num_timesteps < 100, "training went on after the divergence"


def test_on_divergence_rejects_unknown_values(space_env):
    with pytest.raises(ValueError, match=r"on_divergence='ignore'.*'raise'.*'stop'"):
        SACPlus("MlpPolicy", space_env(BOX), on_divergence="ignore")


def test_learn_after_a_stopped_divergence_says_why_it_does_nothing(space_env, fast_kwargs):
    model = SACPlus("MlpPolicy", space_env(BOX), on_divergence="stop", **fast_kwargs(learning_starts=20)).learn(40)
    poison_critic(model)
    with pytest.warns(RuntimeWarning, match=r"on_divergence='stop'"):
        model.learn(100, reset_num_timesteps=False)
    steps = model.num_timesteps
    with pytest.warns(RuntimeWarning, match=r"learn\(\) does nothing: training stopped earlier because SACPlus diverged"):
        model.learn(100, reset_num_timesteps=False)
    assert model.num_timesteps == steps


# ---------------------------------------------------------------------------------------------------- file modes


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_saves_get_the_mode_a_plain_write_would_give(tmp_path, space_env, fast_kwargs, umask_022):
    model = SACPlus("MlpPolicy", space_env(BOX), **fast_kwargs(learning_starts=20)).learn(30)
    for save, name in ((model.save, "model.zip"), (model.save_replay_buffer, "buffer.pkl"), (model.save_as_sb3, "sb3.zip")):
        path = tmp_path / name
        save(path)
        assert path.stat().st_mode & 0o777 == 0o644, name  # a new file: 0o666 less the umask, as SB3's open()
        path.chmod(0o640)
        save(path)
        assert path.stat().st_mode & 0o777 == 0o640, name  # overwriting keeps the existing file's mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["buffer.pkl", "model.zip", "sb3.zip"]  # no partial file left


# ---------------------------------------------------------------------------------------------------- keywords


def test_a_user_set_target_entropy_survives_save_and_load(tmp_path, space_env, fast_kwargs):
    model = SACPlus("MlpPolicy", space_env(BOX), **fast_kwargs(learning_starts=20)).learn(30)
    model.target_entropy = -3.0
    model.save(tmp_path / "model.zip")
    assert SACPlus.load(tmp_path / "model.zip").target_entropy == -3.0
    loaded = SACPlus.load(tmp_path / "model.zip", env=space_env(BOX), target_entropy=-2.5)
    assert loaded.target_entropy == -2.5
    loaded.learn(20, reset_num_timesteps=False)
    assert loaded.target_entropy == -2.5
    model.save_as_sb3(tmp_path / "sb3.zip")
    assert SACPlus.load_from_sb3(tmp_path / "sb3.zip", target_entropy=-0.5).target_entropy == -0.5
    assert SACPlus.load_from_sb3(tmp_path / "sb3.zip").target_entropy == -3.0


def test_a_discrete_target_given_at_load_is_not_rescheduled(tmp_path, space_env, fast_kwargs):
    model = SACPlus("MlpPolicy", space_env(DISCRETE), **fast_kwargs(learning_starts=20)).learn(30)
    model.save(tmp_path / "model.zip")
    loaded = SACPlus.load(tmp_path / "model.zip", env=space_env(DISCRETE), target_entropy=0.3)
    loaded.learn(20, reset_num_timesteps=False)
    assert loaded.target_entropy == 0.3


def test_target_entropy_scale_is_checked_at_load_and_along_a_schedule(tmp_path, space_env, fast_kwargs):
    SACPlus("MlpPolicy", space_env(DISCRETE), **fast_kwargs()).save(tmp_path / "model.zip")
    with pytest.raises(ValueError, match=r"target_entropy_scale=5\.0 is outside \(0, 1\]"):
        SACPlus.load(tmp_path / "model.zip", target_entropy_scale=5.0)
    # valid at both ends, not in the middle
    with pytest.raises(ValueError, match=r"target_entropy_scale\(0\.5\)=2\.0 is outside \(0, 1\]"):
        SACPlus("MlpPolicy", space_env(DISCRETE), target_entropy_scale=lambda p: 2.0 if p == 0.5 else 0.5)


def test_numpy_integers_are_accepted_as_sb3_accepts_them(space_env, fast_kwargs):
    model = SACPlus(
        "MlpPolicy",
        space_env(BOX),
        target_update_interval=np.int64(2),
        **fast_kwargs(policy_kwargs=dict(net_arch=[8], n_critics=np.int64(3))),
    )
    assert model.target_update_interval == 2 and type(model.target_update_interval) is int
    assert model.critic.n_critics == 3 and len(model.critic.q_networks) == 3
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match=rf"target_update_interval={bad!r} is not valid; accepted: an integer >= 1"):
            SACPlus("MlpPolicy", space_env(BOX), target_update_interval=bad)


@pytest.mark.parametrize("on_divergence", ["raise", "stop"])
@pytest.mark.parametrize("action_space", [BOX, DISCRETE], ids=["box", "discrete"])
def test_divergence_is_named_at_the_gpu_check_interval_too(space_env, fast_kwargs, action_space, on_divergence):
    """
    With the flags read only every 1000 updates (as on a GPU), NaN weights reach the policy's outputs before
    the losses are checked: acting never samples from them (no multinomial error, no NaN action to the env), and
    the error names the first non-finite update as with a check after every update.
    """
    model = SACPlus("MlpPolicy", space_env(action_space), on_divergence=on_divergence, **fast_kwargs(learning_starts=20))
    model.learn(40)
    model.monitor.check_interval = DIVERGENCE_CHECK_INTERVAL
    model.monitor.next_check = model._n_updates + DIVERGENCE_CHECK_INTERVAL
    first_poisoned_update = model._n_updates
    poison_critic(model)
    expected = rf"critic loss.*gradient update {first_poisoned_update} "
    if on_divergence == "raise":
        with pytest.raises(DivergenceError, match=expected):
            model.learn(200, reset_num_timesteps=False)
    else:
        with pytest.warns(RuntimeWarning, match=expected + r".*on_divergence='stop'"):
            model.learn(200, reset_num_timesteps=False)
    assert model.num_timesteps < 100
    assert np.all(np.isfinite(model.replay_buffer.actions[: model.replay_buffer.size()]))


def test_predict_of_a_diverged_policy_raises_instead_of_returning_nan(space_env, fast_kwargs):
    model = SACPlus("MlpPolicy", space_env(BOX), **fast_kwargs())
    with th.no_grad():
        model.actor.mu.weight.fill_(float("nan"))
    with pytest.raises(DivergenceError, match=r"policy's outputs are non-finite"):
        model.predict(np.zeros(3, dtype=np.float32))


def _as_sac_plus_0_1_zip(model: SACPlus, path: pathlib.Path) -> None:
    """Write ``model`` as sac_plus 0.1 did: each critic layer of all critics stacked as ``[n, in, out]``."""
    from stable_baselines3.common.save_util import load_from_zip_file, save_to_zip_file

    model.save(path)
    data, params, pytorch_variables = load_from_zip_file(path)
    n = model.critic.n_critics
    old_policy = {}
    for name, tensor in params["policy"].items():
        prefix, _, rest = name.partition(".")
        if prefix in ("critic", "critic_target") and rest.startswith("qf"):
            k, layer, kind = rest[2:].split(".")
            if k == "0":
                members = [params["policy"][f"{prefix}.qf{i}.{layer}.{kind}"] for i in range(n)]
                stacked = th.stack([m.t() for m in members]) if kind == "weight" else th.stack([m[None] for m in members])
                old_policy[f"{prefix}.q_networks.net.{layer}.{kind}"] = stacked
        else:
            old_policy[name.replace("actor.mu.0.", "actor.mu.", 1)] = tensor  # 0.1 clamped gSDE's mean in forward
    params["policy"] = old_policy
    # the critic optimizer: one stacked parameter per layer, in layer order
    state = params["critic.optimizer"]
    names = [name for name in model.policy.state_dict() if name.startswith("critic.")]
    old_names = list(dict.fromkeys(f"net.{n_.split('.')[2]}.{n_.split('.')[3]}" for n_ in names))
    new_state, per_name = {}, dict(zip(names, state["param_groups"][0]["params"], strict=True))
    for index, old in enumerate(old_names):
        layer, kind = old.split(".")[1:]
        moments = [state["state"][per_name[f"critic.qf{i}.{layer}.{kind}"]] for i in range(n)]
        new_state[index] = {
            "step": moments[0]["step"],
            **{
                key: th.stack([m[key].t() if kind == "weight" else m[key][None] for m in moments])
                for key in ("exp_avg", "exp_avg_sq")
            },
        }
    params["critic.optimizer"] = {
        "state": new_state,
        "param_groups": [{**state["param_groups"][0], "params": list(range(len(old_names)))}],
    }
    save_to_zip_file(path, data=data, params=params, pytorch_variables=pytorch_variables)


@pytest.mark.parametrize(
    "variant",
    [dict(), dict(use_sde=True, policy_kwargs=dict(net_arch=[16, 16], n_critics=3))],
    ids=["default", "gsde-3critics"],
)
def test_a_sac_plus_0_1_zip_is_read_with_everything_it_held(tmp_path, space_env, fast_kwargs, variant):
    variant = dict(variant)
    kwargs = fast_kwargs(
        learning_starts=20, **({"policy_kwargs": variant.pop("policy_kwargs")} if "policy_kwargs" in variant else {})
    )
    model = SACPlus("MlpPolicy", space_env(BOX), **kwargs, **variant).learn(40)
    _as_sac_plus_0_1_zip(model, tmp_path / "old.zip")
    with pytest.warns(UserWarning, match=r"old\.zip was saved by sac_plus 0\.1.*batched"):
        loaded = SACPlus.load(tmp_path / "old.zip", env=space_env(BOX))
    assert_nested_equal(loaded.policy.state_dict(), model.policy.state_dict())
    for param, old_param in zip(
        loaded.critic.optimizer.param_groups[0]["params"], model.critic.optimizer.param_groups[0]["params"], strict=True
    ):
        for key in ("exp_avg", "exp_avg_sq"):
            assert th.equal(loaded.critic.optimizer.state[param][key], model.critic.optimizer.state[old_param][key])
    assert (loaded.num_timesteps, loaded._n_updates) == (model.num_timesteps, model._n_updates)
    loaded.learn(20, reset_num_timesteps=False)


def test_a_non_finite_terminal_observation_names_its_own_env(fast_kwargs):
    """Two envs end their episodes at the same step; only env 0's last observation is NaN."""
    envs = [lambda: NonFiniteEnv("observation", at=30), lambda: NonFiniteEnv("observation", at=100)]
    model = SACPlus("MlpPolicy", DummyVecEnv(envs), **fast_kwargs(learning_starts=5))
    with pytest.raises(
        ValueError, match=r"non-finite terminal observation \(NaN or inf\) at num_timesteps=\d+, env index 0\."
    ):
        model.learn(300)


def test_a_sac_plus_0_1_zip_is_read_from_an_open_file(tmp_path, space_env, fast_kwargs):
    model = SACPlus("MlpPolicy", space_env(BOX), **fast_kwargs(learning_starts=20)).learn(40)
    _as_sac_plus_0_1_zip(model, tmp_path / "old.zip")
    with open(tmp_path / "old.zip", "rb") as file, pytest.warns(UserWarning, match=r"sac_plus 0\.1"):
        loaded = SACPlus.load(file, env=space_env(BOX))
    assert_nested_equal(loaded.policy.state_dict(), model.policy.state_dict())
