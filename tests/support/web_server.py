"""`digest web` as it serves, in this process: the app under uvicorn with the server's protocol
and limits, on a free loopback port, for tests where the socket matters."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import uvicorn

from digest.config import get_settings
from digest.web import access_log
from digest.web.app import create_app
from digest.web.server import server_config

Start = Callable[..., int]


@contextmanager
def served_apps(monkeypatch: pytest.MonkeyPatch) -> Iterator[Start]:
    """A function that starts the app as `digest web` serves it (in this process, on a free
    loopback port) with the given environment and returns the port; all stop on leaving."""
    servers: list[tuple[uvicorn.Server, threading.Thread, socket.socket]] = []
    factory = logging.getLogRecordFactory()

    def start(**env: str) -> int:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        current = get_settings()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(512)
        port = int(listener.getsockname()[1])
        server = uvicorn.Server(
            server_config(create_app(current), current, host="127.0.0.1", port=port)
        )
        access_log.install()
        thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        servers.append((server, thread, listener))
        return port

    try:
        yield start
    finally:
        _stop(servers)
        logging.setLogRecordFactory(factory)


def _stop(servers: list[tuple[uvicorn.Server, threading.Thread, socket.socket]]) -> None:
    for server, thread, listener in servers:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()
