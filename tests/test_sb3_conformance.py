"""SB3 conformance: what a ``stable_baselines3.SAC`` user relies on works with ``SACPlus``, with real SB3
objects: image and Dict observations, HER, vectorised envs and wrappers, gSDE, n-step returns, callbacks,
logging, parameters and policies, ``predict``, the critic and actor API, and moving agents to and from
``stable_baselines3.SAC`` (``load_from_sb3``, ``save_as_sb3``)."""

from __future__ import annotations

import csv
import json
import os
import pathlib
import subprocess
import sys
import textwrap
import warnings
import zipfile

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3 import SAC
from stable_baselines3.common.buffers import NStepReplayBuffer
from stable_baselines3.common.callbacks import (
    CallbackList,
    CheckpointCallback,
    EvalCallback,
    StopTrainingOnRewardThreshold,
)
from stable_baselines3.common.envs import BitFlippingEnv, FakeImageEnv, SimpleMultiObsEnv
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecFrameStack, VecNormalize
from stable_baselines3.her import HerReplayBuffer
from stable_baselines3.sac import policies as sb3_policies

from sac_plus import SACPlus, SACPlusPolicy

BOX = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
DISCRETE = spaces.Discrete(3)
KINDS = pytest.mark.parametrize("action_space", [BOX, DISCRETE], ids=["box", "discrete"])


def snapshot(module: th.nn.Module) -> dict[str, th.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}


def changed(before: dict[str, th.Tensor], module: th.nn.Module) -> bool:
    return any(not th.equal(before[name], tensor) for name, tensor in module.state_dict().items())


def sample_observations(space: spaces.Space, n: int, seed: int = 0):
    space.seed(seed)
    samples = [space.sample() for _ in range(n)]
    if isinstance(space, spaces.Dict):
        return {key: np.stack([s[key] for s in samples]) for key in space.spaces}
    return np.stack(samples)


# ---------------------------------------------------------------------------------------------------- policies


@pytest.mark.parametrize("discrete", [False, True], ids=["box", "discrete"])
@pytest.mark.parametrize("share", [True, False], ids=["shared-extractor", "own-extractor"])
def test_cnn_policy(tmp_path, discrete, share):
    env = FakeImageEnv(screen_height=36, screen_width=36, n_channels=1, discrete=discrete, action_dim=3)
    model = SACPlus(
        "CnnPolicy",
        env,
        buffer_size=100,
        learning_starts=20,
        batch_size=8,
        policy_kwargs=dict(net_arch=[16], features_extractor_kwargs=dict(features_dim=16), share_features_extractor=share),
        seed=0,
        device="cpu",
    )
    actor_extractor = model.actor.features_extractor
    assert type(actor_extractor).__name__ == "NatureCNN"
    assert (model.critic.features_extractor is actor_extractor) == share
    assert model.critic_target.features_extractor is not model.critic.features_extractor
    critic_trained = {id(p) for group in model.critic.optimizer.param_groups for p in group["params"]}
    assert any(id(p) in critic_trained for p in model.critic.features_extractor.parameters()) == (not share)

    before_actor, before_critic = snapshot(actor_extractor), snapshot(model.critic.features_extractor)
    model.learn(30)
    assert model._n_updates > 0
    assert changed(before_actor, actor_extractor)
    assert changed(before_critic, model.critic.features_extractor)

    obs = np.stack([env.observation_space.sample() for _ in range(4)])  # channel-last uint8, as the env gives
    actions, _ = model.predict(obs, deterministic=True)
    assert actions.shape == ((4,) if discrete else (4, 5))
    model.save(tmp_path / "cnn.zip")
    loaded = SACPlus.load(tmp_path / "cnn.zip", env=env)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], actions)


@pytest.mark.parametrize("discrete", [True, False], ids=["discrete", "box"])
def test_multi_input_policy(discrete):
    env = SimpleMultiObsEnv(random_start=False, discrete_actions=discrete)
    model = SACPlus(
        "MultiInputPolicy",
        env,
        buffer_size=200,
        learning_starts=20,
        batch_size=16,
        policy_kwargs=dict(net_arch=[16], features_extractor_kwargs=dict(cnn_output_dim=16)),
        seed=0,
        device="cpu",
    )
    assert type(model.actor.features_extractor).__name__ == "CombinedExtractor"
    before = snapshot(model.actor)
    model.learn(40)
    assert model._n_updates > 0 and changed(before, model.actor)
    obs = env.reset(seed=0)[0]
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(action.astype(env.action_space.dtype) if not discrete else int(action))
    batch = sample_observations(env.observation_space, 5)
    assert model.predict(batch, deterministic=False)[0].shape == ((5,) if discrete else (5, env.action_space.shape[0]))


