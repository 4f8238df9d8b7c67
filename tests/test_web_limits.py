"""`digest web` against hostile clients, over real sockets: slow bodies, too many connections,
smuggling headers, dropped clients, forged X-Forwarded-For, out-of-range token ids."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from digest.config import Settings
from digest.tokens import Purpose, make_token
from digest.web.proxies import client_address
from tests.support.cli import DIGEST
from tests.support.prefect_server import free_port
from tests.support.web_server import Start, served_apps

SUBSCRIBE_HEAD = (
    b"POST /subscribe HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
)


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Iterator[Start]:
    with served_apps(monkeypatch) as start:
        yield start


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def _answer(conn: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    except (ConnectionResetError, TimeoutError):
        pass
    return b"".join(chunks)


def _exchange(port: int, request: bytes) -> bytes:
    with _connect(port) as conn:
        conn.sendall(request)
        return _answer(conn)


def _healthz_seconds(port: int, source: str = "127.0.0.1") -> float:
    """How long GET /healthz takes on a new connection from `source`; fails unless it is a 200."""
    started = time.monotonic()
    with socket.create_connection(
        ("127.0.0.1", port), timeout=5, source_address=(source, 0)
    ) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = _answer(conn)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    return time.monotonic() - started


def test_a_body_that_trickles_is_cut_off_with_a_408_and_one_log_line(
    serve: Start, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # A client sending its body a byte a second is answered 408 once the grace period ends.
    caplog.set_level(logging.INFO)
    port = serve()
    conn = _connect(port)
    conn.sendall(SUBSCRIBE_HEAD + b"Content-Length: 1000\r\n\r\n")
    started = time.monotonic()
    answer = b""
    while time.monotonic() - started < 10:
        try:
            conn.sendall(b"e")
        except (BrokenPipeError, ConnectionResetError):
            break
        conn.settimeout(1)
        try:
            answer += conn.recv(65536)
        except TimeoutError:
            continue
        if answer:
            break
    conn.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"nosniff" in answer.lower()
    assert time.monotonic() - started < 6
    time.sleep(0.3)
    lines = [r.getMessage() for r in caplog.records if "request body" in r.getMessage()]
    assert lines == ["cut off a request body from 127.0.0.1: arriving at 1 bytes/s"] or (
        len(lines) == 1 and lines[0].startswith("cut off a request body from 127.0.0.1")
    )
    assert not any(r.exc_info for r in caplog.records)


def test_a_body_within_the_deadline_and_rate_is_served(serve: Start, settings: Settings) -> None:
    # A normal form post, in two parts a moment apart, reaches the app.
    port = serve()
    body = b"email=ada%40example.com"
    with _connect(port) as conn:
        conn.sendall(SUBSCRIBE_HEAD + f"Content-Length: {len(body)}\r\n".encode())
        conn.sendall(b"Connection: close\r\n\r\n" + body[:5])
        time.sleep(0.5)
        conn.sendall(body[5:])
        answer = _answer(conn)
    assert answer.split(b" ")[1] in (b"200", b"403")  # the page, or its expired-form answer


def test_both_transfer_encoding_and_content_length_are_refused(
    serve: Start, settings: Settings
) -> None:
    # A request a proxy and this server could frame differently never reaches the app.
    port = serve()
    answer = _exchange(
        port,
        SUBSCRIBE_HEAD
        + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 400")
    assert answer.count(b"HTTP/1.1") == 1
    assert b"x-frame-options: deny" in answer.lower()


def test_connections_past_the_per_client_limit_are_refused_and_a_trusted_proxy_is_not(
    serve: Start, settings: Settings
) -> None:
    # One address holds at most DIGEST_WEB_CONNECTIONS_PER_CLIENT; a trusted proxy is many.
    port = serve(DIGEST_WEB_CONNECTIONS_PER_CLIENT="3")
    held = [_connect(port) for _ in range(3)]
    time.sleep(0.2)
    refused = _answer(_connect(port))
    for conn in held:
        conn.close()
    assert refused.startswith(b"HTTP/1.1 503")
    time.sleep(0.2)
    # Answered (the helper requires a 200 within its socket's 5 s), not refused or held: the
    # slots come back as connections close. Speed under load is the attack test's to measure.
    _healthz_seconds(port)

    proxied = serve(DIGEST_WEB_CONNECTIONS_PER_CLIENT="3", DIGEST_TRUSTED_PROXIES="127.0.0.1")
    held = [_connect(proxied) for _ in range(6)]
    time.sleep(0.2)
    _healthz_seconds(proxied)
    for conn in held:
        conn.close()


def test_request_bodies_past_the_per_client_limit_get_a_503_while_gets_go_through(
    serve: Start, settings: Settings
) -> None:
    # Uploads in progress are limited per client; a GET without body is never held back.
    port = serve(DIGEST_WEB_BODIES_PER_CLIENT="2")
    uploads = [_connect(port) for _ in range(2)]
    for conn in uploads:
        conn.sendall(SUBSCRIBE_HEAD + b"Content-Length: 100\r\n\r\nemail=")
    time.sleep(0.2)
    third = _exchange(port, SUBSCRIBE_HEAD + b"Content-Length: 100\r\n\r\nemail=")
    assert third.startswith(b"HTTP/1.1 503")
    _healthz_seconds(port)
    for conn in uploads:
        conn.close()


def test_clients_that_leave_mid_body_give_one_line_each_and_no_traceback(
    serve: Start, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # Forty clients drop their connection halfway through a body: forty lines, no traceback.
    caplog.set_level(logging.INFO)
    port = serve(DIGEST_WEB_BODIES_PER_CLIENT="100")
    for _ in range(40):
        conn = _connect(port)
        conn.sendall(SUBSCRIBE_HEAD + b"Content-Length: 500\r\n\r\nemail=ada")
        conn.close()

    def gone() -> int:
        said = "went away before its request body"
        return sum(1 for r in caplog.records if said in r.getMessage())

    # Each drop is noticed when the server next reads that connection: soon, later under load.
    deadline = time.monotonic() + 30
    while gone() < 40 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # and no line more than one a client
    assert gone() == 40
    assert not [r for r in caplog.records if r.exc_info or "unhandled" in r.getMessage()]
    _healthz_seconds(port)


def test_forwarded_for_is_believed_only_from_a_trusted_proxy() -> None:
    # A client cannot pick its own address; a trusted proxy's hop names the client.
    forged = [b"203.0.113.7, 198.51.100.9"]
    trusted = Settings(DIGEST_TRUSTED_PROXIES="127.0.0.1, 10.0.0.0/8").trusted_proxy_networks
    assert client_address("127.0.0.1", forged, ()) == "127.0.0.1"
    assert client_address("192.0.2.1", forged, trusted) == "192.0.2.1"
    assert client_address("127.0.0.1", forged, trusted) == "198.51.100.9"
    assert client_address("127.0.0.1", [b"203.0.113.7, 10.1.2.3"], trusted) == "203.0.113.7"
    assert client_address("127.0.0.1", [b"garbage, 10.1.2.3"], trusted) == "10.1.2.3"
    assert client_address("127.0.0.1", [b"[2001:db8::1]:443"], trusted) == "2001:db8::1"
    assert client_address("127.0.0.1", [], trusted) == "127.0.0.1"


def test_rotating_forwarded_for_from_loopback_does_not_lift_the_sign_up_limit(
    serve: Start, settings: Settings
) -> None:
    # 127.0.0.1 is no proxy by default: the per-IP limit counts it, whatever header it sends.
    port = serve(DIGEST_SIGNUP_LIMIT_PER_IP="3")
    statuses = []
    for n in range(6):
        body = f"email=p{n}%40example.com".encode()
        answer = _exchange(
            port,
            SUBSCRIBE_HEAD
            + f"X-Forwarded-For: 203.0.113.{n}\r\n".encode()
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body,
        )
        statuses.append(answer.split(b" ")[1])
    assert statuses.count(b"429") >= 3


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_signed_token_for_an_id_no_database_holds_is_a_400(
    serve: Start, settings: Settings, method: str
) -> None:
    # id 10**30 is validly signed, but names nobody: a plain "bad link" page, no 500, no reset.
    port = serve()
    token = make_token(settings.signing_key(), Purpose.UNSUBSCRIBE, 10**30)
    body = b"List-Unsubscribe=One-Click"
    answer = _exchange(
        port,
        f"{method} /unsubscribe/{token} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode()
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body,
    )
    assert answer.startswith(b"HTTP/1.1 400"), answer[:300]


@pytest.mark.slow
def test_two_hundred_slow_bodies_leave_healthz_answering_within_a_second(
    tmp_path: Path,
) -> None:
    # The attack of a locked-out site: 200 connections send full headers and a body byte every
    # few seconds. A real `digest web` process keeps answering /healthz within a second.
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["DIGEST_DATABASE_URL"] = f"sqlite:///{tmp_path / 'digest.db'}"
    process = subprocess.Popen(
        [DIGEST, "web", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # A loaded machine has taken over 30 s to start it: wait longer, and stop waiting at
        # once if it ended (its output then says why, below).
        deadline = time.monotonic() + 90
        while process.poll() is None:
            try:
                _healthz_seconds(port)
                break
            except (OSError, AssertionError):
                assert time.monotonic() < deadline, "digest web did not start within 90 s"
                time.sleep(0.2)
        assert process.poll() is None, "digest web ended before it answered"
        slow = []
        for _ in range(200):
            conn = socket.create_connection(("127.0.0.1", port), timeout=5)
            with contextlib.suppress(OSError):
                conn.sendall(SUBSCRIBE_HEAD + b"Content-Length: 100000\r\n\r\ne")
            slow.append(conn)
        timings = []
        started = time.monotonic()
        while time.monotonic() - started < 12:
            for conn in slow:
                with contextlib.suppress(OSError):
                    conn.sendall(b"e")
            # From a monitor's own address: the attack's holds its 50 connections, and whether
            # one of them is free at this instant is not what this measures.
            timings.append(_healthz_seconds(port, source="127.0.0.2"))
            time.sleep(0.5)
        for conn in slow:
            conn.close()
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=20)
        print(output[-3000:])  # shown by pytest when the test fails
    assert max(timings) < 1.0, timings
    assert "Traceback" not in output
    assert "cut off a request body" in output or "too many request bodies" in output
