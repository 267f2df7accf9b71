"""The package as installed: console commands on the PATH, dependency floors, Binder's CPU pins, one lint
configuration."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
SCRIPTS = {
    "afl-train": "afl_core.train:main",
    "afl-evaluate": "afl_core.evaluate:main",
    "afl-data": "data_download.cli:main",
}


def _load_floors():
    spec = importlib.util.spec_from_file_location("floors", REPO / "tools" / "floors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.floors


floors = _load_floors()


def _paired_torchvision(torch_version: Version) -> tuple[int, int]:
    """torchvision's (major, minor) built for a torch 2.x release: 0.(x + 15), e.g. 2.3 -> 0.18."""
    return 0, torch_version.minor + 15


def test_console_commands_are_the_main_functions():
    assert PROJECT["project"]["scripts"] == SCRIPTS
    for target in SCRIPTS.values():
        module, _, function = target.partition(":")
        main = getattr(importlib.import_module(module), function)
        assert list(inspect.signature(main).parameters) == ["argv"], target  # main(argv=None) -> exit status


@pytest.mark.parametrize("command", sorted(SCRIPTS))
def test_console_command_runs_from_the_environment(command):
    executable = Path(sys.executable).parent / command
    assert executable.is_file(), f"{executable} is missing: reinstall the package (pip install -e .) to create it"
    result = subprocess.run([str(executable), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:") and "--help" in result.stdout


@pytest.mark.parametrize("module", sorted({target.partition(":")[0] for target in SCRIPTS.values()}))
def test_each_command_module_runs_with_python_m(module):
    """``python -m afl_core.train`` (or ``data_download.cli``) runs the command, as the console script does."""
    result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:") and "--help" in result.stdout


def test_every_core_dependency_has_a_floor_and_torch_has_grad_scaler():
    names = [Requirement(r).name for r in PROJECT["project"]["dependencies"]]
    pinned = floors()
    assert list(pinned) == names  # `make test-min` pins each one
    assert Version(pinned["torch"]) >= Version("2.3")  # torch.amp.GradScaler
    assert (Version(pinned["torchvision"]).major, Version(pinned["torchvision"]).minor) == _paired_torchvision(
        Version(pinned["torch"])
    )
    # SimpleITK serves only the PI-CAI converter: an extra, not a core dependency.
    assert "SimpleITK" not in names
    assert [Requirement(r).name for r in PROJECT["project"]["optional-dependencies"]["picai"]] == ["SimpleITK"]


def test_floors_file_is_pip_constraints(tmp_path):
    out = subprocess.run(
        [sys.executable, str(REPO / "tools" / "floors.py")], capture_output=True, text=True, check=True
    ).stdout
    lines = out.splitlines()
    assert lines and all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][0-9.]*", line) for line in lines)
    assert {Requirement(line).name: str(Requirement(line).specifier)[2:] for line in lines} == floors()


def test_binder_pins_cpu_builds_of_a_matching_torch_and_torchvision():
    lines = [ln.strip() for ln in (REPO / "binder" / "requirements.txt").read_text().splitlines()]
    pins = {r.name: r for r in (Requirement(ln) for ln in lines if ln and not ln.startswith(("#", "-")))}
    versions = {}
    for name in ("torch", "torchvision"):
        (spec,) = pins[name].specifier
        assert spec.operator == "==", f"{name}: an exact version, so pip cannot pick another build"
        versions[name] = Version(spec.version)
        assert versions[name].local == "cpu", f"{name}: the +cpu build, found only on the PyTorch CPU index"
    paired = (versions["torchvision"].major, versions["torchvision"].minor)
    assert paired == _paired_torchvision(versions["torch"])


def test_one_ruff_configuration_with_the_project_line_width():
    assert PROJECT["tool"]["ruff"]["line-length"] == 120
    assert not any((REPO / name).exists() for name in ("ruff.toml", ".ruff.toml", ".flake8", "setup.cfg", "tox.ini"))
    assert "ruff check" in (REPO / "Makefile").read_text()