@pytest.mark.parametrize("continuous", [True, False], ids=["box", "discrete"])
def test_her_replay_buffer(continuous):
    env = BitFlippingEnv(n_bits=4, continuous=continuous, max_steps=4)
    model = SACPlus(
        "MultiInputPolicy",
        env,
        replay_buffer_class=HerReplayBuffer,
        replay_buffer_kwargs=dict(n_sampled_goal=2, goal_selection_strategy="future"),
        buffer_size=500,
        learning_starts=20,
        batch_size=32,
        policy_kwargs=dict(net_arch=[32]),
        seed=0,
        device="cpu",
    )
    model.learn(60)
    assert isinstance(model.replay_buffer, HerReplayBuffer)
    assert model._n_updates > 0
    # HER relabels with goals reached later in the episode: successes (reward 0) appear among the samples,
    # although the stored rewards are those of the original goals
    samples = model.replay_buffer.sample(256)
    assert (samples.rewards == 0).float().mean() > 0.1
    assert model.predict(env.reset(seed=0)[0], deterministic=True)[0].shape == ((4,) if continuous else ())


# ---------------------------------------------------------------------------------------------------- vec envs


@pytest.mark.parametrize(
    ("vec_env_class", "action_space"), [(DummyVecEnv, BOX), (SubprocVecEnv, DISCRETE)], ids=["dummy-box", "subproc-discrete"]
)
def test_several_envs(space_env, fast_kwargs, vec_env_class, action_space):
    env_fns = [lambda: space_env(action_space)] * 2
    env = vec_env_class(env_fns, start_method="fork") if vec_env_class is SubprocVecEnv else vec_env_class(env_fns)
    try:
        model = SACPlus("MlpPolicy", env, **fast_kwargs(learning_starts=20)).learn(60)
        assert model.n_envs == 2 and model.replay_buffer.n_envs == 2
        assert model.num_timesteps == 60
        assert model.replay_buffer.pos == 30  # one row per step of both envs
        assert model._n_updates == (60 - 20) // 2
        actions, _ = model.predict(env.reset(), deterministic=True)
        assert actions.shape == ((2, 2) if action_space is BOX else (2,))
    finally:
        env.close()


def test_vec_normalize_saved_and_restored_with_the_model(tmp_path, space_env, fast_kwargs):
    env = VecNormalize(DummyVecEnv([lambda: space_env(BOX)]), gamma=0.99)
    model = SACPlus("MlpPolicy", env, **fast_kwargs(learning_starts=20)).learn(60)
    assert model.get_vec_normalize_env() is env
    model.save(tmp_path / "model.zip")
    env.save(tmp_path / "vec_normalize.pkl")

    restored = VecNormalize.load(tmp_path / "vec_normalize.pkl", DummyVecEnv([lambda: space_env(BOX)]))
    loaded = SACPlus.load(tmp_path / "model.zip", env=restored)
    assert loaded.get_vec_normalize_env() is restored
    np.testing.assert_array_equal(restored.obs_rms.mean, env.obs_rms.mean)
    np.testing.assert_array_equal(restored.ret_rms.var, env.ret_rms.var)
    raw = np.random.default_rng(0).uniform(-1, 1, size=(16, 3)).astype(np.float32)
    normalized = restored.normalize_obs(raw)
    assert not np.allclose(normalized, raw)
    np.testing.assert_array_equal(
        loaded.predict(normalized, deterministic=True)[0], model.predict(env.normalize_obs(raw), deterministic=True)[0]
    )
    count = restored.obs_rms.count
    loaded.learn(20, reset_num_timesteps=False)
    assert restored.obs_rms.count >= count + 20  # still updating its statistics while training (+ the reset)


@KINDS
def test_vec_frame_stack(space_env, fast_kwargs, action_space):
    env = VecFrameStack(DummyVecEnv([lambda: space_env(action_space)]), n_stack=3)
    model = SACPlus("MlpPolicy", env, **fast_kwargs(learning_starts=20)).learn(40)
    assert model.observation_space.shape == (9,)
    assert model.actor.latent_pi[0].in_features == 9
    assert model._n_updates > 0


# ---------------------------------------------------------------------------------------------------- gSDE, n-step


def test_gsde(space_env, fast_kwargs):
    model = SACPlus("MlpPolicy", space_env(BOX), **fast_kwargs(learning_starts=20, use_sde=True, sde_sample_freq=4))
    assert isinstance(model.actor.log_std, th.nn.Parameter) and model.actor.log_std.shape == (32, 2)
    initial_log_std = model.actor.log_std.detach().clone()
    model.learn(60)
    assert not th.equal(model.actor.log_std, initial_log_std), "gSDE's log std was not trained"
    obs = sample_observations(model.observation_space, 8)
    # gSDE: the same exploration matrix gives the same action for the same state, until the matrix is resampled
    first = model.predict(obs, deterministic=False)[0]
    np.testing.assert_array_equal(model.predict(obs, deterministic=False)[0], first)
    model.policy.reset_noise()
    assert not np.allclose(model.predict(obs, deterministic=False)[0], first)
    assert not np.allclose(model.predict(obs, deterministic=True)[0], first)


def test_gsde_needs_box_actions(space_env):
    with pytest.raises(ValueError, match="use_sde=True needs a Box action space"):
        SACPlus("MlpPolicy", space_env(DISCRETE), use_sde=True)


