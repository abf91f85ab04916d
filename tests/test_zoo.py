"""
rl-zoo3 integration: ``python -m sac_plus.zoo {train,enjoy,record}`` runs rl-zoo3's own scripts
with SACPlus registered as ``sac_plus``; Optuna tuning on SQLite and on a real PostgreSQL server.

The command-line tests run in subprocesses, as a user would: importing rl_zoo3 patches gymnasium's TimeLimit
for the whole process, which the other tests of the suite must not see. Budgets are tiny (a few hundred to
a thousand steps, 32-unit nets): these tests check the plumbing, not learning.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import numpy as np
import pytest

from sac_plus.zoo.sampler import INIT_SCHEMES

REPO = pathlib.Path(__file__).resolve().parents[1]
MISSING = [name for name in ("rl_zoo3", "optuna") if importlib.util.find_spec(name) is None]
pytestmark = pytest.mark.skipif(
    bool(MISSING), reason=f"{' and '.join(MISSING)} not installed (the 'zoo' extra: pip install 'sac_plus[zoo]')"
)

# Small and quick: a 32x32 net, an early start, one thread (2 cores are shared by the whole suite)
FAST_PARAMS = ["learning_starts:200", "batch_size:64", "policy_kwargs:dict(net_arch=[32, 32])"]
TIMEOUT = 300


def run_zoo(*args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess:
    """``python -m sac_plus.zoo ARGS`` in a subprocess; fails the test with its output when it fails."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg", SDL_VIDEODRIVER="dummy")
    proc = subprocess.run(
        [sys.executable, "-m", "sac_plus.zoo", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, f"python -m sac_plus.zoo {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-6000:]}"
    return proc


def run_python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


# ---------------------------------------------------------------------------------------------------------
# Registration and layout


def test_core_package_never_imports_rl_zoo3():
    imports_zoo = re.compile(r"^\s*(import|from)\s+rl_zoo3\b|import_module\([\"']rl_zoo3", re.MULTILINE)
    for path in (REPO / "sac_plus").rglob("*.py"):
        if "zoo" not in path.relative_to(REPO / "sac_plus").parts:
            assert not imports_zoo.search(path.read_text()), f"{path} imports rl_zoo3: only sac_plus/zoo/ may"
    # Importing the zoo package (without registering) does not import rl_zoo3 either
    out = run_python(
        "import sys, sac_plus, sac_plus.zoo, sac_plus.zoo.sampler, sac_plus.zoo.__main__\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'rl_zoo3'))"
    )
    assert out.strip() == "[]"


def test_register_fills_every_rl_zoo3_table():
    out = run_python(
        """
import inspect
from sac_plus import SACPlus
from sac_plus.zoo import SACPlusReplay, register
from sac_plus.zoo.sampler import convert_sac_plus_params, sample_sac_plus_params

register()
import rl_zoo3, rl_zoo3.enjoy, rl_zoo3.exp_manager, rl_zoo3.hyperparams_opt, rl_zoo3.train, rl_zoo3.utils

for module in (rl_zoo3, rl_zoo3.utils, rl_zoo3.train, rl_zoo3.enjoy, rl_zoo3.exp_manager):
    assert module.ALGOS["sac_plus"] is SACPlus, module
for module in (rl_zoo3.hyperparams_opt, rl_zoo3.exp_manager):
    assert module.HYPERPARAMS_SAMPLER["sac_plus"] is sample_sac_plus_params, module
    assert module.HYPERPARAMS_CONVERTER["sac_plus"] is convert_sac_plus_params, module
# Same signature as rl-zoo3's own SAC sampler
ours = list(inspect.signature(sample_sac_plus_params).parameters)
theirs = list(inspect.signature(rl_zoo3.hyperparams_opt.sample_sac_params).parameters)
assert ours == theirs, (ours, theirs)
register(replay=True)
assert rl_zoo3.enjoy.ALGOS["sac_plus"] is SACPlusReplay
print("ok")
"""
    )
    assert out.strip().endswith("ok")


def test_command_line_defaults(tmp_path):
    from sac_plus.zoo import default_config_path
    from sac_plus.zoo.__main__ import with_defaults

    config = default_config_path()
    # the file the package ships (wherever the layout keeps it), not one that happens to lie in the current directory
    assert config is not None and config.name == "sac_plus.yml" and config.is_file()
    assert with_defaults("train", ["--env", "Pendulum-v1"]) == [
        "--algo",
        "sac_plus",
        "--conf-file",
        str(config),
        "--env",
        "Pendulum-v1",
    ]
    # A flag the user gives wins; another algorithm keeps rl-zoo3's own default config
    assert "--conf-file" not in with_defaults("train", ["--algo", "sac"])
    assert with_defaults("train", ["-conf", "x.yml"])[-2:] == ["-conf", "x.yml"]
    assert str(config) not in with_defaults("train", ["--conf-file=x.yml"])
    assert with_defaults("enjoy", ["--env", "CartPole-v1"])[:4] == ["--algo", "sac_plus", "--folder", "logs"]
    assert "logs" not in with_defaults("enjoy", ["-f", "elsewhere"])
    # -optimize keeps its trials in SQLite under the log folder unless told otherwise
    argv = with_defaults("train", ["--env", "CartPole-v1", "-optimize", "-f", str(tmp_path)])
    assert argv[argv.index("--storage") + 1] == f"sqlite:///{tmp_path / 'sac_plus' / 'optuna.db'}"
    assert argv[argv.index("--study-name") + 1] == "sac_plus_CartPole-v1"
    assert "--study-name" not in with_defaults("train", ["-optimize", "--storage", "sqlite:///a.db"])


# ---------------------------------------------------------------------------------------------------------
# The sampler


@pytest.mark.parametrize("kind", ["box", "discrete"])
def test_sampler_covers_our_keywords(kind):
    import gymnasium as gym
    import optuna

    from sac_plus import SACPlus
    from sac_plus.zoo.sampler import convert_sac_plus_params, sample_sac_plus_params

    env = gym.make("Pendulum-v1" if kind == "box" else "CartPole-v1")
    # rl-zoo3 passes the action dimension for Box spaces and 0 otherwise
    n_actions = env.action_space.shape[0] if kind == "box" else 0
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize")
    seen_learned_alpha = False
    for _ in range(12):
        trial = study.ask()
        hp = sample_sac_plus_params(trial, n_actions, 1, {"using_her_replay_buffer": False, "her_kwargs": {}})
        expected = {"gamma", "learning_rate", "batch_size", "buffer_size", "learning_starts", "train_freq"}
        expected |= {"gradient_steps", "tau", "ent_coef", "policy_kwargs"}
        assert expected <= set(hp)
        assert set(hp["policy_kwargs"]) == {"net_arch", "n_critics", "init_scheme"}
        learned = isinstance(hp["ent_coef"], str)
        seen_learned_alpha |= learned
        if kind == "discrete":
            assert "target_entropy" not in hp
            assert ("target_entropy_scale" in hp) == learned
        else:
            assert "target_entropy_scale" not in hp
            assert ("target_entropy" in hp) == learned
        # what a stored trial converts back to (train --trial-id) is what the trial ran with
        assert convert_sac_plus_params(trial.params) == hp
        model = SACPlus("MlpPolicy", env, device="cpu", **hp)
        assert model.policy_kwargs["n_critics"] == hp["policy_kwargs"]["n_critics"]
        study.tell(trial, 0.0)
    assert seen_learned_alpha


# ---------------------------------------------------------------------------------------------------------
# train / enjoy / record through the command line


@pytest.fixture(scope="module", params=["Pendulum-v1", "CartPole-v1"])
def trained(request, tmp_path_factory) -> tuple[str, pathlib.Path, str]:
    """Train 1000 steps from the package's sac_plus.yml through the command line; (env, log folder, output)."""
    env_id = request.param
    folder = tmp_path_factory.mktemp(f"zoo_{env_id}")
    params = list(FAST_PARAMS)
    if env_id == "Pendulum-v1":
        params.append("normalize:True")  # VecNormalize statistics are saved and used by enjoy
    proc = run_zoo(
        "train",
        "--algo",
        "sac_plus",
        "--env",
        env_id,
        "-n",
        "1000",
        "-f",
        str(folder),
        "--eval-freq",
        "500",
        "--eval-episodes",
        "2",
        "--save-freq",
        "500",
        "--seed",
        "0",
        "--num-threads",
        "1",
        "-params",
        *params,
        cwd=folder,
    )
    return env_id, folder, proc.stdout


def test_train_writes_rl_zoo3_outputs(trained):
    from sac_plus import SACPlus
    from sac_plus.zoo import default_config_path

    env_id, folder, output = trained
    assert f"Loading hyperparameters from: {default_config_path()}" in output
    run = folder / "sac_plus" / f"{env_id}_1"
    for name in (f"{env_id}.zip", "evaluations.npz", "0.monitor.csv", "best_model.zip", "rl_model_1000_steps.zip"):
        assert (run / name).is_file(), f"{name} missing; {sorted(p.name for p in run.iterdir())}"
    for name in ("config.yml", "args.yml", "command.txt"):
        assert (run / env_id / name).is_file(), name
    if env_id == "Pendulum-v1":
        assert (run / env_id / "vecnormalize.pkl").is_file()
    config = (run / env_id / "config.yml").read_text()
    assert "net_arch" in config and ("target_entropy_scale" in config) == (env_id == "CartPole-v1")
    evaluations = np.load(run / "evaluations.npz")
    assert list(evaluations["timesteps"]) == [500, 1000]
    assert evaluations["results"].shape == (2, 2)
    model = SACPlus.load(run / f"{env_id}.zip", device="cpu")
    assert model.num_timesteps == 1000
    assert model.policy_kwargs["net_arch"] == [32, 32]
    if env_id == "CartPole-v1":
        assert model.target_entropy_scale == pytest.approx(0.6)  # from the package's sac_plus.yml


def test_enjoy_replays_the_trained_agent(trained):
    from sac_plus import SACPlus
    from sac_plus.zoo import SACPlusReplay

    env_id, folder, _ = trained
    out = run_zoo(
        "enjoy", "--algo", "sac_plus", "--env", env_id, "-f", str(folder), "--no-render", "-n", "200", cwd=folder
    ).stdout
    assert f"Loading {folder / 'sac_plus' / f'{env_id}_1' / f'{env_id}.zip'}" in out
    assert "Episode Reward" in out
    # enjoy loads off-policy agents without their replay buffer, as rl-zoo3 does for "sac"
    model = SACPlusReplay.load(folder / "sac_plus" / f"{env_id}_1" / f"{env_id}.zip", device="cpu")
    assert type(model) is SACPlus and model.replay_buffer.buffer_size == 1


def test_record_video(trained, tmp_path):
    env_id, folder, _ = trained
    if env_id != "Pendulum-v1":
        pytest.skip("one environment is enough for record_video")
    missing = [name for name in ("moviepy", "pygame") if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"record_video needs {', '.join(missing)} (video dependencies not installed)")
    run_zoo("record", "--env", env_id, "-f", str(folder), "-n", "50", "-o", str(tmp_path), cwd=tmp_path)
    assert list(tmp_path.glob("*.mp4")), sorted(p.name for p in tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------------------
# Optuna: SQLite on one machine, PostgreSQL shared by several workers

# Sampled hyperparameters override the config and -params: a trial's cost is the sampler's choice (a batch of 1024
# on 5 critics of 400x300 takes ~1 s per update here), so a test that let the sampler draw would depend on the draw.
# The tests enqueue their trials instead: Optuna runs enqueued trials first, with exactly these parameters (through
# our sampler, which still suggests every one of them), so every trial is cheap and completes, whatever the sampler.
CHEAP = dict(one_minus_gamma=0.01, learning_rate=3e-4, batch_size_pow=5, buffer_size=10_000, tau=0.005, net_arch="small")
CHEAP_TRIALS = [
    # learning starts after the 200 steps of a trial: collection and evaluation only
    {**CHEAP, "learning_starts": 10_000, "train_freq": 1, "ent_coef": "auto", "target_entropy_scale": 0.5},
    # 100 updates (one per step after the first 100) of 64x64 nets on batches of 32, alpha fixed
    {**CHEAP, "learning_starts": 100, "train_freq": 4, "ent_coef": "0.01"},
    # the same with alpha learned
    {**CHEAP, "learning_starts": 100, "train_freq": 2, "ent_coef": "auto_0.1", "target_entropy_scale": 0.3},
]
# n_critics and init_scheme differ between the trials, so that train --trial-id shows which one it took; the
# schemes are the sampler's own choices (an enqueued value outside them is refused)
for _number, _params in enumerate(CHEAP_TRIALS):
    _params.update(n_critics=2 + _number, init_scheme=INIT_SCHEMES[_number % len(INIT_SCHEMES)])
OPTIMIZE = ["-n", "200", "--n-evaluations", "1", "--eval-episodes", "2", "--sampler", "random", "--pruner", "none"]
OPTIMIZE += ["--no-optim-plots", "--num-threads", "1"]


def enqueue_cheap_trials(storage: str, study_name: str, trials: list[dict]) -> None:
    """Create the study as rl-zoo3 will load it (direction maximize), with ``trials`` waiting to run first."""
    import optuna

    study = optuna.create_study(storage=storage, study_name=study_name, direction="maximize", load_if_exists=True)
    for params in trials:
        study.enqueue_trial(params)


def test_optimize_on_sqlite(tmp_path):
    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    enqueue_cheap_trials(storage, "cartpole", CHEAP_TRIALS)
    run_zoo(
        "train",
        "--env",
        "CartPole-v1",
        "-optimize",
        "--n-trials",
        "3",
        *OPTIMIZE,
        "--storage",
        storage,
        "--study-name",
        "cartpole",
        "--seed",
        "1",
        "-f",
        str(tmp_path),
        cwd=tmp_path,
    )
    study = optuna.load_study(study_name="cartpole", storage=storage)
    assert len(study.trials) == 3
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials), [t.state for t in study.trials]
    # every parameter went through the sampler (a suggestion it did not make would be missing from trial.params)
    assert [t.params for t in study.trials] == CHEAP_TRIALS
    for trial in study.trials:
        assert {"n_critics", "init_scheme", "net_arch", "buffer_size", "learning_starts"} <= set(trial.params)
        assert "target_entropy" not in trial.params  # CartPole: Discrete actions
        assert ("target_entropy_scale" in trial.params) == trial.params["ent_coef"].startswith("auto")
    assert list(tmp_path.glob("sac_plus/report_CartPole-v1_3-trials-200-random-none_*.csv"))

    # Train with a stored trial's hyperparameters (rl-zoo3's --trial-id goes through our converter;
    # rl-zoo3 ignores --trial-id 0, which it tests as false); the config has neither n_critics nor init_scheme
    best = study.trials[-1]
    run_zoo(
        "train",
        "--env",
        "CartPole-v1",
        "-n",
        "200",
        "--eval-freq",
        "-1",
        "--num-threads",
        "1",
        "--storage",
        storage,
        "--study-name",
        "cartpole",
        "--trial-id",
        str(best.number),
        "-f",
        str(tmp_path),
        cwd=tmp_path,
    )
    # the newest run folder (rl-zoo3 also makes one for the optimisation)
    run = max((tmp_path / "sac_plus").glob("CartPole-v1_*"), key=lambda p: int(p.name.rsplit("_", 1)[1]))
    config = (run / "CartPole-v1" / "config.yml").read_text()
    assert f"n_critics: {best.params['n_critics']}" in config
    assert f"init_scheme: {best.params['init_scheme']}" in config


def find_postgres_bindir() -> pathlib.Path | None:
    """The directory of initdb, pg_ctl and postgres: PATH, /usr/local/bin, /usr/lib/postgresql/*/bin (Debian)."""
    candidates = [pathlib.Path(found).resolve().parent for tool in ("pg_ctl", "initdb") if (found := shutil.which(tool))]
    candidates += [pathlib.Path("/usr/local/bin"), pathlib.Path("/usr/local/pgsql/bin")]
    versions = pathlib.Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(versions, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    if pg_config := shutil.which("pg_config"):
        try:
            candidates.append(pathlib.Path(subprocess.check_output([pg_config, "--bindir"], text=True).strip()))
        except (OSError, subprocess.CalledProcessError):
            pass
    for directory in candidates:
        if all(os.access(directory / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return directory
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# .ci/run sets it after installing PostgreSQL: there, a missing server is a failure, not a skip nobody reads
REQUIRE_POSTGRES = os.environ.get("SAC_PLUS_REQUIRE_POSTGRES") == "1"


def skip_or_fail(reason: str) -> None:
    if REQUIRE_POSTGRES:
        pytest.fail(f"{reason} (SAC_PLUS_REQUIRE_POSTGRES=1: the PostgreSQL test must run)")
    pytest.skip(reason)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server of our own in a temporary directory, on 127.0.0.1 and a free port; its URL."""
    bindir = find_postgres_bindir()
    if bindir is None:
        skip_or_fail(
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in PATH, /usr/local/bin or "
            "/usr/lib/postgresql/*/bin: install the Debian package 'postgresql' (.ci/run does)"
        )
    if importlib.util.find_spec("psycopg2") is None:
        skip_or_fail("psycopg2 not installed (the 'zoo' extra: psycopg2-binary)")
    import psycopg2

    # initdb and postgres refuse to run as root: run them as an unprivileged user that owns the directory
    as_user: dict = {}
    if os.geteuid() == 0:
        for name in ("postgres", "nobody"):
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                continue
            as_user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
            break
        else:
            skip_or_fail("running as root and no unprivileged user ('postgres' or 'nobody') to run the server as")
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="sac_plus_pg_"))
    data, log = workdir / "data", workdir / "server.log"
    if as_user:
        os.chown(workdir, as_user["user"], as_user["group"])
    env = dict(os.environ, HOME=str(workdir), LC_ALL="C")

    def pg(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(args, cwd=workdir, env=env, capture_output=True, text=True, timeout=120, **as_user)
        server_log = log.read_text() if log.exists() else ""
        assert not check or proc.returncode == 0, f"{' '.join(args)}:\n{proc.stdout}\n{proc.stderr}\n{server_log}"
        return proc

    started = False
    try:
        # a throwaway server: no fsync
        pg(str(bindir / "initdb"), "-D", str(data), "-U", "zoo", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync")
        # The port is free when picked but not held (postgres must bind it itself): another process may take it in
        # between, and then the server fails to start with "Address already in use"; pick another and start again
        for attempt in range(5):
            port = free_port()
            options = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
            start = pg(
                str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start", check=False
            )
            if start.returncode == 0:
                break
            server_log = log.read_text() if log.exists() else ""
            assert "already in use" in server_log and attempt < 4, (
                f"pg_ctl start:\n{start.stdout}\n{start.stderr}\n{server_log}"
            )
        started = True
        connection = psycopg2.connect(host="127.0.0.1", port=port, user="zoo", dbname="postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("CREATE DATABASE optuna_zoo")
        connection.close()
        # +psycopg2: SQLAlchemy >= 2.1 reads a plain postgresql:// as psycopg (3), which the zoo extra does not install
        yield f"postgresql+psycopg2://zoo@127.0.0.1:{port}/optuna_zoo"
    finally:
        if started:
            pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(workdir, ignore_errors=True)


def test_distributed_optimize_on_postgresql(postgres_url, tmp_path):
    import optuna

    study_name = "cartpole_shared"
    # Once, before the workers (as the README says): create the study, so that workers starting at the same
    # moment do not race to create the schema
    create_study = [sys.executable, "-c", "from optuna.cli import main; raise SystemExit(main())", "create-study"]
    create_study += ["--storage", postgres_url, "--study-name", study_name, "--direction", "maximize", "--skip-if-exists"]
    proc = subprocess.run(
        create_study,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # one cheap trial for each worker (see CHEAP_TRIALS); two workers that take a trial at the same moment never
    # get the same one (Optuna claims a waiting trial in one transaction)
    enqueue_cheap_trials(postgres_url, study_name, CHEAP_TRIALS[1:])
    # Two workers at the same time, as on two machines: same --storage and --study-name
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    workers = []
    for worker, seed in enumerate((0, 3)):
        folder = tmp_path / f"worker{worker}"
        folder.mkdir()
        command = [sys.executable, "-m", "sac_plus.zoo", "train", "--env", "CartPole-v1", "-optimize", "--n-trials", "1"]
        command += [*OPTIMIZE, "--storage", postgres_url, "--study-name", study_name, "--seed", str(seed)]
        command += ["-f", str(folder)]
        workers.append(
            subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    trial_numbers = []
    for worker in workers:
        out, _ = worker.communicate(timeout=TIMEOUT)
        assert worker.returncode == 0, out[-6000:]
        trial_numbers.append({int(n) for n in re.findall(r"Trial (\d+) finished", out)})
    study = optuna.load_study(study_name=study_name, storage=postgres_url)
    assert len(study.trials) >= 2
    assert all(trial_numbers), f"each worker ran a trial: {trial_numbers}"
    assert not trial_numbers[0] & trial_numbers[1]
    assert trial_numbers[0] | trial_numbers[1] == {t.number for t in study.trials}
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials), [t.state for t in study.trials]
    assert sorted(t.params["n_critics"] for t in study.trials) == [3, 4]  # the enqueued trials, one for each worker
