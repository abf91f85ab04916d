"""
Optuna hyperparameter sampler for SACPlus, in rl-zoo3's sampler convention (rl-zoo3 2.x,
``rl_zoo3.hyperparams_opt``):

- ``sample_sac_plus_params(trial, n_actions, n_envs, additional_args) -> hyperparams`` samples the trial's
  raw parameters and returns keywords for ``SACPlus`` (registered in ``HYPERPARAMS_SAMPLER``);
- ``convert_sac_plus_params(params) -> hyperparams`` turns the raw parameters of a stored trial back into
  the same keywords (registered in ``HYPERPARAMS_CONVERTER``, used by ``train --trial-id``).

Which action space the trial trains on: rl-zoo3's ``ExperimentManager`` builds the env before optimising
and sets ``n_actions`` to the action dimension for a ``Box`` space and leaves it at ``0`` otherwise, and
``SACPlus`` accepts only ``Box`` and ``Discrete`` action spaces, so ``n_actions == 0`` means ``Discrete``.
A caller of its own may also pass ``additional_args["action_space"]``, which then decides.

The sampled keywords: ``gamma``, ``learning_rate``, ``batch_size``, ``buffer_size``, ``learning_starts``,
``train_freq`` (with ``gradient_steps=-1``: one update per collected transition, for any ``n_envs``),
``tau``, ``ent_coef`` (learned from 1, 0.1 or 0.01, or fixed) and, when alpha is learned, the target
entropy: ``target_entropy`` for Box actions, ``target_entropy_scale`` for Discrete ones (H = scale * log|A|);
``policy_kwargs``: ``net_arch``, ``n_critics`` and ``init_scheme``. With a HER replay buffer in the config,
its keywords are sampled by rl-zoo3's own ``sample_her_params``.
"""

from __future__ import annotations

from typing import Any

NET_ARCH = {
    "small": [64, 64],
    "medium": [256, 256],
    "big": [400, 300],
}
ENT_COEFS = ["auto", "auto_0.1", "auto_0.01", "0.1", "0.01", "0.001"]
BUFFER_SIZES = [10_000, 100_000, 1_000_000]
LEARNING_STARTS = [0, 100, 1_000, 10_000]
INIT_SCHEMES = ["orthogonal", "pytorch"]
HER_PARAMS = ("n_sampled_goal", "goal_selection_strategy")


def _is_discrete(n_actions: int, additional_args: dict[str, Any]) -> bool:
    action_space = additional_args.get("action_space")
    if action_space is not None:
        from gymnasium import spaces

        return isinstance(action_space, spaces.Discrete)
    return n_actions == 0


