"""Fixtures: the machine's services (a missing one fails with what to install) and a running gateway."""

from __future__ import annotations

import shutil

import pytest
from hypothesis import Phase
from hypothesis import settings as hypothesis_settings

from tests.support import POSTGRES_HOST, REDIS_HOST, Mosquitto, launch_gateway, require_service

# Property tests here mostly talk to real servers: a failing example is reported as found, not shrunk over
# hundreds of slow reruns (pytest-timeout's failure is one more exception to shrink, so a hang would
# otherwise outlast CI).
hypothesis_settings.register_profile("gateway", phases=[Phase.explicit, Phase.reuse, Phase.generate])
hypothesis_settings.load_profile("gateway")


@pytest.fixture(scope="session")
def mosquitto():
    """A throwaway Mosquitto for this run (the machine's own keeps its traffic to itself)."""
    if shutil.which("mosquitto") is None:
        pytest.fail("The tests need Mosquitto: apt-get install mosquitto", pytrace=False)
    broker = Mosquitto().start()
    yield broker.url
    broker.kill()


@pytest.fixture(scope="session")
def redis_host() -> tuple[str, int]:
    require_service(
        "Redis",
        REDIS_HOST,
        "Install and start it: apt-get install redis-server && redis-server --daemonize yes --save ''",
    )
    return REDIS_HOST


@pytest.fixture(scope="session")
def postgres_host() -> tuple[str, int]:
    require_service(
        "PostgreSQL", POSTGRES_HOST, "Install and start it: apt-get install postgresql (trust auth, database 'test')"
    )
    return POSTGRES_HOST


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, mosquitto):
    """``rungateway`` in its own process: SQLite, in-memory layer, the machine's Mosquitto."""
    # The tests mail from one address far faster than a person: lift that one limit (see test_limits).
    directory = tmp_path_factory.mktemp("gateway")
    gateway = launch_gateway(directory, mosquitto, MAIL_SENDER_RATE=100, MEDIA_ROOT=directory / "media")
    yield gateway
    code = gateway.process.stop()
    assert code == 0, f"rungateway exited {code} on SIGTERM:\n{gateway.process.output}"


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking"]
CHROMIUM_ARGS += ["--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium, driven by Playwright (browsers cannot be downloaded on these machines)."""
    from playwright.sync_api import sync_playwright

    if not shutil.which("chromium"):
        pytest.fail("Chromium is needed for the browser tests: apt-get install chromium", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
async def runtime():
    """A fresh runtime (gateway/runtime.py) for a test that serves the gateway in its own event loop,
    closed afterwards: nothing a test leaves behind reaches the next one."""
    from gateway.runtime import Runtime

    runtime = Runtime()
    yield runtime
    await runtime.close()
