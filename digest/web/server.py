"""How `digest web` serves the app: uvicorn with limits, so no client can hold the server.

`digest web` is built to face the internet directly; behind a proxy the same limits hold (see
docs/web.md). uvicorn arms no timer while a request's headers or body arrive, so a client
sending them a byte at a time would keep its connection, and a slot of the connection limit,
forever. The protocol here, per connection:

- closes it if a request's headers are not complete within DIGEST_WEB_HEADER_TIMEOUT_SECONDS
  of the connection or of the request's first byte, and idle keep-alive connections after
  DIGEST_WEB_KEEP_ALIVE_SECONDS;
- answers 408 and closes it if a request body is not complete within
  DIGEST_WEB_BODY_TIMEOUT_SECONDS, or arrives slower than DIGEST_WEB_BODY_MIN_BYTES_PER_SECOND
  once `BODY_GRACE_SECONDS` have passed (while the app is not reading, the clock is the app's);
- refuses (503) a connection past DIGEST_WEB_LIMIT_CONCURRENCY, or past
  DIGEST_WEB_CONNECTIONS_PER_CLIENT from one address (a trusted proxy's connections are many
  clients, so they count only towards the total), and a request body past
  DIGEST_WEB_BODIES_PER_CLIENT bodies arriving at once from one client; a request without a
  body (GET /healthz) is never held back by the bodies of others;
- refuses (400) a request with both Transfer-Encoding and Content-Length, which a proxy and
  this server could frame differently (request smuggling).

Each refusal or cut is one log line, never a traceback; a client that goes away mid-body is one
line too. The answers written here carry the app's security headers.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from digest.config import IPNetwork, Settings
from digest.web.proxies import client_address, is_trusted

log = logging.getLogger(__name__)

# A body's first seconds are not judged by rate: connections start slowly.
BODY_GRACE_SECONDS = 3.0
_BODY_CHECK_SECONDS = 1.0

# What the app's own middleware puts on every page, for the answers uvicorn writes itself.
PROTOCOL_ERROR_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


@dataclass(frozen=True)
class Limits:
    """Every limit of the protocol, from settings."""

    header_timeout: float = 10.0
    max_header_bytes: int = 16 * 1024
    body_timeout: float = 30.0
    body_min_rate: int = 1000
    connections: int | None = None
    connections_per_client: int = 50
    bodies_per_client: int = 10
    trusted: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            header_timeout=settings.web_header_timeout_seconds,
            max_header_bytes=settings.web_max_header_bytes,
            body_timeout=settings.web_body_timeout_seconds,
            body_min_rate=settings.web_body_min_bytes_per_second,
            connections=settings.web_limit_concurrency,
            connections_per_client=settings.web_connections_per_client,
            bodies_per_client=settings.web_bodies_per_client,
            trusted=settings.trusted_proxy_networks,
        )


@dataclass
class ClientCounts:
    """Open connections and arriving bodies per client, shared by one server's connections
    (all on the event loop's one thread, so no lock)."""

    connections: Counter[str] = field(default_factory=Counter)
    bodies: Counter[str] = field(default_factory=Counter)


def _take(counter: Counter[str], key: str, limit: int) -> bool:
    if counter[key] >= limit:
        return False
    counter[key] += 1
    return True


def _give_back(counter: Counter[str], key: str | None) -> None:
    if key is not None:
        counter[key] -= 1
        if counter[key] <= 0:
            del counter[key]


@dataclass
class _Body:
    """The request body arriving on a connection: whose, since when, how much so far."""

    client: str
    started: float
    received: int = 0
    timer: asyncio.TimerHandle | None = None


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the deadlines and limits of the module docstring."""

    limits: Limits = Limits()
    counts: ClientCounts = ClientCounts()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._awaited_cycle: object = None
        self._client_key: str | None = None
        self._body: _Body | None = None
        # Enforced here, per connection, so that the 503 carries the security headers too.
        self.limit_concurrency = None
        # Every event h11 parses passes `_screen` first (an instance attribute wins over the
        # class's method; uvicorn calls `self.conn.next_event()`).
        self._next_event = self.conn.next_event
        self.conn.next_event = self._screened_event  # type: ignore[method-assign]

    # -- headers ---------------------------------------------------------------------------------

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self._awaited_cycle = self.cycle
        self._header_deadline = self.loop.call_later(
            self.limits.header_timeout, self._headers_too_slow
        )

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.cycle is self._awaited_cycle and not self.transport.is_closing():
            log.info("closed a connection from %s: request headers too slow", self._peer())
            self.transport.close()

    # -- connections -----------------------------------------------------------------------------

    def _peer(self) -> str:
        return self.client[0] if self.client else "an unknown address"

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limits, peer = self.limits, self._peer()
        if limits.connections is not None and len(self.connections) > limits.connections:
            self._refuse_connection("the server's connection limit is reached")
            return
        if not is_trusted(peer, limits.trusted):
            if not _take(self.counts.connections, peer, limits.connections_per_client):
                self._refuse_connection("too many connections from this address")
                return
            self._client_key = peer
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
        if self._body is not None:
            log.info("client %s went away before its request body was complete", self._body.client)
            self._end_body()
        _give_back(self.counts.connections, self._client_key)
        self._client_key = None
        super().connection_lost(exc)

    def _unsupported_upgrade_warning(self) -> None:
        # The app speaks no WebSocket (uvicorn's `ws` is "none"), so an upgrade request is
        # answered as a plain request. uvicorn would log two warnings for each, one of them
        # advising to install a WebSocket library: noise anyone could write into the log.
        log.debug("answered an upgrade request from %s as a plain request", self._peer())

    def _refuse_connection(self, why: str) -> None:
        # No request was read yet, so h11 cannot write a response: the bytes are written here.
        log.warning("refused a connection from %s: %s", self._peer(), why)
        body = b"Too many connections; try again in a moment.\n"
        head = [b"HTTP/1.1 503 Service Unavailable", b"content-type: text/plain; charset=utf-8"]
        head += [b"content-length: " + str(len(body)).encode(), b"connection: close"]
        head += [b"retry-after: 5"]
        head += [name + b": " + value for name, value in PROTOCOL_ERROR_HEADERS]
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        self.transport.close()

    # -- requests and bodies ---------------------------------------------------------------------

    def _screened_event(self) -> Any:
        """h11's next event, after the checks of this protocol; PAUSED once it has answered."""
        event = self._next_event()
        if isinstance(event, h11.Request):
            if not self._admit(event):
                return h11.PAUSED
        elif isinstance(event, h11.Data) and self._body is not None:
            self._body.received += len(event.data)
        elif isinstance(event, h11.EndOfMessage):
            self._end_body()
        return event

    def _admit(self, request: h11.Request) -> bool:
        """Whether the request may go to the app; if not, it has been answered and closed."""
        head = len(request.target) + sum(len(n) + len(v) + 4 for n, v in request.headers)
        if head > self.limits.max_header_bytes:
            # h11's own cap holds only while a head is incomplete; one read can bring it whole.
            log.warning("refused a request from %s: %d bytes of headers", self._peer(), head)
            self._answer_plainly(431, b"Request Header Fields Too Large", "Headers too large.")
            return False
        names = [name.lower() for name, _ in request.headers]
        chunked = b"transfer-encoding" in names
        if chunked and b"content-length" in names:
            self._answer_plainly(400, b"Bad Request", "Give Content-Length or Transfer-Encoding.")
            log.warning(
                "refused a request from %s: both Transfer-Encoding and Content-Length",
                self._peer(),
            )
            return False
        length = next((v for n, v in request.headers if n.lower() == b"content-length"), b"0")
        if not chunked and int(length.strip() or b"0") == 0:  # h11 has checked it is digits
            return True
        forwarded = [v for n, v in request.headers if n.lower() == b"x-forwarded-for"]
        client = client_address(self._peer(), forwarded, self.limits.trusted) or self._peer()
        if not _take(self.counts.bodies, client, self.limits.bodies_per_client):
            log.warning("refused a request from %s: too many request bodies at once", client)
            self._answer_plainly(503, b"Service Unavailable", "Too many requests at once.")
            return False
        self._body = _Body(client=client, started=self.loop.time())
        self._body.timer = self.loop.call_later(_BODY_CHECK_SECONDS, self._check_body)
        return True

    def _check_body(self) -> None:
        body = self._body
        if body is None:
            return
        elapsed = self.loop.time() - body.started
        if self.flow.read_paused:  # the app is not reading: its time, not the client's
            body.started += _BODY_CHECK_SECONDS
        elif elapsed > self.limits.body_timeout:
            return self._body_too_slow(f"not complete after {self.limits.body_timeout:g} s")
        elif elapsed >= BODY_GRACE_SECONDS and body.received < self.limits.body_min_rate * elapsed:
            rate = body.received / elapsed
            return self._body_too_slow(f"arriving at {rate:.0f} bytes/s")
        body.timer = self.loop.call_later(_BODY_CHECK_SECONDS, self._check_body)

    def _body_too_slow(self, why: str) -> None:
        assert self._body is not None
        log.warning("cut off a request body from %s: %s", self._body.client, why)
        self._end_body()
        if self.cycle is not None and not self.cycle.response_started:
            self.cycle.response_started = True  # the app's own answer, if any, goes nowhere
            self._answer_plainly(408, b"Request Timeout", "The request body came too slowly.")
        else:
            self.transport.close()

    def _end_body(self) -> None:
        if self._body is None:
            return
        if self._body.timer is not None:
            self._body.timer.cancel()
        _give_back(self.counts.bodies, self._body.client)
        self._body = None

    # -- answers written here --------------------------------------------------------------------

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
        try:
            for event in (
                h11.Response(status_code=status, headers=headers, reason=reason),
                h11.Data(data=text.encode("ascii")),
                h11.EndOfMessage(),
            ):
                self.transport.write(self.conn.send(event))
        except h11.LocalProtocolError:
            pass  # h11 cannot answer in this state: closing is the answer
        self.transport.close()


def guarded_protocol(limits: Limits) -> type[GuardedH11Protocol]:
    """The protocol class for one server: its limits, and client counts of its own (uvicorn
    takes a class, not an instance)."""
    return type(
        "GuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits, "counts": ClientCounts()}
    )


def server_config(app: Any, settings: Settings, *, host: str, port: int) -> uvicorn.Config:
    """uvicorn's configuration for `digest web`, every limit from settings. uvicorn's own proxy
    headers are off: the app believes X-Forwarded-For from DIGEST_TRUSTED_PROXIES only
    (`digest.web.proxies`), where uvicorn would believe 127.0.0.1 by default."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info",
        proxy_headers=False,
        # No WebSocket: uvicorn would hand an upgraded connection to a protocol that bypasses
        # GuardedH11Protocol, whose per-address count was then never given back (50 upgrade
        # requests locked an address out until restart).
        ws="none",
        http=guarded_protocol(Limits.from_settings(settings)),
        timeout_keep_alive=settings.web_keep_alive_seconds,
        h11_max_incomplete_event_size=settings.web_max_header_bytes,
    )