@KINDS
def test_n_step_returns(space_env, fast_kwargs, action_space):
    model = SACPlus("MlpPolicy", space_env(action_space), **fast_kwargs(learning_starts=30, n_steps=3, gamma=0.9))
    model.learn(60)
    assert isinstance(model.replay_buffer, NStepReplayBuffer)
    assert model.replay_buffer.n_steps == 3
    assert model._n_updates > 0
    discounts = model.replay_buffer.sample(256).discounts.numpy().ravel()
    # gamma^3 for most samples, gamma^k (k < 3) where an episode ended within 3 steps
    np.testing.assert_allclose(np.unique(discounts), [0.9**3, 0.9**2, 0.9], rtol=1e-6)


@KINDS
def test_memory_efficient_buffer(space_env, fast_kwargs, action_space):
    model = SACPlus(
        "MlpPolicy",
        space_env(action_space),
        **fast_kwargs(
            learning_starts=20, optimize_memory_usage=True, replay_buffer_kwargs=dict(handle_timeout_termination=False)
        ),
    ).learn(40)
    assert model.replay_buffer.optimize_memory_usage
    assert getattr(model.replay_buffer, "next_observations", None) is None  # read from the next row instead
    assert model._n_updates > 0


def test_action_noise(space_env, fast_kwargs):
    noise = NormalActionNoise(np.zeros(2), np.full(2, 10.0))
    model = SACPlus("MlpPolicy", space_env(BOX), **fast_kwargs(learning_starts=20, action_noise=noise)).learn(40)
    assert model.action_noise is noise and model._n_updates > 0
    # after the uniform warm-up, the policy's actions plus this much noise are mostly clipped to the bounds
    policy_actions = model.replay_buffer.actions[20:40, 0]
    assert np.all(np.abs(policy_actions) <= 1.0)
    assert np.mean(np.abs(policy_actions) == 1.0) > 0.5


# ---------------------------------------------------------------------------------------------------- callbacks


@pytest.mark.filterwarnings("ignore:rich is experimental")
def test_callbacks_and_progress_bar(tmp_path, space_env, fast_kwargs):
    env = VecNormalize(DummyVecEnv([lambda: space_env(BOX)]))
    eval_env = VecNormalize(DummyVecEnv([lambda: Monitor(space_env(BOX))]), training=False, norm_reward=False)
    eval_callback = EvalCallback(
        eval_env, eval_freq=25, n_eval_episodes=2, best_model_save_path=tmp_path / "best", log_path=tmp_path / "eval"
    )
    checkpoint_callback = CheckpointCallback(
        save_freq=30, save_path=tmp_path / "ckpt", save_replay_buffer=True, save_vecnormalize=True
    )
    model = SACPlus("MlpPolicy", env, **fast_kwargs(learning_starts=20))
    model.learn(60, callback=CallbackList([eval_callback, checkpoint_callback]), progress_bar=True)

    evaluations = np.load(tmp_path / "eval" / "evaluations.npz")
    np.testing.assert_array_equal(evaluations["timesteps"], [25, 50])
    assert evaluations["results"].shape == (2, 2)
    assert SACPlus.load(tmp_path / "best" / "best_model.zip").num_timesteps in (25, 50)
    for steps in (30, 60):
        checkpoint = SACPlus.load(tmp_path / "ckpt" / f"rl_model_{steps}_steps.zip", env=env)
        assert checkpoint.num_timesteps == steps
        checkpoint.load_replay_buffer(tmp_path / "ckpt" / f"rl_model_replay_buffer_{steps}_steps.pkl")
        # SB3 calls callbacks after env.step() and before storing that step's transition
        assert checkpoint.replay_buffer.size() == steps - 1
        VecNormalize.load(
            tmp_path / "ckpt" / f"rl_model_vecnormalize_{steps}_steps.pkl", DummyVecEnv([lambda: space_env(BOX)])
        )


@KINDS
def test_stop_training_on_reward_threshold(space_env, fast_kwargs, action_space):
    stop = StopTrainingOnRewardThreshold(reward_threshold=-1e9)  # any evaluation reaches it
    eval_callback = EvalCallback(Monitor(space_env(action_space)), eval_freq=30, n_eval_episodes=1, callback_on_new_best=stop)
    model = SACPlus("MlpPolicy", space_env(action_space), **fast_kwargs(learning_starts=20))
    model.learn(500, callback=eval_callback)
    assert model.num_timesteps == 30


@KINDS
def test_evaluate_policy(space_env, fast_kwargs, action_space):
    model = SACPlus("MlpPolicy", space_env(action_space), **fast_kwargs(learning_starts=20)).learn(30)
    mean, std = evaluate_policy(model, Monitor(space_env(action_space)), n_eval_episodes=3)
    assert np.isfinite(mean) and np.isfinite(std)
    returns, lengths = evaluate_policy(model, Monitor(space_env(action_space)), n_eval_episodes=3, return_episode_rewards=True)
    assert lengths == [20, 20, 20] and len(returns) == 3


# ---------------------------------------------------------------------------------------------------- logging

SB3_SAC_KEYS = {
    "train/actor_loss",
    "train/critic_loss",
    "train/ent_coef",
    "train/ent_coef_loss",
    "train/learning_rate",
    "train/n_updates",
}
NEW_KEYS = {"train/entropy", "train/target_entropy", "train/q_mean"}


