"""The wheel carries what a non-editable install needs: the rl-zoo3 hyperparameter file, the PEP 561 marker
``py.typed`` (the package is typed) and the license.

Builds the wheel once (``pip wheel --no-deps --no-build-isolation``, a few seconds) from a copy of the files a
build reads, so that the checkout gets no ``build/`` folder, then installs it into a folder of its own and reads
``default_config_path()`` from that installed copy, outside the source tree.
"""

from __future__ import annotations

import email.parser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIG_IN_WHEEL = "sac_plus/zoo/sac_plus.yml"
PRESET_CONFIGS_IN_WHEEL = ("sac_plus/zoo/crossq.yml", "sac_plus/zoo/simba.yml")
# What setuptools reads to build the wheel (package data is declared in pyproject.toml)
BUILD_INPUTS = ("pyproject.toml", "README.md", "LICENSE")


def _run(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("packaging")
    source = root / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "sac_plus", source / "sac_plus", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = root / "wheel"
    _run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source), cwd=root
    )
    wheels = sorted(out.glob("sac_plus-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _metadata(names: list[str], archive: zipfile.ZipFile):
    [path] = [name for name in names if name.endswith(".dist-info/METADATA")]
    return email.parser.Parser().parsestr(archive.read(path).decode())


def test_wheel_ships_the_zoo_config(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert CONFIG_IN_WHEEL in names, f"{CONFIG_IN_WHEEL} is not in {wheel.name}: {names}"
        assert archive.read(CONFIG_IN_WHEEL) == (REPO / CONFIG_IN_WHEEL).read_bytes()
        for name in ("sac_plus/__init__.py", "sac_plus/zoo/__init__.py", "sac_plus/zoo/__main__.py", "sac_plus/py.typed"):
            assert name in names, name
        for name in PRESET_CONFIGS_IN_WHEEL:
            assert archive.read(name) == (REPO / name).read_bytes(), name


def test_wheel_carries_the_license(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        licenses = [name for name in names if name.endswith(".dist-info/licenses/LICENSE")]
        assert licenses, f"no LICENSE under *.dist-info/licenses/ in {wheel.name}: {names}"
        text = archive.read(licenses[0]).decode()
        assert text.startswith("MIT License") and "the sac_plus authors" in text
        metadata = _metadata(names, archive)
    assert metadata["License-Expression"] == "MIT"
    assert "LICENSE" in metadata.get_all("License-File", [])


def test_wheel_declares_the_extras(wheel):
    with zipfile.ZipFile(wheel) as archive:
        metadata = _metadata(archive.namelist(), archive)
    extras = set(metadata.get_all("Provides-Extra", []))
    assert {"extra", "zoo", "plots"} <= extras, extras
    requires = metadata.get_all("Requires-Dist", [])
    # rl-zoo3's plotting scripts: the pins of rl_zoo3[plots]
    assert any(r.startswith("pandas") and "<3" in r and 'extra == "plots"' in r for r in requires), requires
    for name in ("seaborn", "scipy"):
        assert any(r.startswith(name) and 'extra == "plots"' in r for r in requires), (name, requires)
    for name in ("tqdm", "rich"):
        assert any(r.startswith(name) and 'extra == "extra"' in r for r in requires), (name, requires)


def test_default_config_path_in_the_checkout():
    from sac_plus.zoo import default_config_path

    path = default_config_path()
    assert path is not None and path.is_file()
    assert path == REPO / CONFIG_IN_WHEEL


def test_default_config_path_of_an_installed_wheel(wheel, tmp_path):
    """A non-editable install finds its config inside the installed package, wherever the current directory is."""
    target = tmp_path / "site"
    _run(sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel), cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = (
        f"import sys; sys.path.insert(0, {str(target)!r}); import sac_plus.zoo as zoo; "
        "print(zoo.__file__); print(zoo.default_config_path('crossq')); print(zoo.default_config_path())"
    )
    module_file, crossq, config = _run(sys.executable, "-c", code, cwd=elsewhere).stdout.strip().splitlines()[-3:]
    assert Path(crossq).resolve() == (target / PRESET_CONFIGS_IN_WHEEL[0]).resolve()
    assert Path(module_file).resolve().is_relative_to(target.resolve()), module_file
    assert config != "None", "default_config_path() found no config in the installed package"
    assert Path(config).resolve() == (target / CONFIG_IN_WHEEL).resolve()
    assert Path(config).read_bytes() == (REPO / CONFIG_IN_WHEEL).read_bytes()
