"""Behaviour of the core package: SB3 compatibility, argument checks, the update schedule, initialisation, and
save/load. Every test runs real SB3, Gymnasium and PyTorch code on small networks for a few hundred steps."""

from __future__ import annotations

import copy
import inspect
import itertools
import math
import zipfile

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from nested import assert_nested_equal
from stable_baselines3 import SAC
from stable_baselines3.common.buffers import NStepReplayBuffer, ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import TrainFrequencyUnit
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv
from torch import nn

from sac_plus import SACPlus, policies
from sac_plus.policies import build_optimizer, step_optimizer
from sac_plus.temperature import UpdateSchedule, temperature_gradient, temperature_loss

BOX2 = spaces.Box(-2.0, 2.0, shape=(2,), dtype=np.float32)
DISCRETE4 = spaces.Discrete(4)
TRAIN_KEYS = (
    "train/critic_loss",
    "train/actor_loss",
    "train/ent_coef",
    "train/entropy",
    "train/q_mean",
    "train/target_entropy",
)


def _observations(space: spaces.Space, n: int, seed: int = 0) -> np.ndarray:
    space.seed(seed)
    return np.stack([space.sample() for _ in range(n)])


# ----------------------------------------------------------------------------------------------------------------
# temperature and target entropy


def _default_scale_at(n_updates: int) -> float:
    """The default ``target_entropy_scale`` (a constant or an UpdateSchedule) after ``n_updates`` updates."""
    scale = inspect.signature(SACPlus.__init__).parameters["target_entropy_scale"].default
    return scale.at(n_updates) if isinstance(scale, UpdateSchedule) else scale


@pytest.mark.parametrize(
    ("action_space", "kwargs", "expected"),
    [
        (spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32), {}, -3.0),
        (spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32), {}, -1.0),
        (spaces.Discrete(4), {}, _default_scale_at(0) * math.log(4)),
        (spaces.Discrete(4), {"target_entropy_scale": 0.98}, 0.98 * math.log(4)),
        (spaces.Discrete(4), {"target_entropy_scale": 0.6}, 0.6 * math.log(4)),
        (spaces.Discrete(7), {"target_entropy_scale": 0.6}, 0.6 * math.log(7)),
        (spaces.Discrete(4), {"target_entropy": 0.25}, 0.25),
        (spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32), {"target_entropy": -1.5}, -1.5),
    ],
)
def test_target_entropy_heuristics(space_env, fast_kwargs, action_space, kwargs, expected):
    model = SACPlus("MlpPolicy", space_env(action_space), **fast_kwargs(**kwargs))
    assert isinstance(model.target_entropy, float)
    assert model.target_entropy == pytest.approx(expected, abs=1e-12)


def test_default_discrete_target_anneals_over_updates_whatever_the_learn_calls(fast_kwargs, tmp_path):
    """The default scale goes 0.6 -> 0.1 over the first 100k updates, counted over the model's life."""
    model = SACPlus("MlpPolicy", "CartPole-v1", **fast_kwargs())
    log_n = math.log(2)
    assert model.target_entropy == pytest.approx(0.6 * log_n)
    assert model.target_entropy_scale == UpdateSchedule(0.6, 0.1, 100_000)
    # the schedule at a quarter of the way is halfway to 0.1, wherever training stands
    model._n_updates = 25_000
    model.learn(60)
    assert model.target_entropy == pytest.approx(0.475 * log_n, abs=1e-3 * log_n)
    # one learn() or several, a fresh learn() after a save and load: the same target at the same update
    schedule = UpdateSchedule(0.6, 0.1, 200)
    whole = SACPlus("MlpPolicy", "CartPole-v1", target_entropy_scale=schedule, **fast_kwargs()).learn(300)
    split = SACPlus("MlpPolicy", "CartPole-v1", target_entropy_scale=schedule, **fast_kwargs()).learn(150)
    split.save(tmp_path / "model.zip")
    resumed = SACPlus.load(tmp_path / "model.zip", env=gym.make("CartPole-v1")).learn(150, reset_num_timesteps=False)
    assert resumed._n_updates == whole._n_updates
    assert resumed.target_entropy == pytest.approx(whole.target_entropy)
    assert whole.target_entropy == pytest.approx(schedule.at(whole._n_updates - 1) * log_n)  # read at train()'s start
    # a fresh learn() (num_timesteps reset) goes on from the updates done, it does not restart at 0.6
    fresh = SACPlus.load(tmp_path / "model.zip", env=gym.make("CartPole-v1")).learn(150)
    assert fresh.target_entropy == pytest.approx(schedule.at(fresh._n_updates - 1) * log_n)
    assert fresh.target_entropy < 0.5 * log_n


def test_update_schedule_is_checked(space_env):
    with pytest.raises(ValueError, match=r"target_entropy_scale.end=1.5 is outside \(0, 1\]"):
        SACPlus("MlpPolicy", "CartPole-v1", target_entropy_scale=UpdateSchedule(0.6, 1.5, 10))
    with pytest.raises(ValueError, match=r"target_entropy_scale.updates=0 is not valid"):
        SACPlus("MlpPolicy", "CartPole-v1", target_entropy_scale=UpdateSchedule(0.6, 0.1, 0))


