"""Admission instead of refusal (gateway/admission.py, MAX_PENDING_HANDSHAKES): with one handshake in
progress at most, a second connection waits in the kernel's listen backlog (LISTEN_BACKLOG long) until
the first handshake is answered, then is served; nothing is refused."""

from __future__ import annotations

import socket
import subprocess

import pytest

from gateway.server import with_backlog
from tests.support import PYTHON, Process, free_port, gateway_env, wait_for_port, wait_until

BACKLOG = 77


def listen_queue(port: int) -> tuple[int, int]:
    """The listening socket's (connections waiting to be accepted, backlog), as ``ss`` shows them."""
    shown = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    return int(shown[1]), int(shown[2])


def upgrade(port: int, path: str) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    client.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    return client


def status_line(client: socket.socket) -> bytes:
    answer = b""
    while b"\r\n" not in answer:
        chunk = client.recv(1024)
        assert chunk, f"closed without an answer: {answer!r}"
        answer += chunk
    return answer.split(b"\r\n", 1)[0]


@pytest.mark.parametrize("listening", ["port", "held socket"])
def test_a_second_handshake_waits_in_the_backlog_until_the_first_is_answered_and_none_is_refused(tmp_path, listening):
    """On its own port, and on a listening socket it is handed (``--fd``, as systemd's socket units do):
    admission pauses and resumes an adopted port the same way."""
    env = gateway_env(MAX_PENDING_HANDSHAKES=1, LISTEN_BACKLOG=BACKLOG, ADMISSION_DIR=tmp_path)
    held = None
    if listening == "port":
        port = free_port()
        where = ["-b", "127.0.0.1", "-p", str(port)]
    else:
        held = socket.create_server(("127.0.0.1", 0), backlog=BACKLOG)  # the backlog is its creator's
        port = held.getsockname()[1]
        where = ["--fd", str(held.fileno())]
    argv = [PYTHON, "-m", "gateway.serve", *where, "tests.admission_app:application"]
    server = Process(argv, env=env, pass_fds=() if held is None else (held.fileno(),)).start()
    clients: list[socket.socket] = []
    try:
        if held is None:
            wait_for_port(port, alive=lambda: server.popen.poll() is None, timeout=30)
        else:  # a probe would only wait in the backlog: the server says when it serves
            server.wait_for("Listening on TCP address")
        assert listen_queue(port)[1] == BACKLOG  # Twisted's own would be 50
        clients.append(first := upgrade(port, "/hold"))
        wait_until(lambda: (tmp_path / "holding").exists(), 10, "the first handshake never reached the application")
        clients.append(second := upgrade(port, "/now"))
        wait_until(lambda: listen_queue(port)[0] == 1, 10, "the second connection was not left in the backlog")
        second.settimeout(1)
        with pytest.raises(TimeoutError):  # not served while the first handshake is in progress
            second.recv(1)
        assert listen_queue(port)[0] == 1
        (tmp_path / "release").touch()
        second.settimeout(10)
        assert status_line(first).startswith(b"HTTP/1.1 101 ")
        assert status_line(second).startswith(b"HTTP/1.1 101 ")
        assert listen_queue(port)[0] == 0
    finally:
        for client in clients:
            client.close()
        assert server.stop() == 0, server.output
        if held is not None:
            held.close()


def test_a_silent_connection_holds_its_place_only_briefly(tmp_path):
    """A connection that sends nothing holds a place in admission for ADMISSION_GRACE (1 s), not until
    its header deadline: a few silent connections cannot keep the server closed to everyone."""
    port = free_port()
    env = gateway_env(MAX_PENDING_HANDSHAKES=1, HTTP_HEADER_TIMEOUT=60, ADMISSION_DIR=tmp_path)
    argv = [PYTHON, "-m", "gateway.serve", "-b", "127.0.0.1", "-p", str(port), "tests.admission_app:application"]
    server = Process(argv, env=env).start()
    clients: list[socket.socket] = []
    try:
        wait_for_port(port, alive=lambda: server.popen.poll() is None, timeout=30)
        wait_until(lambda: listen_queue(port)[0] == 0, 10, "the port probe was not accepted")
        clients.append(socket.create_connection(("127.0.0.1", port), timeout=10))  # silent
        wait_until(lambda: listen_queue(port)[0] == 0, 10, "the silent connection was not accepted")
        clients.append(second := upgrade(port, "/now"))
        assert status_line(second).startswith(b"HTTP/1.1 101 ")
    finally:
        for client in clients:
            client.close()
        assert server.stop() == 0, server.output


def test_endpoints_get_the_backlog_unless_they_name_one_or_take_none():
    assert with_backlog("tcp:port=8000:interface=127.0.0.1", 4096) == "tcp:port=8000:interface=127.0.0.1:backlog=4096"
    assert with_backlog("unix:/run/gateway.sock", 10) == "unix:/run/gateway.sock:backlog=10"
    assert with_backlog("tcp:port=8000:backlog=5", 4096) == "tcp:port=8000:backlog=5"
    assert with_backlog("fd:fileno=3", 4096) == "fd:fileno=3"
    assert with_backlog("tcp:port=8000", 0) == "tcp:port=8000"
