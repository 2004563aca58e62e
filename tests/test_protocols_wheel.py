"""protocols/ is a distribution of its own: its wheel, installed in a fresh virtualenv with nothing but its
dependencies (no gateway, no config, no consumers), imports, and passes its own tests there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from uv import find_uv_bin

ROOT = Path(__file__).resolve().parent.parent
UV = find_uv_bin()


def run(*command: str | Path, cwd: Path) -> str:
    # uv reads PyPI only (not this machine's pip mirrors): what a fresh machine would see.
    env = {**os.environ, "VIRTUAL_ENV": "", "PYTHONPATH": "", "DJANGO_SETTINGS_MODULE": ""}
    done = subprocess.run([str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.timeout(600)
def test_the_wheel_installs_imports_and_passes_its_own_tests(tmp_path: Path) -> None:
    # Built from a copy, so the build leaves nothing in the tree (and runs beside another test's build).
    source = tmp_path / "source"
    shutil.copytree(ROOT / "protocols", source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    run(UV, "build", "--wheel", "--out-dir", tmp_path / "dist", source, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("channels_protocols-*.whl")
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    run(UV, "venv", "--quiet", "--python", sys.executable, venv, cwd=tmp_path)
    run(
        UV,
        "pip",
        "install",
        "--quiet",
        "--python",
        python,
        f"channels-protocols[test] @ {wheel.as_uri()}",
        cwd=tmp_path,
    )

    where = run(
        python, "-c", "import protocols, protocols.mqtt, protocols.smtp; print(protocols.__file__)", cwd=tmp_path
    )
    assert where.startswith(str(venv)), where  # the installed wheel, not this tree
    for project_package in ("gateway", "config", "consumers"):
        missing = subprocess.run([python, "-c", f"import {project_package}"], cwd=tmp_path, capture_output=True)
        assert missing.returncode != 0, f"{project_package} is importable in the package's venv"

    # Its own tests, outside this tree: nothing but the wheel and its dependencies to import.
    tests = tmp_path / "tests"
    shutil.copytree(ROOT / "protocols" / "tests", tests, ignore=shutil.ignore_patterns("__pycache__"))
    output = run(python, "-m", "pytest", "-p", "no:cacheprovider", tests, cwd=tmp_path)
    assert f"protocols from {venv}" in output, output  # the conftest's header: which protocols ran
    assert " passed" in output and "failed" not in output, output