def test_fixed_ent_coef_stays_fixed(space_env, fast_kwargs):
    model = SACPlus("MlpPolicy", space_env(BOX2), **fast_kwargs(ent_coef=0.1))
    assert model.ent_coef_optimizer is None
    model.learn(150)
    assert model.logger.name_to_value["train/ent_coef"] == pytest.approx(0.1, rel=1e-6)
    assert "train/ent_coef_loss" not in model.logger.name_to_value
    assert model.ent_coef_optimizer is None


@pytest.mark.parametrize(("ent_coef", "initial"), [("auto", 1.0), ("auto_0.1", 0.1), ("auto_0.5", 0.5)])
def test_learned_ent_coef_starts_at_its_initial_value_and_moves(space_env, fast_kwargs, ent_coef, initial):
    model = SACPlus("MlpPolicy", space_env(DISCRETE4), **fast_kwargs(ent_coef=ent_coef))
    assert model.ent_coef_optimizer is not None
    assert model.log_ent_coef.exp().item() == pytest.approx(initial, rel=1e-6)
    model.learn(120)
    assert model.log_ent_coef.exp().item() != pytest.approx(initial, rel=1e-6)
    assert math.isfinite(model.logger.name_to_value["train/ent_coef_loss"])


@pytest.mark.parametrize("shape", [(1,), (7, 1), (256, 1), (1000,)])
def test_temperature_gradient_is_autograds_bit_for_bit(shape):
    generator = th.Generator().manual_seed(3)
    for _ in range(20):
        log_ent_coef = th.randn(1, generator=generator).requires_grad_(True)
        mean_log_prob = 3 * th.randn(shape, generator=generator)
        temperature_loss(log_ent_coef, mean_log_prob, -1.7).backward()
        assert th.equal(temperature_gradient(log_ent_coef, mean_log_prob, -1.7), log_ent_coef.grad)


def _two_networks() -> list[nn.Module]:
    return [nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3)) for _ in range(2)]


@pytest.mark.parametrize("kwargs", [{}, {"weight_decay": 0.01, "betas": (0.5, 0.999)}, {"amsgrad": True}, {"foreach": True}])
def test_step_optimizer_moves_parameters_and_state_as_step_does(kwargs):
    th.manual_seed(0)
    nets = _two_networks()
    nets[1].load_state_dict(nets[0].state_dict())
    optimizers = [build_optimizer(th.optim.Adam, net.parameters(), 1e-3, dict(kwargs)) for net in nets]
    generator = th.Generator().manual_seed(1)
    for step in range(6):
        x = th.randn(32, 5, generator=generator)
        for net, optimizer in zip(nets, optimizers, strict=True):
            optimizer.param_groups[0]["lr"] = 1e-3 / (step + 1)  # as SB3's learning-rate schedule sets it
            net.zero_grad(set_to_none=True)
            net(x).pow(2).mean().backward()
        optimizers[0].step()
        step_optimizer(optimizers[1])
    for (name, a), b in zip(nets[0].state_dict().items(), nets[1].state_dict().values(), strict=True):
        assert th.equal(a, b), name
    assert_nested_equal(optimizers[1].state_dict(), optimizers[0].state_dict(), "optimizer")
    # the fused Adam build_optimizer makes is stepped by its kernel directly; AMSGrad and foreach through step()
    direct = bool(optimizers[1].defaults.get("fused")) and not kwargs.get("amsgrad")
    assert (policies._lean_adam_lists(optimizers[1]) is not None) == direct


def test_step_optimizer_steps_past_a_group_without_parameters():
    nets = _two_networks()
    nets[1].load_state_dict(nets[0].state_dict())
    optimizers = [build_optimizer(th.optim.Adam, net.parameters(), 1e-3, {}) for net in nets]
    for optimizer in optimizers:
        optimizer.add_param_group({"params": []})
    for _ in range(3):
        for net in nets:
            net.zero_grad(set_to_none=True)
            net(th.ones(2, 5)).sum().backward()
        optimizers[0].step()
        step_optimizer(optimizers[1])
    assert policies._lean_adam_lists(optimizers[1]) is not None  # the direct kernel call was taken
    for (name, a), b in zip(nets[0].state_dict().items(), nets[1].state_dict().values(), strict=True):
        assert th.equal(a, b), name


def test_step_optimizer_runs_the_hooks_of_step():
    net = _two_networks()[0]
    optimizer = build_optimizer(th.optim.Adam, net.parameters(), 1e-3, {})
    calls = []
    optimizer.register_step_post_hook(lambda *args: calls.append(args))
    for _ in range(3):
        net(th.ones(2, 5)).sum().backward()
        step_optimizer(optimizer)
    assert len(calls) == 3


def test_step_optimizer_calls_a_wrapped_step(recwarn):
    net = _two_networks()[0]
    optimizer = build_optimizer(th.optim.Adam, net.parameters(), 1e-3, {})
    net(th.ones(2, 5)).sum().backward()
    optimizer.step()  # the state exists: the direct kernel call would apply
    scheduler = th.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)  # wraps optimizer.step
    optimizer._opt_called = False
    step_optimizer(optimizer)
    assert optimizer._opt_called  # the scheduler's wrapper ran: no "lr_scheduler.step() before optimizer.step()"
    scheduler.step()
    assert not [w for w in recwarn if "lr_scheduler.step()" in str(w.message)]


# ----------------------------------------------------------------------------------------------------------------
# SB3 compatibility: keywords, environments


