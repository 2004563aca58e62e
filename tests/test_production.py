"""The production profile (DEBUG off): refuses insecure settings, checks WebSocket origins."""

from __future__ import annotations

import subprocess

import pytest
import websockets

from tests.support import PYTHON, ROOT, Process, ahttp, free_port, gateway_env, manage, migrate, receive

SECRET = "a-production-secret-that-is-certainly-long-enough"


def production_env(tmp_path, **settings):
    defaults = {"SECRET_KEY": SECRET, "ALLOWED_HOSTS": "127.0.0.1"}
    return gateway_env(DEBUG="false", DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", **{**defaults, **settings})


def refused(argv: list[str], env: dict) -> str:
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_default_secret_and_hosts_are_refused(tmp_path):
    env = production_env(tmp_path, SECRET_KEY="dev-insecure-only-for-make-run", ALLOWED_HOSTS="*")
    output = refused(manage("rungateway"), env)
    assert "gateway.E001" in output and "SECRET_KEY" in output
    assert "gateway.E002" in output and "ALLOWED_HOSTS" in output
    daphne = [PYTHON, "-m", "daphne", "-p", str(free_port()), "config.asgi:application"]
    assert "gateway.E001" in refused(daphne, env)  # any ASGI server, not only our commands


def test_open_rooms_are_refused(tmp_path):
    assert "gateway.E004" in refused(manage("runsmtp"), production_env(tmp_path, ROOMS_OPEN="true"))


def test_anonymous_mqtt_to_another_machine_is_refused(tmp_path):
    env = production_env(tmp_path, MQTT_URL="mqtt://broker.example.com:1883")
    output = refused(manage("runmqtt"), env)
    assert "gateway.E003" in output and "mqtt://user:password@host:port" in output


def test_allowed_settings_start(tmp_path):
    env = production_env(tmp_path, MQTT_URL="mqtt://gateway:secret@broker.example.com:1883")
    result = subprocess.run(manage("check"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def production_daphne(tmp_path):
    port = free_port()
    env = production_env(tmp_path)
    migrate(env)
    subprocess.run(manage("addroom", "lobby", "--public"), cwd=ROOT, env=env, check=True, capture_output=True)
    daphne = Process([PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"], env=env)
    daphne.start()
    daphne.wait_for("Listening on TCP address")
    yield port
    daphne.stop()


async def test_websocket_from_a_foreign_origin_is_refused(production_daphne):
    url = f"ws://127.0.0.1:{production_daphne}/ws/chat/lobby/"
    with pytest.raises(websockets.InvalidStatus) as refusal:
        await websockets.connect(url, origin="http://evil.example", open_timeout=10)
    assert refusal.value.response.status_code == 403
    async with websockets.connect(url, origin=f"http://127.0.0.1:{production_daphne}", open_timeout=10) as ws:
        assert (await receive(ws, "history"))["messages"] == []


async def test_the_message_api_answers_only_for_allowed_hosts(production_daphne):
    posted = await ahttp("POST", f"http://127.0.0.1:{production_daphne}/api/rooms/lobby/messages", {"message": "hi"})
    assert posted[0] == 201
    refused = await ahttp("POST", f"http://localhost:{production_daphne}/api/rooms/lobby/messages", {"message": "x"})
    assert refused == (400, {"type": "error", "error": "the Host header is not one of ALLOWED_HOSTS"})