@KINDS
def test_csv_and_tensorboard_logging(tmp_path, space_env, fast_kwargs, action_space):
    model = SACPlus("MlpPolicy", space_env(action_space), **fast_kwargs(learning_starts=20))
    model.set_logger(configure(str(tmp_path), ["csv", "tensorboard"]))
    model.learn(80, log_interval=1)  # episodes of 20 steps: a dump every 20 steps
    with open(tmp_path / "progress.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 4
    expected = SB3_SAC_KEYS | NEW_KEYS | ({"train/tanh_saturation"} if action_space is BOX else set())
    assert expected <= rows[-1].keys(), f"missing: {expected - rows[-1].keys()}"
    if action_space is DISCRETE:
        assert "train/tanh_saturation" not in rows[-1]
    last = rows[-1]
    for key in expected:
        assert np.isfinite(float(last[key])), key
    # SB3 dumps the logs at the end of an episode, before the update of that rollout
    assert int(last["train/n_updates"]) == model._n_updates - 1
    assert float(last["train/target_entropy"]) == pytest.approx(model.target_entropy, rel=1e-4)  # moves per update
    assert float(last["train/learning_rate"]) == pytest.approx(3e-4)
    assert 0.0 < float(last["train/ent_coef"]) < 1.0  # learned alpha, started at 1
    if action_space is BOX:
        assert 0.0 <= float(last["train/tanh_saturation"]) <= 1.0
    else:
        assert 0.0 < float(last["train/entropy"]) <= np.log(3) + 1e-6
    assert list(tmp_path.glob("events.out.tfevents.*")), "no TensorBoard events file"


# ------------------------------------------------------------------------------------------ parameters, policy, predict


@KINDS
def test_get_and_set_parameters(tmp_path, space_env, fast_kwargs, action_space):
    trained = SACPlus("MlpPolicy", space_env(action_space), **fast_kwargs(learning_starts=20)).learn(40)
    parameters = trained.get_parameters()
    assert set(parameters) == {"policy", "actor.optimizer", "critic.optimizer", "ent_coef_optimizer"}
    fresh = SACPlus("MlpPolicy", space_env(action_space), **fast_kwargs(seed=1))
    obs = sample_observations(trained.observation_space, 16)
    # different weights before (argmax actions of two small nets may coincide, so compare the weights themselves)
    assert not all(th.equal(tensor, parameters["policy"][key]) for key, tensor in fresh.policy.state_dict().items())
    fresh.set_parameters(parameters)
    np.testing.assert_array_equal(fresh.predict(obs, deterministic=True)[0], trained.predict(obs, deterministic=True)[0])
    for name, state in fresh.get_parameters().items():
        if name == "policy":
            for key, tensor in state.items():
                assert th.equal(tensor, parameters[name][key]), key
        else:
            assert state["state"].keys() == parameters[name]["state"].keys(), name
    # from a zip, and partially
    trained.save(tmp_path / "model.zip")
    other = SACPlus("MlpPolicy", space_env(action_space), **fast_kwargs(seed=2))
    other.set_parameters(str(tmp_path / "model.zip"))
    np.testing.assert_array_equal(other.predict(obs, deterministic=True)[0], trained.predict(obs, deterministic=True)[0])
    partial = SACPlus("MlpPolicy", space_env(action_space), **fast_kwargs(seed=3))
    partial.set_parameters({"policy": parameters["policy"]}, exact_match=False)
    np.testing.assert_array_equal(partial.predict(obs, deterministic=True)[0], trained.predict(obs, deterministic=True)[0])
    with pytest.raises(ValueError, match="Names of parameters do not match"):
        partial.set_parameters({"policy": parameters["policy"]}, exact_match=True)


@KINDS
def test_policy_save_and_load(tmp_path, space_env, fast_kwargs, action_space):
    model = SACPlus("MlpPolicy", space_env(action_space), **fast_kwargs(learning_starts=20)).learn(40)
    model.policy.save(tmp_path / "policy.pth")
    policy = SACPlusPolicy.load(tmp_path / "policy.pth")
    assert type(policy) is SACPlusPolicy
    obs = sample_observations(model.observation_space, 32)
    np.testing.assert_array_equal(policy.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    obs_tensor = th.as_tensor(obs)
    actions = th.as_tensor(BOX.sample()).expand(32, 2) if action_space is BOX else None
    for q_loaded, q in zip(policy.critic(obs_tensor, actions), model.critic(obs_tensor, actions), strict=True):
        assert th.equal(q_loaded, q)


@KINDS
def test_predict(space_env, fast_kwargs, action_space):
    env = space_env(action_space)
    model = SACPlus("MlpPolicy", env, **fast_kwargs(learning_starts=20)).learn(30)
    single = env.reset(seed=0)[0]
    batch = sample_observations(env.observation_space, 64)
    action_shape = (2,) if action_space is BOX else ()

    action, state = model.predict(single, deterministic=True)
    assert action.shape == action_shape and state is None
    assert action_space.contains(action if action_space is BOX else int(action))
    actions, _ = model.predict(batch, deterministic=True)
    assert actions.shape == (64, *action_shape)
    assert all(action_space.contains(a if action_space is BOX else int(a)) for a in actions)
    np.testing.assert_array_equal(model.predict(batch, deterministic=True)[0], actions)
    np.testing.assert_array_equal(model.predict(batch[0], deterministic=True)[0], actions[0])

    stochastic = [model.predict(batch, deterministic=False)[0] for _ in range(2)]
    assert not np.array_equal(stochastic[0], stochastic[1])
    assert all(action_space.contains(a if action_space is BOX else int(a)) for a in stochastic[0])

    # episode_start and state (used by recurrent policies) are accepted; the state is passed through
    state = (np.zeros((64, 4)),)
    actions_with_state, returned_state = model.predict(
        batch, state=state, episode_start=np.ones(64, dtype=bool), deterministic=True
    )
    np.testing.assert_array_equal(actions_with_state, actions)
    assert returned_state is state


# ---------------------------------------------------------------------------------------------------- SB3 SAC import


def train_sb3_sac(env, **kwargs) -> SAC:
    params = dict(learning_starts=20, batch_size=16, buffer_size=500, seed=0, device="cpu")
    params.update(kwargs)
    return SAC(params.pop("policy", "MlpPolicy"), env, **params).learn(40)


def assert_same_agent(sb3: SAC, ours: SACPlus, n: int = 32) -> None:
    """Deterministic actions, Q-values and target Q-values agree on a batch of observations."""
    obs = sample_observations(sb3.observation_space, n)
    np.testing.assert_allclose(ours.predict(obs, deterministic=True)[0], sb3.predict(obs, deterministic=True)[0], atol=1e-6)
    obs_tensor = sb3.policy.obs_to_tensor(obs)[0]
    actions = th.as_tensor(np.random.default_rng(1).uniform(-1, 1, size=(n, *sb3.action_space.shape)), dtype=th.float32)
    with th.no_grad():
        for sb3_critic, critic in ((sb3.critic, ours.critic), (sb3.critic_target, ours.critic_target)):
            expected = sb3_critic(obs_tensor, actions)
            q_values = critic(obs_tensor, actions)
            assert isinstance(q_values, tuple) and len(q_values) == len(expected)
            for q, q_expected in zip(q_values, expected, strict=True):
                assert q.shape == q_expected.shape
                th.testing.assert_close(q, q_expected, atol=1e-5, rtol=1e-5)


def optimizer_states_by_name(module, optimizer) -> dict[str, dict]:
    names = {id(p): name for name, p in module.named_parameters()}
    return {names[id(p)]: optimizer.state[p] for group in optimizer.param_groups for p in group["params"]}


def assert_optimizer_states_map(sb3_module, sb3_optimizer, module, optimizer) -> None:
    """Every Adam moment of SACPlus equals SB3's for the parameter of the same name, in the same order."""
    sb3_state = optimizer_states_by_name(sb3_module, sb3_optimizer)
    state = optimizer_states_by_name(module, optimizer)
    assert list(state) == list(sb3_state)
    for name, param_state in state.items():
        for key in ("exp_avg", "exp_avg_sq"):
            assert th.equal(param_state[key], sb3_state[name][key]), (name, key)
        assert float(param_state["step"]) == float(sb3_state[name]["step"]) > 0


@pytest.mark.parametrize(
    "variant",
    [
        dict(),
        dict(use_sde=True, ent_coef=0.1, policy_kwargs=dict(net_arch=[16, 16], n_critics=3, activation_fn=th.nn.Tanh)),
        dict(ent_coef="auto_0.5", target_entropy=-0.5, policy_kwargs=dict(net_arch=dict(pi=[16], qf=[24, 8]), n_critics=1)),
    ],
    ids=["default", "gsde-3critics-fixed-alpha", "1critic-split-arch-custom-target-entropy"],
)
def test_import_sb3_sac(tmp_path, space_env, fast_kwargs, variant):
    variant = dict(variant)
    policy_kwargs = variant.pop("policy_kwargs", dict(net_arch=[32, 32]))
    sb3 = train_sb3_sac(space_env(BOX), policy_kwargs=policy_kwargs, **variant)
    sb3.save(tmp_path / "sb3_sac.zip")

    ours = SACPlus.load_from_sb3(tmp_path / "sb3_sac.zip", env=space_env(BOX))
    assert isinstance(ours, SACPlus) and type(ours.policy) is SACPlusPolicy
    assert_same_agent(sb3, ours)
    # hyperparameters and counters
    for name in (
        "learning_rate", "buffer_size", "learning_starts", "batch_size", "tau", "gamma", "gradient_steps",
        "target_update_interval", "target_entropy", "ent_coef", "use_sde", "num_timesteps", "_n_updates",
    ):  # fmt: skip
        assert getattr(ours, name) == getattr(sb3, name), name
    assert ours.train_freq == sb3.train_freq
    assert ours.critic.n_critics == policy_kwargs.get("n_critics", 2)
    # temperature and optimizer states
    if sb3.log_ent_coef is not None:
        assert th.equal(ours.log_ent_coef, sb3.log_ent_coef)
        assert ours.ent_coef_optimizer.param_groups[0]["params"][0] is ours.log_ent_coef
        for key in ("exp_avg", "exp_avg_sq"):
            assert th.equal(
                ours.ent_coef_optimizer.state[ours.log_ent_coef][key], sb3.ent_coef_optimizer.state[sb3.log_ent_coef][key]
            )
    else:
        assert float(ours.ent_coef_tensor) == pytest.approx(0.1) and ours.log_ent_coef is None
    assert_optimizer_states_map(sb3.actor, sb3.actor.optimizer, ours.actor, ours.actor.optimizer)
    assert_optimizer_states_map(sb3.critic, sb3.critic.optimizer, ours.critic, ours.critic.optimizer)
    # the state dicts map one to one, under SB3's names
    assert list(ours.policy.state_dict()) == list(sb3.policy.state_dict())

    # it trains on, saves and loads as a SACPlus
    ours.learn(20, reset_num_timesteps=False)
    assert ours.num_timesteps == 60 and ours._n_updates > sb3._n_updates
    assert ours.target_entropy == sb3.target_entropy  # a custom target survives training, not replaced by "auto"
    ours.save(tmp_path / "converted.zip")
    assert SACPlus.load(tmp_path / "converted.zip").num_timesteps == 60


def test_import_sb3_sac_cnn_with_shared_extractor(tmp_path):
    env = FakeImageEnv(screen_height=36, screen_width=36, n_channels=1, discrete=False)
    sb3 = train_sb3_sac(
        env,
        policy="CnnPolicy",
        buffer_size=60,
        policy_kwargs=dict(net_arch=[16], features_extractor_kwargs=dict(features_dim=16), share_features_extractor=True),
    )
    sb3.save(tmp_path / "sb3_cnn.zip")
    ours = SACPlus.load_from_sb3(tmp_path / "sb3_cnn.zip")
    assert type(ours.policy).__name__ == "CnnPolicy"
    assert ours.critic.features_extractor is ours.actor.features_extractor
    assert_same_agent(sb3, ours, n=8)
    assert_optimizer_states_map(sb3.critic, sb3.critic.optimizer, ours.critic, ours.critic.optimizer)


def test_load_converts_an_sb3_sac_zip_with_a_warning(tmp_path, space_env):
    sb3 = train_sb3_sac(space_env(BOX), policy_kwargs=dict(net_arch=[16]))
    sb3.save(tmp_path / "sb3_sac.zip")
    with pytest.warns(UserWarning, match=r"sb3_sac\.zip was saved by stable_baselines3\.SAC.*read as SACPlus\.load_from_sb3"):
        ours = SACPlus.load(tmp_path / "sb3_sac.zip", env=space_env(BOX))
    assert isinstance(ours, SACPlus)
    assert_same_agent(sb3, ours)


def test_load_from_sb3_errors_name_the_file(tmp_path, space_env, fast_kwargs):
    SACPlus("MlpPolicy", space_env(BOX), **fast_kwargs()).save(tmp_path / "ours.zip")
    with pytest.raises(ValueError, match=r"ours\.zip was not saved by stable_baselines3\.SAC.*load it with SACPlus\.load"):
        SACPlus.load_from_sb3(tmp_path / "ours.zip")
    train_sb3_sac(space_env(BOX), learning_starts=100, policy_kwargs=dict(net_arch=[8])).save(tmp_path / "sb3.zip")
    with pytest.raises(ValueError, match=r"sb3\.zip with this env: the action spaces do not match"):
        SACPlus.load_from_sb3(tmp_path / "sb3.zip", env=space_env(spaces.Box(-1, 1, shape=(3,), dtype=np.float32)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the explicit import does not warn
        SACPlus.load_from_sb3(tmp_path / "sb3.zip", env=space_env(BOX))


def test_sb3_policy_aliases_map_onto_ours():
    from sac_plus import policies
    from sac_plus.checkpoint import our_policy_class

    assert our_policy_class(sb3_policies.SACPolicy) is policies.SACPlusPolicy
    assert our_policy_class(sb3_policies.CnnPolicy) is policies.CnnPolicy
    assert our_policy_class(sb3_policies.MultiInputPolicy) is policies.MultiInputPolicy


@pytest.mark.parametrize(
    ("sb3_class", "ours"),
    [("SACPolicy", "SACPlusPolicy"), ("CnnPolicy", "CnnPolicy"), ("MultiInputPolicy", "MultiInputPolicy")],
)
def test_sb3_sac_policy_classes_passed_as_policy_are_read_as_ours(sb3_class, ours):
    # SAC(stable_baselines3.sac.MlpPolicy, env), the style of SB3's older docs
    from sac_plus import policies

    model = SACPlus(getattr(sb3_policies, sb3_class), "Pendulum-v1", _init_setup_model=False)
    assert model.policy_class is getattr(policies, ours)


def test_sb3_mlp_policy_class_trains(space_env, fast_kwargs):
    from stable_baselines3.sac import MlpPolicy

    model = SACPlus(MlpPolicy, space_env(BOX), **fast_kwargs(learning_starts=10)).learn(40)
    assert type(model.policy).__name__ == "SACPlusPolicy" and model._n_updates > 0


def test_a_custom_sb3_sac_policy_is_refused_at_construction(space_env, fast_kwargs):
    class MySACPolicy(sb3_policies.SACPolicy):
        pass

    with pytest.raises(ValueError, match=r"policy=.*MySACPolicy is not a SACPlus policy.*subclass SACPlusPolicy"):
        SACPlus(MySACPolicy, space_env(BOX), **fast_kwargs())


# ------------------------------------------------------------------------------------------- SB3's API surface


def test_critic_and_actor_answer_as_sb3_s(space_env, fast_kwargs):
    model = SACPlus("MlpPolicy", space_env(BOX), **fast_kwargs(policy_kwargs=dict(net_arch=[16], n_critics=3)))
    obs = th.as_tensor(sample_observations(model.observation_space, 5))
    actions = th.zeros(5, 2)
    q_values = model.critic(obs, actions)
    assert isinstance(q_values, tuple) and [q.shape for q in q_values] == [(5, 1)] * 3
    assert th.cat(q_values, dim=1).shape == (5, 3)  # SB3-style code
    th.testing.assert_close(model.critic.q1_forward(obs, actions), q_values[0])
    assert [name for name, _ in model.critic.named_children()] == ["features_extractor", "qf0", "qf1", "qf2"]
    actions_pi, log_prob = model.actor.action_log_prob(obs)
    assert actions_pi.shape == (5, 2) and log_prob.shape == (5,)
    mean, log_std, kwargs = model.actor.get_action_dist_params(obs)
    assert mean.shape == log_std.shape == (5, 2) and kwargs == {}
    assert th.all(log_std <= 2.0) and th.all(log_std >= -20.0)
    with pytest.raises(ValueError, match=r"get_std\(\) needs use_sde=True"):
        model.actor.get_std()


def test_gsde_actor_api_and_state_dict_names_as_sb3_s(space_env, fast_kwargs):
    ours = SACPlus("MlpPolicy", space_env(BOX), use_sde=True, **fast_kwargs(policy_kwargs=dict(net_arch=[16])))
    sb3 = SAC("MlpPolicy", space_env(BOX), use_sde=True, **fast_kwargs(policy_kwargs=dict(net_arch=[16])))
    assert list(ours.policy.state_dict()) == list(sb3.policy.state_dict())
    th.testing.assert_close(ours.actor.get_std(), th.exp(ours.actor.log_std))
    obs = th.as_tensor(sample_observations(ours.observation_space, 4))
    _, log_std, kwargs = ours.actor.get_action_dist_params(obs)
    assert log_std is ours.actor.log_std and kwargs["latent_sde"].shape == (4, 16)


def test_stable_baselines3_sac_loads_and_trains_a_sacplus_zip(tmp_path, space_env, fast_kwargs):
    ours = SACPlus("MlpPolicy", space_env(BOX), **fast_kwargs(learning_starts=20)).learn(40)
    ours.save(tmp_path / "ours.zip")
    sb3 = SAC.load(tmp_path / "ours.zip", env=space_env(BOX))
    obs = sample_observations(ours.observation_space, 16)
    np.testing.assert_array_equal(sb3.predict(obs, deterministic=True)[0], ours.predict(obs, deterministic=True)[0])
    sb3.learn(30, reset_num_timesteps=False)  # SB3's train() runs on SACPlus's policy
    assert sb3._n_updates > ours._n_updates


# ------------------------------------------------------------------------------------------- export to plain SB3

EXPORT_VARIANTS = {
    "default": dict(),
    "gsde-3critics-fixed-alpha": dict(use_sde=True, ent_coef=0.1, policy_kwargs=dict(net_arch=[16, 16], n_critics=3)),
}

# Read in a fresh interpreter where importing sac_plus fails: only stable_baselines3 is there.
SB3_ONLY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["sac_plus"] = None  # any unpickling that needs sac_plus raises ImportError
    import numpy as np
    from stable_baselines3 import SAC
    from conftest import SpaceEnv
    from gymnasium import spaces
    path, obs_path = sys.argv[1:3]
    env = SpaceEnv(spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32))
    model = SAC.load(path, env=env)
    actions = model.predict(np.load(obs_path), deterministic=True)[0]
    model.learn(30, reset_num_timesteps=False)
    print(json.dumps(dict(policy=type(model.policy).__module__, actions=actions.tolist(), n_updates=model._n_updates)))
    """
)


@pytest.mark.parametrize("variant", list(EXPORT_VARIANTS.values()), ids=list(EXPORT_VARIANTS))
def test_save_as_sb3_is_read_by_stable_baselines3_without_sac_plus(tmp_path, space_env, fast_kwargs, variant):
    variant = dict(variant)
    kwargs = fast_kwargs(
        learning_starts=20, **({"policy_kwargs": variant.pop("policy_kwargs")} if "policy_kwargs" in variant else {})
    )
    ours = SACPlus("MlpPolicy", space_env(BOX), **kwargs, **variant).learn(40)
    ours.save_as_sb3(tmp_path / "exported")
    obs = sample_observations(ours.observation_space, 16).astype(np.float32)
    np.save(tmp_path / "obs.npy", obs)
    result = subprocess.run(
        [sys.executable, "-c", SB3_ONLY_SCRIPT, str(tmp_path / "exported.zip"), str(tmp_path / "obs.npy")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=pathlib.Path(__file__).parent,
        env={**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parent)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["policy"] == "stable_baselines3.sac.policies"
    np.testing.assert_allclose(loaded["actions"], ours.predict(obs, deterministic=True)[0], atol=1e-6)
    assert loaded["n_updates"] > ours._n_updates


def test_exported_zip_has_only_what_sb3_saves(tmp_path, space_env, fast_kwargs):
    ours = SACPlus("MlpPolicy", space_env(BOX), **fast_kwargs(learning_starts=20)).learn(30)
    ours.save_as_sb3(tmp_path / "exported.zip")
    SAC("MlpPolicy", space_env(BOX), **fast_kwargs(learning_starts=20)).learn(30).save(tmp_path / "sb3.zip")
    with zipfile.ZipFile(tmp_path / "exported.zip") as exported, zipfile.ZipFile(tmp_path / "sb3.zip") as sb3:
        assert sorted(exported.namelist()) == sorted(sb3.namelist())
        exported_keys, sb3_keys = (set(json.loads(z.read("data"))) for z in (exported, sb3))
    assert exported_keys - sb3_keys == set()


def test_round_trip_sacplus_to_sb3_and_back_keeps_everything(tmp_path, space_env, fast_kwargs):
    ours = SACPlus("MlpPolicy", space_env(BOX), **fast_kwargs(learning_starts=20)).learn(40)
    ours.save_as_sb3(tmp_path / "exported.zip")
    back = SACPlus.load_from_sb3(tmp_path / "exported.zip", env=space_env(BOX))
    for name, tensor in ours.policy.state_dict().items():
        assert th.equal(back.policy.state_dict()[name], tensor), name
    assert th.equal(back.log_ent_coef, ours.log_ent_coef)
    assert_optimizer_states_map(ours.critic, ours.critic.optimizer, back.critic, back.critic.optimizer)
    assert_optimizer_states_map(ours.actor, ours.actor.optimizer, back.actor, back.actor.optimizer)
    assert back.critic.optimizer.param_groups[0]["fused"] == ours.critic.optimizer.param_groups[0]["fused"]
    assert (back.num_timesteps, back._n_updates) == (ours.num_timesteps, ours._n_updates)


def test_save_as_sb3_refuses_discrete_actions(tmp_path, space_env, fast_kwargs):
    model = SACPlus("MlpPolicy", space_env(DISCRETE), **fast_kwargs())
    with pytest.raises(ValueError, match=r"save_as_sb3 needs a Box action space: stable_baselines3\.SAC has no Discrete"):
        model.save_as_sb3(tmp_path / "exported.zip")
    assert not (tmp_path / "exported.zip").exists()


# ------------------------------------------------------------------------------------------- logging with callbacks


def _rows_with_train_keys(algorithm, env, tmp_path) -> int:
    model = algorithm("MlpPolicy", env, learning_starts=20, batch_size=16, policy_kwargs=dict(net_arch=[8]), seed=0)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(200, callback=EvalCallback(env, eval_freq=25, n_eval_episodes=1, verbose=0), log_interval=1000)
    with open(tmp_path / "progress.csv") as file:
        return sum(1 for row in csv.DictReader(file) if row.get("train/actor_loss"))


def test_train_keys_reach_every_dump_of_an_eval_callback_as_with_sb3(tmp_path, space_env):
    ours = _rows_with_train_keys(SACPlus, Monitor(space_env(BOX)), tmp_path / "ours")
    sb3 = _rows_with_train_keys(SAC, Monitor(space_env(BOX)), tmp_path / "sb3")
    assert ours == sb3 > 0


@pytest.mark.parametrize("policy", ["CnnPolicy", "MultiInputPolicy"])
def test_save_as_sb3_exports_image_and_dict_policies(tmp_path, policy):
    if policy == "CnnPolicy":
        env = FakeImageEnv(screen_height=36, screen_width=36, n_channels=1, discrete=False)
        policy_kwargs = dict(net_arch=[16], features_extractor_kwargs=dict(features_dim=16), share_features_extractor=True)
    else:
        env = SimpleMultiObsEnv(random_start=False, discrete_actions=False)
        policy_kwargs = dict(net_arch=[16], features_extractor_kwargs=dict(cnn_output_dim=16))
    ours = SACPlus(policy, env, buffer_size=100, learning_starts=20, batch_size=8, policy_kwargs=policy_kwargs, seed=0)
    ours.learn(30)
    ours.save_as_sb3(tmp_path / "exported.zip")
    sb3 = SAC.load(tmp_path / "exported.zip", env=env)
    assert type(sb3.policy) is getattr(sb3_policies, policy)
    obs = sample_observations(ours.observation_space, 4)
    np.testing.assert_allclose(sb3.predict(obs, deterministic=True)[0], ours.predict(obs, deterministic=True)[0], atol=1e-6)
    sb3.learn(10, reset_num_timesteps=False)