def test_accepts_every_keyword_of_sb3_sac_with_the_same_default():
    sac = inspect.signature(SAC.__init__).parameters
    ours = inspect.signature(SACPlus.__init__).parameters
    missing = [name for name in sac if name not in ours]
    assert not missing, f"SACPlus.__init__ lacks SAC keywords {missing}"
    different = {name: (p.default, ours[name].default) for name, p in sac.items() if p.default != ours[name].default}
    assert not different, f"defaults differ (SAC, SACPlus): {different}"
    # keyword-only or positional-or-keyword, as in SAC (no keyword became positional-only)
    assert all(ours[name].kind == p.kind for name, p in sac.items())
    # SAC's parameters keep their relative order (positional callers of the first ones are not broken)
    assert [name for name in ours if name in sac] == list(sac)


def _non_default_sac_keywords(tmp_path) -> dict:
    """A value different from SAC's default for every keyword SAC accepts (except policy and env)."""
    return dict(
        learning_rate=lambda progress_remaining: 1e-4 + 1e-3 * progress_remaining,
        buffer_size=5_000,
        learning_starts=50,
        batch_size=32,
        tau=0.02,
        gamma=0.95,
        train_freq=(1, "episode"),
        gradient_steps=-1,
        action_noise=NormalActionNoise(np.zeros(1), 0.1 * np.ones(1)),
        replay_buffer_class=ReplayBuffer,
        replay_buffer_kwargs=dict(handle_timeout_termination=False),
        optimize_memory_usage=True,
        n_steps=3,
        ent_coef="auto_0.5",
        target_update_interval=2,
        target_entropy=-0.5,
        use_sde=True,
        sde_sample_freq=4,
        use_sde_at_warmup=True,
        stats_window_size=10,
        tensorboard_log=str(tmp_path / "tb"),
        policy_kwargs=dict(n_critics=3, net_arch=[64, 64]),
        verbose=1,
        seed=3,
        device="cpu",
        _init_setup_model=False,
    )


def test_construct_and_learn_with_non_default_values_of_all_sac_keywords(tmp_path):
    kwargs = _non_default_sac_keywords(tmp_path)
    sac = inspect.signature(SAC.__init__).parameters
    assert set(kwargs) == set(sac) - {"self", "policy", "env"}, "a SAC keyword is not covered by this test"
    for name, value in kwargs.items():
        if not callable(value) and name != "action_noise":
            assert value != sac[name].default, name

    # n_steps is ignored (with SB3's warning) when a replay_buffer_class is given, as in SAC; it is checked below
    with pytest.warns(UserWarning, match="n_steps"):
        model = SACPlus("MlpPolicy", "Pendulum-v1", **kwargs)
        model._setup_model()
    model.learn(400)

    assert model.num_timesteps == 400
    assert model.train_freq.unit == TrainFrequencyUnit.EPISODE
    assert model.critic.n_critics == 3 and model.critic_target.n_critics == 3
    assert model.actor.use_sde and model.use_sde and model.sde_sample_freq == 4
    assert type(model.replay_buffer) is ReplayBuffer
    assert model.replay_buffer.optimize_memory_usage and not model.replay_buffer.handle_timeout_termination
    assert model.target_entropy == -0.5 and model.target_update_interval == 2
    assert model.gamma == 0.95 and model.tau == 0.02 and model.batch_size == 32
    # gradient_steps=-1 with one episode per rollout: one update per environment step after learning starts
    assert model._n_updates == 400
    # the learning-rate schedule is applied to all three optimizers: progress_remaining is 0 at the last update
    assert model.logger.name_to_value["train/learning_rate"] == pytest.approx(1e-4)
    for optimizer in (model.actor.optimizer, model.critic.optimizer, model.ent_coef_optimizer):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    for key in TRAIN_KEYS:
        assert math.isfinite(model.logger.name_to_value[key]), key
    assert any((tmp_path / "tb").rglob("events.out.tfevents.*")), "no tensorboard event file written"


def test_n_steps_uses_the_n_step_buffer(fast_kwargs):
    model = SACPlus("MlpPolicy", "Pendulum-v1", **fast_kwargs(n_steps=3, gamma=0.9))
    assert isinstance(model.replay_buffer, NStepReplayBuffer)
    model.learn(200)
    data = model.replay_buffer.sample(64)
    assert data.discounts is not None
    # gamma^k with k <= 3 steps actually taken
    assert th.all(data.discounts <= 0.9 + 1e-6) and th.all(data.discounts >= 0.9**3 - 1e-6)
    for key in TRAIN_KEYS:
        assert math.isfinite(model.logger.name_to_value[key]), key


@pytest.mark.parametrize(
    ("make_env", "n_envs"),
    [
        (lambda: "CartPole-v1", 1),
        (lambda: gym.make("Pendulum-v1"), 1),
        (lambda: DummyVecEnv([lambda: gym.make("CartPole-v1")] * 2), 2),
    ],
    ids=["id-string", "gymnasium-env", "dummy-vec-env-2"],
)
def test_env_given_as_id_gymnasium_env_or_vec_env(fast_kwargs, make_env, n_envs):
    model = SACPlus("MlpPolicy", make_env(), **fast_kwargs())
    assert isinstance(model.get_env(), VecEnv)
    assert model.n_envs == n_envs
    model.learn(200)
    assert model.num_timesteps == 200
    assert model.replay_buffer.size() == 200 // n_envs  # one row per vectorised step, n_envs columns
    assert model._n_updates > 0
    for key in TRAIN_KEYS:
        assert math.isfinite(model.logger.name_to_value[key]), key


