"""The fused gradient path (sac_plus.fused) against autograd on the same model, batch and random draws, and which
policies it covers. The whole update of both paths against an independent reference is in test_equivalence.py."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.torch_layers import FlattenExtractor
from torch import nn

from sac_plus import SACPlus, fused
from sac_plus.presets import CROSSQ

BATCH = 64


def trained_model(**kwargs) -> SACPlus:
    settings = dict(policy="MlpPolicy", env="Pendulum-v1", policy_kwargs=dict(net_arch=[32, 32]), seed=0, device="cpu")
    model = SACPlus(**{**settings, **kwargs, "learning_starts": BATCH, "batch_size": BATCH})
    model.learn(BATCH + 20)
    return model


def gradients(model: SACPlus, path: fused.FusedGradients | None, data) -> tuple[dict[str, th.Tensor], list[th.Tensor]]:
    """Every ``.grad`` and the returned statistics of one critic and one actor gradient computation by ``path``."""
    for param in model.policy.parameters():
        param.grad = None
    model._fused = path
    th.manual_seed(3)
    ent_coef = model._current_ent_coef()
    critic_loss, q_mean = model._critic_gradients(data, ent_coef)
    actor_loss, log_prob, saturation = model._actor_gradients(data.observations, ent_coef)
    grads = {name: p.grad.clone() for name, p in model.policy.named_parameters() if p.grad is not None}
    return grads, [critic_loss.detach(), q_mean, actor_loss.detach(), log_prob.detach(), saturation]


CASES = {
    "default": dict(),
    "sb3-log-density": dict(policy_kwargs=dict(net_arch=[32, 32], tanh_jacobian_eps=1e-6)),
    "one-layer": dict(policy_kwargs=dict(net_arch=[16])),
    "three-layers-3-critics": dict(policy_kwargs=dict(net_arch=[24, 16, 8], n_critics=3)),
    "1-critic": dict(policy_kwargs=dict(net_arch=[32, 32], n_critics=1)),
    "separate-arch": dict(policy_kwargs=dict(net_arch=dict(pi=[16], qf=[32, 8]))),
    "fixed-alpha-nstep": dict(ent_coef=0.3, n_steps=3),
    "2d-actions": dict(env="LunarLanderContinuous-v3"),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_fused_gradients_are_autograd_s(case) -> None:
    model = trained_model(**copy.deepcopy(case))
    path = fused.fused_gradients_for(model.policy)
    assert path is not None
    with th.no_grad():  # log sigma above the clip for some units, so that the clip's gradient mask matters
        model.actor.log_std.bias[0] += 2.5
    data = model.replay_buffer.sample(BATCH)
    expected, expected_stats = gradients(model, None, data)
    got, got_stats = gradients(model, path, data)
    assert sorted(got) == sorted(expected)
    assert not any(name.startswith("critic_target") for name in got)
    for name in expected:
        th.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)
    for got_stat, expected_stat in zip(got_stats, expected_stats, strict=True):
        th.testing.assert_close(got_stat, expected_stat, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("policy_delay", [1, 2])
def test_training_by_either_path_gives_the_same_model(monkeypatch, policy_delay) -> None:
    models = {}
    for mode in ("on", "off"):
        monkeypatch.setenv("SAC_PLUS_FUSED", mode)
        models[mode] = trained_model(policy_delay=policy_delay)
        models[mode].learn(100, reset_num_timesteps=False)
    assert models["on"].gradient_path == "fused" and models["off"].gradient_path == "autograd"
    on, off = models["on"].policy.state_dict(), models["off"].policy.state_dict()
    for name in off:
        th.testing.assert_close(on[name], off[name], rtol=1e-3, atol=1e-5, msg=name)


def test_the_measurement_changes_no_result(monkeypatch) -> None:
    monkeypatch.setattr(fused, "_choices", {})
    model = trained_model()
    assert model.gradient_path in ("fused", "autograd")
    (choice,) = fused.gradient_path_choices()
    assert choice["batch_size"] == BATCH and set(choice["times_us"]) == {"autograd", "fused"}
    # the faster path is kept, without a margin (the two compute the same gradients)
    assert choice["fused"] == (choice["times_us"]["fused"] < choice["times_us"]["autograd"])
    assert model.gradient_path == ("fused" if choice["fused"] else "autograd")
    # a model whose first update measures gets the same first update as one whose choice is already made
    monkeypatch.setattr(fused, "_choices", {})
    models = [trained_model() for _ in range(2)]  # the first measures, the second reads the cache
    for name, tensor in models[0].policy.state_dict().items():
        assert th.equal(tensor, models[1].policy.state_dict()[name]), name
    assert np.array_equal(models[0].replay_buffer.actions, models[1].replay_buffer.actions)


def test_the_choice_is_visible(monkeypatch, capsys) -> None:
    monkeypatch.setenv("SAC_PLUS_FUSED", "off")
    model = SACPlus("MlpPolicy", "Pendulum-v1", learning_starts=10, batch_size=8, verbose=1, seed=0)
    assert model.gradient_path is None
    model.learn(20)
    assert model.gradient_path == "autograd"
    assert "gradients computed by autograd" in capsys.readouterr().out


def test_a_bad_override_is_named(monkeypatch) -> None:
    monkeypatch.setenv("SAC_PLUS_FUSED", "yes")
    with pytest.raises(ValueError, match=r"SAC_PLUS_FUSED='yes'.*accepted: auto, on, off"):
        fused.fused_mode()


class OwnCriticLoss(SACPlus):
    def _critic_loss(self, data, ent_coef):
        return super()._critic_loss(data, ent_coef)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(env="CartPole-v1"),
        dict(use_sde=True),
        dict(policy_kwargs=dict(activation_fn=nn.Tanh)),
        dict(policy_kwargs=dict(net_arch=[])),
        dict(CROSSQ, policy_kwargs=dict(net_arch=[16])),
        dict(policy="SimbaPolicy", policy_kwargs=dict(net_arch=[16])),
    ],
    ids=["discrete", "gsde", "tanh", "no-hidden-layer", "crossq", "simba"],
)
def test_policies_it_does_not_cover_keep_autograd(monkeypatch, kwargs) -> None:
    monkeypatch.setenv("SAC_PLUS_FUSED", "on")
    model = trained_model(**kwargs)
    assert fused.fused_gradients_for(model.policy) is None
    assert model.gradient_path == "autograd"


def test_a_subclass_with_its_own_loss_keeps_autograd(monkeypatch) -> None:
    monkeypatch.setenv("SAC_PLUS_FUSED", "on")
    model = OwnCriticLoss("MlpPolicy", "Pendulum-v1", learning_starts=10, batch_size=8, seed=0)
    model.learn(20)
    assert model.gradient_path == "autograd"
    assert fused.fused_gradients_for(model.policy) is not None  # the policy alone would be covered


def test_plain_layers_reads_sb3_s_mlps() -> None:
    model = SACPlus("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(net_arch=[8, 4]))
    layers = fused.plain_layers(model.critic.qf0)
    assert layers is not None
    assert [(layer.linear.in_features, layer.linear.out_features, layer.relu) for layer in layers] == [
        (4, 8, True), (8, 4, True), (4, 1, False),
    ]  # fmt: skip
    assert fused.plain_layers(nn.Sequential(nn.Linear(3, 4), nn.Tanh())) is None
    assert fused.plain_layers(nn.Linear(3, 4, bias=False)) is None
    assert isinstance(model.critic.features_extractor, FlattenExtractor)