def sample_sac_plus_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict[str, Any]) -> dict[str, Any]:
    """
    Sample SACPlus hyperparameters for one Optuna trial (rl-zoo3's ``HYPERPARAMS_SAMPLER`` signature).

    :param trial: the ``optuna.Trial``
    :param n_actions: the action dimension for a Box action space, 0 for a Discrete one (as rl-zoo3 passes it)
    :param n_envs: number of parallel environments (the update-to-data ratio does not depend on it, see
        ``gradient_steps=-1``)
    :param additional_args: rl-zoo3's extra arguments (``using_her_replay_buffer``, ``her_kwargs``); an
        ``action_space`` entry, when present, says which action space is used
    :return: keywords for ``SACPlus``
    """
    discrete = _is_discrete(n_actions, additional_args)
    one_minus_gamma = trial.suggest_float("one_minus_gamma", 0.0001, 0.03, log=True)
    learning_rate = trial.suggest_float("learning_rate", 1e-5, 0.002, log=True)
    # From 2**5=32 to 2**10=1024
    batch_size_pow = trial.suggest_int("batch_size_pow", 5, 10)
    buffer_size = trial.suggest_categorical("buffer_size", BUFFER_SIZES)
    learning_starts = trial.suggest_categorical("learning_starts", LEARNING_STARTS)
    train_freq = trial.suggest_int("train_freq", 1, 10)
    # Polyak coefficient
    tau = trial.suggest_float("tau", 0.001, 0.08, log=True)
    ent_coef = trial.suggest_categorical("ent_coef", ENT_COEFS)
    net_arch = trial.suggest_categorical("net_arch", list(NET_ARCH))
    n_critics = trial.suggest_int("n_critics", 2, 5)
    init_scheme = trial.suggest_categorical("init_scheme", INIT_SCHEMES)

    params: dict[str, Any] = {
        "one_minus_gamma": one_minus_gamma,
        "learning_rate": learning_rate,
        "batch_size_pow": batch_size_pow,
        "buffer_size": buffer_size,
        "learning_starts": learning_starts,
        "train_freq": train_freq,
        "tau": tau,
        "ent_coef": ent_coef,
        "net_arch": net_arch,
        "n_critics": n_critics,
        "init_scheme": init_scheme,
    }
    # The target entropy matters only when alpha is learned.
    if ent_coef.startswith("auto"):
        if discrete:
            # H = scale * log|A|: 0.98 is Christodoulou's heuristic (2019), known to be too high on many tasks
            params["target_entropy_scale"] = trial.suggest_float("target_entropy_scale", 0.05, 0.98)
        else:
            # "auto" is -dim(A) (Haarnoja et al. 2018b); search from -2 to 0 nats per action dimension
            dim = max(int(n_actions), 1)
            params["target_entropy"] = trial.suggest_float("target_entropy", -2.0 * dim, 0.0)

    trial.set_user_attr("gamma", 1 - one_minus_gamma)
    trial.set_user_attr("batch_size", 2**batch_size_pow)
    trial.set_user_attr("action_space", "Discrete" if discrete else "Box")

    hyperparams = convert_sac_plus_params(params)
    if additional_args.get("using_her_replay_buffer"):
        from rl_zoo3.hyperparams_opt import sample_her_params

        hyperparams = sample_her_params(trial, hyperparams, additional_args.get("her_kwargs", {}))
    return hyperparams


def convert_sac_plus_params(sampled_params: dict[str, Any]) -> dict[str, Any]:
    """
    Turn the raw parameters of a trial (``trial.params``) into keywords for ``SACPlus``
    (rl-zoo3's ``HYPERPARAMS_CONVERTER`` signature).
    """
    params = dict(sampled_params)
    hyperparams: dict[str, Any] = {}
    if "one_minus_gamma" in params:
        hyperparams["gamma"] = 1 - params.pop("one_minus_gamma")
    if "batch_size_pow" in params:
        hyperparams["batch_size"] = 2 ** params.pop("batch_size_pow")
    if "buffer_size" in params:
        hyperparams["buffer_size"] = int(params.pop("buffer_size"))
    if "train_freq" in params:
        hyperparams["train_freq"] = int(params.pop("train_freq"))
        # One gradient step per collected transition (SB3 resolves -1 to train_freq * n_envs)
        hyperparams["gradient_steps"] = -1
    if "ent_coef" in params:
        ent_coef = params.pop("ent_coef")
        # Optuna's categorical choices are kept as strings; a fixed alpha is a float for SACPlus
        hyperparams["ent_coef"] = ent_coef if str(ent_coef).startswith("auto") else float(ent_coef)

    policy_kwargs: dict[str, Any] = {}
    if "net_arch" in params:
        policy_kwargs["net_arch"] = NET_ARCH[params.pop("net_arch")]
    for key in ("n_critics", "init_scheme"):
        if key in params:
            policy_kwargs[key] = params.pop(key)
    if policy_kwargs:
        hyperparams["policy_kwargs"] = policy_kwargs

    her_kwargs = {key: params.pop(key) for key in HER_PARAMS if key in params}
    if her_kwargs:
        hyperparams["replay_buffer_kwargs"] = her_kwargs

    # learning_rate, learning_starts, tau, target_entropy, target_entropy_scale: as sampled
    hyperparams.update(params)
    return hyperparams