def test_box_actions_are_rescaled_to_the_bounds(space_env, fast_kwargs):
    space = spaces.Box(np.array([-2.0, 0.0], dtype=np.float32), np.array([2.0, 10.0], dtype=np.float32))
    model = SACPlus("MlpPolicy", space_env(space), **fast_kwargs())
    obs = _observations(model.observation_space, 500)
    actions, _ = model.predict(obs, deterministic=False)
    assert actions.shape == (500, 2)
    assert np.all(actions >= space.low) and np.all(actions <= space.high)
    # a policy of std ~1 around tanh(0) covers much of each interval, not only [-1, 1]
    assert actions[:, 0].max() > 1.0 and actions[:, 1].max() > 5.0 + 2.0 and actions[:, 1].min() < 5.0 - 2.0


def test_discrete_predictions_are_valid_actions(space_env, fast_kwargs):
    model = SACPlus("MlpPolicy", space_env(DISCRETE4), **fast_kwargs())
    obs = _observations(model.observation_space, 200)
    actions, _ = model.predict(obs, deterministic=False)
    assert actions.shape == (200,)
    assert set(np.unique(actions)) <= {0, 1, 2, 3}
    assert len(np.unique(actions)) > 1  # a near-uniform initial policy samples several actions


# ----------------------------------------------------------------------------------------------------------------
# bad input fails at construction, naming the argument and the value


def _assert_names(error: BaseException, *fragments: str) -> None:
    message = str(error)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in error message {message!r}"


@pytest.mark.parametrize(
    ("action_space", "name"),
    [
        (spaces.MultiDiscrete([3, 3]), "MultiDiscrete"),
        (spaces.MultiBinary(3), "MultiBinary"),
        (spaces.Tuple((spaces.Discrete(2), spaces.Discrete(3))), "Tuple"),
        (spaces.Dict({"a": spaces.Discrete(2), "b": spaces.Discrete(3)}), "Dict"),
    ],
)
def test_unsupported_action_spaces_are_rejected(space_env, fast_kwargs, action_space, name):
    with pytest.raises((TypeError, ValueError)) as info:
        SACPlus("MlpPolicy", space_env(action_space), **fast_kwargs())
    _assert_names(info.value, "action_space", name, "Box", "Discrete")


@pytest.mark.parametrize(
    "action_space",
    [
        spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32),
        spaces.Box(np.array([-1.0, -np.inf], dtype=np.float32), np.array([1.0, 1.0], dtype=np.float32)),
    ],
    ids=["both-infinite", "one-infinite"],
)
def test_box_with_non_finite_bounds_is_rejected(space_env, fast_kwargs, action_space):
    with pytest.raises((TypeError, ValueError)) as info:
        SACPlus("MlpPolicy", space_env(action_space), **fast_kwargs())
    _assert_names(info.value, "action_space", "inf")


def test_discrete_not_starting_at_zero_is_rejected(space_env, fast_kwargs):
    with pytest.raises((TypeError, ValueError)) as info:
        SACPlus("MlpPolicy", space_env(spaces.Discrete(3, start=1)), **fast_kwargs())
    _assert_names(info.value, "action_space", "start")


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        ({"ent_coef": "foo"}, ("ent_coef", "'foo'")),
        ({"ent_coef": "auto_x"}, ("ent_coef", "'auto_x'")),
        ({"ent_coef": "auto_-1"}, ("ent_coef", "'auto_-1'")),
        ({"ent_coef": "auto_0"}, ("ent_coef", "'auto_0'")),
        ({"ent_coef": -0.1}, ("ent_coef", "-0.1")),
        ({"ent_coef": 0.0}, ("ent_coef", "0.0")),
        ({"ent_coef": None}, ("ent_coef", "None")),
        ({"target_entropy_scale": 0}, ("target_entropy_scale", "0")),
        ({"target_entropy_scale": -1}, ("target_entropy_scale", "-1")),
        ({"target_entropy_scale": 1.5}, ("target_entropy_scale", "1.5")),
        ({"target_update_interval": 0}, ("target_update_interval", "0")),
        ({"target_update_interval": -2}, ("target_update_interval", "-2")),
        ({"target_entropy": "high"}, ("target_entropy", "'high'")),
        ({"target_entropy": float("nan")}, ("target_entropy", "nan")),
        ({"policy_kwargs": {"init_scheme": "xavier"}}, ("init_scheme", "'xavier'")),
        ({"policy_kwargs": {"n_critics": 0}}, ("n_critics", "0")),
        ({"policy_kwargs": {"tanh_jacobian_eps": 0.0}}, ("tanh_jacobian_eps", "0.0")),
        ({"policy_kwargs": {"tanh_jacobian_eps": "sb3"}}, ("tanh_jacobian_eps", "'sb3'")),
    ],
    ids=lambda value: str(value) if isinstance(value, dict) else "",
)
def test_bad_arguments_are_rejected_with_their_name_and_value(space_env, fast_kwargs, kwargs, fragments):
    with pytest.raises((TypeError, ValueError)) as info:
        SACPlus("MlpPolicy", space_env(DISCRETE4), **fast_kwargs(**kwargs))
    _assert_names(info.value, *fragments)


