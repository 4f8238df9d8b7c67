"""How `digest web` serves the app: uvicorn with limits, so no client can hold a connection.

uvicorn arms no timer while a request's headers arrive, so a client sending them a byte at a
time would keep its connection forever; the protocol here closes any connection whose request
headers are not complete within DIGEST_WEB_HEADER_TIMEOUT_SECONDS of the connection or of the
request's first byte, idle keep-alive connections
after DIGEST_WEB_KEEP_ALIVE_SECONDS, and caps header size and concurrent connections. The 400
for a broken request and the 503 past the connection limit carry the app's security headers.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from digest.config import Settings

# What the app's own middleware puts on every page, for the answers uvicorn writes itself.
PROTOCOL_ERROR_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's headers."""

    header_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._awaited_cycle: object = None
        # Enforced here, per connection, so that the 503 carries the security headers too.
        self.connection_limit, self.limit_concurrency = self.limit_concurrency, None

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self._awaited_cycle = self.cycle
        self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.cycle is self._awaited_cycle and not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.connection_limit is not None and len(self.connections) > self.connection_limit:
            self._refuse_connection()
            return
        self._arm_header_deadline()

    def data_received(self, data: bytes) -> None:
        between_requests = self.cycle is None or self.cycle.response_complete
        if self._header_deadline is None and between_requests:
            self._arm_header_deadline()  # the next request began: its headers get the deadline
        super().data_received(data)
        if self.cycle is not self._awaited_cycle:  # a new request's headers are complete
            self._disarm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def _refuse_connection(self) -> None:
        # No request was read yet, so h11 cannot write a response: the bytes are written here.
        body = b"Too many connections; try again in a moment.\n"
        head = [b"HTTP/1.1 503 Service Unavailable", b"content-type: text/plain; charset=utf-8"]
        head += [b"content-length: " + str(len(body)).encode(), b"connection: close"]
        head += [name + b": " + value for name, value in PROTOCOL_ERROR_HEADERS]
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        # uvicorn's own 400 (a broken request) never reaches the app's security middleware.
        self._answer_plainly(400, b"Bad Request", msg)

    def _answer_plainly(self, status: int, reason: bytes, text: str) -> None:
        """A plain-text answer written here, with the security headers, then the close."""
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"connection", b"close"),
            *PROTOCOL_ERROR_HEADERS,
        ]
        for event in (
            h11.Response(status_code=status, headers=headers, reason=reason),
            h11.Data(data=text.encode("ascii")),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        self.transport.close()


def guarded_protocol(header_timeout: float) -> type[GuardedH11Protocol]:
    """The protocol class with this header deadline (uvicorn takes a class, not an instance)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"header_timeout": header_timeout})


def server_config(app: Any, settings: Settings, *, host: str, port: int) -> uvicorn.Config:
    """uvicorn's configuration for `digest web`, every limit from settings."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info",
        proxy_headers=True,
        http=guarded_protocol(settings.web_header_timeout_seconds),
        timeout_keep_alive=settings.web_keep_alive_seconds,
        h11_max_incomplete_event_size=settings.web_max_header_bytes,
        limit_concurrency=settings.web_limit_concurrency,
    )
