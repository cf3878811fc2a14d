"""A small fake external service on 127.0.0.1 that the example's tasks call, and that the demo breaks.

Line protocol: the client sends one line, the server answers ``OK`` or, while
down, ``ERR``. It counts every call and the calls made while it was down.
"""

from __future__ import annotations

import os
import socket
import socketserver
import threading

__all__ = ["FakeDependency", "call"]


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        server = self.server
        assert isinstance(server, FakeDependency)
        self.rfile.readline()
        with server.lock:
            server.calls += 1
            down = server.down
            server.calls_while_down += int(down)
        self.wfile.write(b"ERR\n" if down else b"OK\n")


class FakeDependency(socketserver.ThreadingTCPServer):
    """The fake service; ``down = True`` makes it answer errors."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.down = False
        self.calls = 0
        self.calls_while_down = 0
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, name="fake-dependency", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> FakeDependency:
        self._thread.start()
        os.environ["PRISMATIC_DEMO_DEP_PORT"] = str(self.port)
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def call(item: object) -> None:
    """Call the fake service (port from ``PRISMATIC_DEMO_DEP_PORT``); ConnectionError when it is down."""
    port = int(os.environ.get("PRISMATIC_DEMO_DEP_PORT", "0"))
    if not port:
        return  # no fake service configured: nothing external to call
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(f"{item}\n".encode())
        answer = conn.makefile().readline().strip()
    if answer != "OK":
        raise ConnectionError(f"external API refused the call for item {item}")