def test_use_sde_with_discrete_actions_is_rejected(space_env, fast_kwargs):
    with pytest.raises((TypeError, ValueError)) as info:
        SACPlus("MlpPolicy", space_env(DISCRETE4), **fast_kwargs(use_sde=True))
    _assert_names(info.value, "use_sde", "Discrete")


# ----------------------------------------------------------------------------------------------------------------
# short learning runs


@pytest.mark.parametrize(
    ("env_id", "target_entropy"), [("Pendulum-v1", -1.0), ("CartPole-v1", _default_scale_at(249) * math.log(2))]
)
def test_short_learn_logs_finite_losses(fast_kwargs, env_id, target_entropy):
    model = SACPlus("MlpPolicy", env_id, **fast_kwargs())
    model.learn(300)
    logged = model.logger.name_to_value
    for key in TRAIN_KEYS:
        assert key in logged and math.isfinite(logged[key]), key
    assert logged["train/target_entropy"] == pytest.approx(target_entropy)  # read at the last train() call's start
    assert logged["train/ent_coef"] > 0
    # SB3's schedule: one update per step once num_timesteps > learning_starts
    assert model._n_updates == logged["train/n_updates"] == 300 - 50
    for param in itertools.chain(model.actor.parameters(), model.critic.parameters()):
        assert th.isfinite(param).all()


# ----------------------------------------------------------------------------------------------------------------
# target critics: Polyak averaging every target_update_interval updates, counted across learn() calls


class _Snapshots(BaseCallback):
    """Records (updates done, target critic, critic) after every environment step, i.e. between train() calls."""

    def __init__(self, snapshots: list):
        super().__init__()
        self.snapshots = snapshots

    def _on_step(self) -> bool:
        self.snapshots.append(_snapshot(self.model))
        return True


def _snapshot(model: SACPlus):
    target = [p.detach().clone() for p in model.critic_target.parameters()]
    critic = [p.detach().clone() for p in model.critic.parameters()]
    return model._n_updates, target, critic


def test_target_update_interval_counts_updates_across_learn_calls(space_env, fast_kwargs):
    tau, interval = 0.2, 3
    # a large learning rate makes the critic move visibly in one step, so that a Polyak update made with the
    # critic from before the gradient step would be told apart from one made after it
    model = SACPlus(
        "MlpPolicy",
        space_env(BOX2),
        **fast_kwargs(learning_starts=20, batch_size=16, tau=tau, target_update_interval=interval, learning_rate=1e-2),
    )
    assert_nested_equal(
        [p.detach() for p in model.critic_target.parameters()], [p.detach() for p in model.critic.parameters()]
    )

    snapshots = [_snapshot(model)]
    model.learn(30, callback=_Snapshots(snapshots))  # 10 updates: 0..9
    snapshots.append(_snapshot(model))
    assert model._n_updates == 10
    model.learn(20, callback=_Snapshots(snapshots), reset_num_timesteps=False)  # 20 updates: 10..29
    snapshots.append(_snapshot(model))
    assert model._n_updates == 30

    updated_at = []
    for (u0, target0, _), (u1, target1, critic1) in itertools.pairwise(snapshots):
        assert u1 - u0 in (0, 1), "more than one update between two snapshots"
        if u1 == u0 + 1 and u0 % interval == 0:
            updated_at.append(u0)
            # target <- (1 - tau) target + tau critic, with the critic after this update's gradient step
            for t0, t1, c1 in zip(target0, target1, critic1, strict=True):
                th.testing.assert_close(t1, (1 - tau) * t0 + tau * c1)
                assert not th.equal(t1, t0)
        else:
            assert_nested_equal(target1, target0)
    # update 10 is the first of the second learn() call: a count restarted per call would update there
    assert updated_at == list(range(0, 30, interval))


@pytest.mark.parametrize("action_space", [BOX2, DISCRETE4], ids=["box", "discrete"])
def test_train_with_zero_gradient_steps_changes_nothing(space_env, fast_kwargs, action_space):
    # SB3's train(0) is a no-op (e.g. gradient_steps=0 with a schedule); it must not fail on an empty window
    model = SACPlus("MlpPolicy", space_env(action_space), **fast_kwargs(learning_starts=10, batch_size=8))
    model.learn(20)
    before = copy.deepcopy(model.policy.state_dict())
    n_updates = model._n_updates
    model.train(0, 8)
    model.logger.dump(model.num_timesteps)
    assert model._n_updates == n_updates
    assert_nested_equal(dict(model.policy.state_dict()), before)


# ----------------------------------------------------------------------------------------------------------------
# gradients: the actor step computes no critic weight gradients; the critic step none for the actor


@pytest.mark.parametrize("action_space", [BOX2, DISCRETE4], ids=["box", "discrete"])
def test_actor_step_computes_no_critic_gradients(space_env, fast_kwargs, action_space):
    model = SACPlus(
        "MlpPolicy", space_env(action_space), **fast_kwargs(policy_kwargs=dict(net_arch=[32, 32], init_scheme="pytorch"))
    )
    obs = th.as_tensor(_observations(model.observation_space, 32))
    alpha = model._current_ent_coef()

    th.manual_seed(0)
    model._actor_loss(obs, alpha)[0].backward()
    for name, param in itertools.chain(model.critic.named_parameters(), model.critic_target.named_parameters()):
        assert param.grad is None, name
    # the freeze is undone: the critic step can still train every critic weight
    assert all(p.requires_grad for p in model.critic.parameters())
    actor_grads = {name: p.grad.clone() for name, p in model.actor.named_parameters()}
    assert all(g is not None and th.isfinite(g).all() for g in actor_grads.values())
    assert any(g.abs().sum() > 0 for g in actor_grads.values())

    # Freezing the critics changes nothing for the actor: same gradients as the plain loss -mean V(s).
    model.actor.zero_grad(set_to_none=True)
    th.manual_seed(0)
    (-model.policy.soft_value(obs, model.critic, alpha).value.mean()).backward()
    for name, param in model.actor.named_parameters():
        th.testing.assert_close(param.grad, actor_grads[name], msg=name)
    assert any(p.grad is not None for p in model.critic.parameters())  # control: the plain loss does reach them


