"""`digest web` under a real uvicorn on 127.0.0.1: slow clients are cut off, logs hold no token."""

from __future__ import annotations

import io
import logging
import socket
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from digest.config import Settings, get_settings
from digest.db import get_engine
from digest.tokens import Purpose, make_token
from tests.support.web_rows import make_subscriber
from tests.support.web_server import served_apps


@pytest.fixture
def served(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, Settings]]:
    """The app as `digest web` serves it, on a free loopback port, header deadline 1 s, at most
    three connections."""
    with served_apps(monkeypatch) as start:
        port = start(DIGEST_WEB_HEADER_TIMEOUT_SECONDS="1", DIGEST_WEB_LIMIT_CONCURRENCY="3")
        yield port, get_settings()


def _connect(port: int) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    return conn


def _read_all(conn: socket.socket) -> bytes:
    chunks = []
    while chunk := conn.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_client_sending_headers_slowly_is_cut_off(served: tuple[int, Settings]) -> None:
    # A slowloris client that never finishes its headers loses the connection at the deadline.
    port, _ = served
    conn = _connect(port)
    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    closed = False
    try:
        while time.monotonic() - started < 6:
            conn.sendall(b"X")
            time.sleep(0.2)
    except (BrokenPipeError, ConnectionResetError):
        closed = True
    if not closed:
        conn.settimeout(3)
        closed = conn.recv(100) == b""
    assert closed and time.monotonic() - started < 6
    conn.close()


def test_a_prompt_client_is_answered_on_one_connection_twice(served: tuple[int, Settings]) -> None:
    # The deadline spares a normal keep-alive client: both of its requests are answered.
    port, _ = served
    conn = _connect(port)
    for _ in range(2):
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while not answer.endswith(b'"ok"}'):
            chunk = conn.recv(65536)
            assert chunk, answer
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200")
        time.sleep(1.5)  # longer than the header deadline, shorter than keep-alive
    conn.close()


def test_uvicorns_own_400_carries_the_security_headers(served: tuple[int, Settings]) -> None:
    # A broken request is answered by uvicorn, not the app: it still says nosniff and DENY.
    port, _ = served
    conn = _connect(port)
    conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")
    answer = _read_all(conn).lower()
    conn.close()
    assert answer.startswith(b"http/1.1 400")
    assert b"x-content-type-options: nosniff" in answer
    assert b"x-frame-options: deny" in answer


def test_an_error_on_a_tokened_path_logs_no_token(served: tuple[int, Settings]) -> None:
    # A 500 on /unsubscribe/<token> is logged with the token blanked, in every logger's lines.
    port, current = served
    engine = get_engine(current.database_url)
    token = make_token(current.signing_key(), Purpose.UNSUBSCRIBE, make_subscriber(engine))
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    loggers = [
        logging.getLogger(),
        logging.getLogger("uvicorn"),
        logging.getLogger("uvicorn.access"),
    ]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE subscriber RENAME TO subscriber_gone"))
        conn = _connect(port)
        request = f"POST /unsubscribe/{token} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
        conn.sendall(request.encode() + b"Connection: close\r\n\r\n")
        answer = _read_all(conn)
        conn.close()
        time.sleep(0.3)
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    logged = stream.getvalue()
    assert answer.startswith(b"HTTP/1.1 500")
    assert b"nosniff" in answer.lower()
    assert "/unsubscribe/[token]" in logged
    assert token not in logged


def test_a_connection_past_the_limit_gets_a_503_with_the_security_headers(
    served: tuple[int, Settings],
) -> None:
    # Past DIGEST_WEB_LIMIT_CONCURRENCY connections, the next is refused, headers and all.
    port, _ = served
    held = [_connect(port) for _ in range(3)]
    for conn in held:
        conn.sendall(b"GET /healthz HTTP/1.1\r\n")  # headers unfinished: the connections stay
    time.sleep(0.2)
    extra = _connect(port)
    answer = _read_all(extra).lower()
    extra.close()
    for conn in held:
        conn.close()
    assert answer.startswith(b"http/1.1 503")
    assert b"x-content-type-options: nosniff" in answer


def test_websocket_upgrade_requests_are_plain_requests_and_give_their_connection_back(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The app speaks no WebSocket: an upgrade request is answered as any request, security
    # headers and all, and its connection counts against the address only while it is open.
    # Handed to uvicorn's WebSocket protocol, each left its count taken: the limit's worth of
    # them locked the address out.
    upgrade = (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    with served_apps(monkeypatch) as start:
        port = start(DIGEST_WEB_CONNECTIONS_PER_CLIENT="3")
        for _ in range(6):
            conn = _connect(port)
            conn.sendall(upgrade)
            head = conn.recv(65536).lower()
            conn.close()
            assert head.startswith(b"http/1.1 200"), head[:200]
            assert b"x-content-type-options: nosniff" in head
        time.sleep(0.2)
        conn = _connect(port)
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = _read_all(conn)
        conn.close()
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
