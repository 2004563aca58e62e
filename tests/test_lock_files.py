"""The lock files say what requirements*.txt say: an input edited without ``make lock`` fails here,
before a fresh machine installs something else than what the suite ran on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;#\\]+)", re.MULTILINE)


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    return {normalized(name): version for name, version in PIN.findall(path.read_text())}


def entries(lock: Path) -> list[str]:
    """Each package's block: its ``name==version`` line, its hashes, its ``# via`` lines."""
    return re.split(r"\n(?=[A-Za-z0-9])", lock.read_text().split("\n", 2)[2].strip())


@pytest.mark.parametrize(
    ("inputs", "lock"), [("requirements.txt", "requirements.lock"), ("requirements-dev.txt", "requirements-dev.lock")]
)
def test_every_pin_is_locked_at_its_version_with_hashes(inputs: str, lock: str) -> None:
    locked = pins(ROOT / lock)
    for name, version in pins(ROOT / inputs).items():
        assert locked.get(name) == version, f"{inputs} pins {name}=={version}, {lock} has {locked.get(name)}: make lock"
    for entry in entries(ROOT / lock):
        assert "--hash=sha256:" in entry, f"no hash in {lock} for {entry.splitlines()[0]}"


def test_the_dev_lock_agrees_with_the_runtime_lock() -> None:
    runtime, dev = pins(ROOT / "requirements.lock"), pins(ROOT / "requirements-dev.lock")
    assert runtime.items() <= dev.items(), {
        name: (v, dev.get(name)) for name, v in runtime.items() if dev.get(name) != v
    }