@pytest.mark.parametrize("action_space", [BOX2, DISCRETE4], ids=["box", "discrete"])
def test_critic_step_computes_no_actor_gradients(space_env, fast_kwargs, action_space):
    model = SACPlus("MlpPolicy", space_env(action_space), **fast_kwargs())
    model.learn(80)
    for param in itertools.chain(model.actor.parameters(), model.critic.parameters()):
        param.grad = None
    data = model.replay_buffer.sample(32)
    loss, _ = model._critic_loss(data, model._current_ent_coef())
    loss.backward()
    assert all(p.grad is None for p in model.actor.parameters())
    assert all(p.grad is not None for p in model.critic.parameters())
    assert all(p.grad is None for p in model.critic_target.parameters())


# ----------------------------------------------------------------------------------------------------------------
# initialisation: hidden and final layers differ under init_scheme="orthogonal"; "pytorch" is PyTorch's default


def _layers(model: SACPlus) -> tuple[list[th.Tensor], list[th.Tensor], list[th.Tensor], list[th.Tensor]]:
    """Weights as [out, in] matrices and biases: (hidden weights, hidden biases, final weights, final biases)."""
    hidden_w, hidden_b, final_w, final_b = [], [], [], []
    actor_linears = [m for m in model.actor.latent_pi.modules() if isinstance(m, nn.Linear)]
    heads = [m for name, m in model.actor.named_children() if isinstance(m, nn.Linear) and name != "latent_pi"]
    assert actor_linears and heads
    hidden_w += [m.weight.detach() for m in actor_linears]
    hidden_b += [m.bias.detach() for m in actor_linears]
    final_w += [m.weight.detach() for m in heads]
    final_b += [m.bias.detach() for m in heads]
    for q_net in model.critic.q_networks:
        linears = [m for m in q_net if isinstance(m, nn.Linear)]
        hidden_w += [m.weight.detach() for m in linears[:-1]]
        hidden_b += [m.bias.detach() for m in linears[:-1]]
        final_w.append(linears[-1].weight.detach())
        final_b.append(linears[-1].bias.detach())
    return hidden_w, hidden_b, final_w, final_b


@pytest.mark.parametrize("action_space", [BOX2, DISCRETE4], ids=["box", "discrete"])
def test_orthogonal_init_scheme(space_env, fast_kwargs, action_space):
    model = SACPlus(
        "MlpPolicy", space_env(action_space), **fast_kwargs(policy_kwargs=dict(net_arch=[64, 64], init_scheme="orthogonal"))
    )
    hidden_w, hidden_b, final_w, final_b = _layers(model)
    assert len(hidden_w) == 2 + 2 * 2  # two actor layers, two layers for each of two critics
    for w in final_w + final_b:
        assert w.abs().max() <= 3e-3
        if w.numel() >= 32:
            assert w.abs().max() > 2e-3  # uniform in +-3e-3, not zero
    for w, b in zip(hidden_w, hidden_b, strict=True):
        assert th.all(b == 0)
        out_dim, in_dim = w.shape
        # orthogonal with gain sqrt(2): orthonormal rows (or columns, whichever are fewer) times sqrt(2)
        gram = w @ w.T if out_dim <= in_dim else w.T @ w
        th.testing.assert_close(gram, 2.0 * th.eye(min(out_dim, in_dim)), atol=1e-5, rtol=0)
    # the two critics are initialised independently
    assert not th.equal(model.critic.qf0[0].weight, model.critic.qf1[0].weight)
    assert_nested_equal(model.critic_target.state_dict(), model.critic.state_dict())


@pytest.mark.parametrize("action_space", [BOX2, DISCRETE4], ids=["box", "discrete"])
def test_pytorch_init_scheme(space_env, fast_kwargs, action_space):
    model = SACPlus(
        "MlpPolicy", space_env(action_space), **fast_kwargs(policy_kwargs=dict(net_arch=[64, 64], init_scheme="pytorch"))
    )
    hidden_w, hidden_b, final_w, final_b = _layers(model)
    for w, b in zip(hidden_w + final_w, hidden_b + final_b, strict=True):
        # nn.Linear's default: weight and bias uniform in +-1/sqrt(fan_in)
        bound = 1.0 / math.sqrt(w.shape[1])
        assert w.abs().max() <= bound and b.abs().max() <= bound
        if w.numel() >= 64:
            assert w.abs().max() > 0.8 * bound
            assert w.std().item() == pytest.approx(bound / math.sqrt(3.0), rel=0.25)
        assert b.abs().max() > 0
    for w in hidden_w:
        if w.shape[0] == w.shape[1]:
            assert not th.allclose(w @ w.T, 2.0 * th.eye(w.shape[0]), atol=0.1)
    assert any(w.abs().max() > 3e-3 for w in final_w)


