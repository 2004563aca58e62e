"""A listening socket held across restarts, as systemd socket activation holds it (deploy/systemd/
gateway-asgi@.socket; daphne's ``--fd``): the gateway's daphne serves on the socket it is handed, and on
SIGTERM closes only its own copy. A connection made while the old process drains, before the next one
runs, is not refused: it waits in the socket's backlog and is served by the next process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess

from tests.support import PYTHON, Process, gateway_env, wait_until

BACKLOG = 64


def listen_queue(port: int) -> int:
    """Connections waiting in the listening socket's accept queue (``ss``)."""
    shown = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    return int(shown.split()[1])


def holds(pid: int, inode: int) -> bool:
    """Whether process ``pid`` has a descriptor of the socket ``inode`` open."""
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}") == f"socket:[{inode}]":
                return True
        except FileNotFoundError:  # closed meanwhile
            continue
    return False


def request(client: socket.socket, path: str) -> None:
    client.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())


def response(client: socket.socket) -> tuple[bytes, bytes]:
    """The whole answer (the request said ``Connection: close``): its head and body."""
    answer = b""
    while chunk := client.recv(65536):
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


def test_a_connection_made_while_the_old_process_drains_waits_for_the_next_one_and_is_not_refused():
    held = socket.create_server(("127.0.0.1", 0), backlog=BACKLOG)  # what systemd's .socket unit holds
    hold_listener = socket.create_server(("127.0.0.1", 0))
    port, inode = held.getsockname()[1], os.fstat(held.fileno()).st_ino
    env = gateway_env(HOLD_PORT=hold_listener.getsockname()[1], HTTP_DRAIN_TIMEOUT=60, LOG_LEVEL="INFO")
    argv = [PYTHON, "-m", "gateway.serve", "--fd", str(held.fileno()), "tests.held_socket_app:application"]
    old = Process(argv, env=env, pass_fds=(held.fileno(),)).start()
    new: Process | None = None
    clients: list[socket.socket] = []
    try:
        clients.append(first := socket.create_connection(("127.0.0.1", port), timeout=30))
        request(first, "/pid")
        assert response(first)[1] == str(old.popen.pid).encode()
        assert holds(old.popen.pid, inode)

        clients.append(holding := socket.create_connection(("127.0.0.1", port), timeout=30))
        request(holding, "/hold")  # read by the old process, answered only when the test says
        hold_listener.settimeout(30)
        notice, _ = hold_listener.accept()
        clients.append(notice)
        assert notice.recv(64).strip() == str(old.popen.pid).encode()

        old.popen.send_signal(signal.SIGTERM)
        wait_until(lambda: not holds(old.popen.pid, inode), 30, "the old process never let its copy of the socket go")
        assert old.popen.poll() is None  # still draining: it owes /hold an answer

        clients.append(waiting := socket.create_connection(("127.0.0.1", port), timeout=30))  # not refused
        request(waiting, "/pid")
        wait_until(lambda: listen_queue(port) == 1, 10, "the connection is not in the backlog")  # none accepts it
        assert old.popen.poll() is None

        new = Process(argv, env=env, pass_fds=(held.fileno(),)).start()
        assert response(waiting)[1] == str(new.popen.pid).encode()  # served by the next process
        assert old.popen.poll() is None  # which ran while the old one still drained

        notice.close()  # the old process may answer /hold now, and stop
        head, body = response(holding)
        assert head.startswith(b"HTTP/1.1 200 ") and b"connection: close" in head.lower()
        assert body == str(old.popen.pid).encode()
        assert old.popen.wait(30) == 0, old.output
    finally:
        for client in clients:
            client.close()
        old.kill()
        if new is not None:
            assert new.stop() == 0, new.output
        held.close()
        hold_listener.close()