# ----------------------------------------------------------------------------------------------------------------
# save / load


@pytest.mark.parametrize(
    ("action_space", "other_space"),
    [(BOX2, spaces.Box(-2.0, 2.0, shape=(3,), dtype=np.float32)), (DISCRETE4, spaces.Discrete(5))],
    ids=["box", "discrete"],
)
def test_save_load_round_trip(tmp_path, space_env, fast_kwargs, action_space, other_space):
    model = SACPlus("MlpPolicy", space_env(action_space), **fast_kwargs(learning_starts=30))
    model.learn(120)
    path = tmp_path / "model.zip"
    model.save(path)

    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
    expected = {"data", "policy.pth", "actor.optimizer.pth", "critic.optimizer.pth", "ent_coef_optimizer.pth"}
    assert expected | {"pytorch_variables.pth", "_stable_baselines3_version"} <= names

    loaded = SACPlus.load(path, env=space_env(action_space), device="cpu")
    obs = _observations(model.observation_space, 32, seed=1)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    assert_nested_equal(loaded.policy.state_dict(), model.policy.state_dict(), "policy")
    assert_nested_equal(list(loaded.critic_target.parameters()), list(model.critic_target.parameters()), "critic_target")
    assert_nested_equal(loaded.log_ent_coef.detach(), model.log_ent_coef.detach(), "log_ent_coef")
    assert_nested_equal(loaded.ent_coef_optimizer.state_dict(), model.ent_coef_optimizer.state_dict(), "ent_coef_optimizer")
    assert_nested_equal(loaded.actor.optimizer.state_dict(), model.actor.optimizer.state_dict(), "actor.optimizer")
    assert_nested_equal(loaded.critic.optimizer.state_dict(), model.critic.optimizer.state_dict(), "critic.optimizer")
    assert loaded._n_updates == model._n_updates == 90
    assert loaded.num_timesteps == model.num_timesteps == 120
    assert loaded.target_entropy == model.target_entropy
    # the loaded optimizers and the Polyak update act on the loaded networks (not on stale copies)
    assert loaded.ent_coef_optimizer.param_groups[0]["params"][0] is loaded.log_ent_coef
    assert {id(p) for g in loaded.critic.optimizer.param_groups for p in g["params"]} == {
        id(p) for p in loaded.critic.parameters()
    }

    buffer_path = tmp_path / "buffer.pkl"
    model.save_replay_buffer(buffer_path)
    loaded.load_replay_buffer(buffer_path)
    assert loaded.replay_buffer.size() == model.replay_buffer.size() == 120
    assert loaded.replay_buffer.pos == model.replay_buffer.pos
    np.testing.assert_array_equal(loaded.replay_buffer.observations, model.replay_buffer.observations)
    np.testing.assert_array_equal(loaded.replay_buffer.actions, model.replay_buffer.actions)

    target_before = [p.detach().clone() for p in loaded.critic_target.parameters()]
    loaded.learn(40, reset_num_timesteps=False)
    assert loaded.num_timesteps == 160
    assert loaded._n_updates == 130  # training goes on at once: learning_starts is already passed
    assert loaded.replay_buffer.size() == 160
    assert not all(th.equal(a, b) for a, b in zip(target_before, loaded.critic_target.parameters(), strict=True))
    for key in TRAIN_KEYS:
        assert math.isfinite(loaded.logger.name_to_value[key]), key

    with pytest.raises(ValueError, match=r"(?i)action space") as info:
        SACPlus.load(path, env=space_env(other_space), device="cpu")
    assert str(action_space) in str(info.value) or str(other_space) in str(info.value)


def test_save_load_fixed_ent_coef(tmp_path, space_env, fast_kwargs):
    model = SACPlus("MlpPolicy", space_env(DISCRETE4), **fast_kwargs(ent_coef=0.2))
    path = tmp_path / "fixed"  # no suffix: ".zip" is appended, as SB3 does
    model.save(path)
    assert (tmp_path / "fixed.zip").is_file()
    with zipfile.ZipFile(tmp_path / "fixed.zip") as archive:
        assert "ent_coef_optimizer.pth" not in archive.namelist()
    loaded = SACPlus.load(tmp_path / "fixed.zip", env=space_env(DISCRETE4), device="cpu")
    assert loaded.ent_coef_optimizer is None
    assert loaded._current_ent_coef().item() == pytest.approx(0.2)
    loaded.learn(80)
    assert loaded.logger.name_to_value["train/ent_coef"] == pytest.approx(0.2)


# ----------------------------------------------------------------------------------------------------------------
# atomic save


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("this object cannot be pickled")


class _FailingParameters(SACPlus):
    def get_parameters(self):
        raise RuntimeError("get_parameters failed")


def _partial_files(directory) -> list:
    return [p for p in directory.iterdir() if ".partial." in p.name]


def test_save_writes_through_a_symbolic_link_as_sb3(tmp_path, space_env, fast_kwargs):
    # SB3's open(path, "wb") writes through a link (e.g. latest.zip -> runs/7/model.zip): the link stays a link
    model = SACPlus("MlpPolicy", space_env(BOX2), **fast_kwargs())
    (tmp_path / "runs").mkdir()
    target = tmp_path / "runs" / "model.zip"
    target.write_bytes(b"")
    link = tmp_path / "latest.zip"
    link.symlink_to(target)
    model.save(link)
    assert link.is_symlink() and target.stat().st_size > 0
    assert _partial_files(tmp_path / "runs") == [] and _partial_files(tmp_path) == []
    SACPlus.load(link, env=space_env(BOX2))


def test_load_errors_keep_sb3s_type_and_name_the_file(tmp_path, space_env, fast_kwargs):
    # a state dict that does not fit the policy is a RuntimeError in SB3's load; handlers written for it still work
    SACPlus("MlpPolicy", space_env(BOX2), **fast_kwargs(policy_kwargs=dict(net_arch=[32]))).save(tmp_path / "m.zip")
    with pytest.raises(RuntimeError, match=r"(?s)Could not load .*m\.zip into SACPlus: RuntimeError: .*size mismatch"):
        SACPlus.load(tmp_path / "m.zip", custom_objects={"policy_kwargs": dict(net_arch=[16])})


def test_failed_save_midway_leaves_the_previous_file(tmp_path, space_env, fast_kwargs):
    model = SACPlus("MlpPolicy", space_env(BOX2), **fast_kwargs())
    path = tmp_path / "model.zip"
    model.save(path)
    before = path.read_bytes()
    obs = _observations(model.observation_space, 8)
    expected_actions = model.predict(obs, deterministic=True)[0]

    # An object that fails in th.save(pytorch_variables): the zip already holds "data" when it fails.
    model.log_ent_coef = _Unpicklable()
    with pytest.raises(RuntimeError, match="cannot be pickled"):
        model.save(path)
    assert path.read_bytes() == before
    assert _partial_files(tmp_path) == []
    loaded = SACPlus.load(path, env=space_env(BOX2), device="cpu")
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], expected_actions)

    # The same failure when saving to a new path: no file (and no temporary file) is left behind.
    with pytest.raises(RuntimeError, match="cannot be pickled"):
        model.save(tmp_path / "new_model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.zip"]


def test_failed_get_parameters_leaves_the_previous_file(tmp_path, space_env, fast_kwargs):
    model = _FailingParameters("MlpPolicy", space_env(DISCRETE4), **fast_kwargs())
    path = tmp_path / "model.zip"
    SACPlus.save(SACPlus("MlpPolicy", space_env(DISCRETE4), **fast_kwargs()), path)
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="get_parameters failed"):
        model.save(path)
    assert path.read_bytes() == before
    assert _partial_files(tmp_path) == []
    SACPlus.load(path, device="cpu")


def test_target_entropy_scale_schedule_anneals_the_discrete_target(fast_kwargs):
    """A schedule of the remaining progress (as for learning_rate) moves the target as training goes."""
    schedule = LinearSchedule(0.9, 0.3, 1.0)
    model = SACPlus("MlpPolicy", "CartPole-v1", target_entropy_scale=schedule, **fast_kwargs())
    log_n = math.log(2)
    assert model.target_entropy == pytest.approx(0.9 * log_n)
    model.learn(400)
    # the last train() call read the schedule at a remaining progress close to 0
    assert 0.3 * log_n - 1e-9 <= model.target_entropy < 0.35 * log_n
    assert model.logger.name_to_value["train/target_entropy"] == pytest.approx(model.target_entropy)


@pytest.mark.parametrize("schedule", [lambda p: 0.0, lambda p: 1.5 * p + 0.1])
def test_target_entropy_scale_schedule_out_of_range_is_rejected(schedule):
    with pytest.raises(ValueError, match=r"target_entropy_scale\((1|0)\)"):
        SACPlus("MlpPolicy", "CartPole-v1", target_entropy_scale=schedule)


def test_a_target_entropy_assigned_after_construction_is_used(fast_kwargs):
    """As with SB3's SAC, ``model.target_entropy = x`` changes the target of the next updates."""
    model = SACPlus("MlpPolicy", "Pendulum-v1", **fast_kwargs())
    model.target_entropy = -3.0
    model.learn(100)
    assert model.target_entropy == -3.0
    assert model.logger.name_to_value["train/target_entropy"] == -3.0


class BatchNormExtractor(BaseFeaturesExtractor):
    """A features extractor whose output depends on train/eval mode."""

    def __init__(self, observation_space: spaces.Box):
        super().__init__(observation_space, features_dim=8)
        self.net = th.nn.Sequential(th.nn.Linear(int(np.prod(observation_space.shape)), 8), th.nn.BatchNorm1d(8))

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.net(observations)


def test_set_training_mode_reaches_every_module(space_env, fast_kwargs):
    model = SACPlus(
        "MlpPolicy",
        space_env(BOX2),
        **fast_kwargs(policy_kwargs=dict(net_arch=[8], features_extractor_class=BatchNormExtractor)),
    )
    modules = [*model.actor.modules(), *model.critic.modules()]
    assert any(isinstance(m, th.nn.BatchNorm1d) for m in modules)
    for mode in (False, True, False):
        model.policy.set_training_mode(mode)
        assert all(m.training is mode for m in modules) and model.policy.training is mode
    model.learn(80)  # batch norm in train mode for the updates, eval mode to act
    batch_norm = next(m for m in model.critic.modules() if isinstance(m, th.nn.BatchNorm1d))
    assert batch_norm.num_batches_tracked > 0
    # a new actor is seen
    model.policy.actor = model.policy.make_actor()
    model.policy.set_training_mode(True)
    assert all(m.training for m in model.policy.actor.modules())
