"""Who the client is: the connection's address, or, from a trusted proxy, the one it forwards.

`X-Forwarded-For` is anyone's to write, so it is believed only from the addresses in
DIGEST_TRUSTED_PROXIES (none by default: `digest web` then takes every connection's own address,
whatever headers it sends). From a trusted proxy the header is read from the right: each hop a
trusted proxy added is skipped, and the first address that is not a trusted proxy is the client;
anything the client wrote to the left of it is ignored. The same rule serves the per-client
connection limits (`server.py`) and the app's `request.client` (sign-up limits, consent IP).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from digest.config import IPNetwork


def is_trusted(host: str | None, trusted: tuple[IPNetwork, ...]) -> bool:
    if not trusted or not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in trusted)


def _hops(values: Iterable[bytes]) -> list[str]:
    """The addresses of X-Forwarded-For headers, left to right, ports and brackets dropped."""
    hops = []
    for value in values:
        for item in value.decode("latin-1").split(","):
            text = item.strip()
            if text.startswith("[") and "]" in text:
                text = text[1 : text.index("]")]
            elif text.count(":") == 1:
                text = text.partition(":")[0]
            hops.append(text)
    return hops


def client_address(
    peer: str | None, forwarded_for: Iterable[bytes], trusted: tuple[IPNetwork, ...]
) -> str | None:
    """The client's address: `peer` unless it is a trusted proxy (rule: module docstring)."""
    if not is_trusted(peer, trusted):
        return peer
    client = peer
    for hop in reversed(_hops(forwarded_for)):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return client  # a garbled hop: the nearest one we could read stands
        client = hop
        if not is_trusted(hop, trusted):
            return hop
    return client


class ForwardedClientMiddleware:
    """Sets the request's client (and scheme) from a trusted proxy's forwarding headers."""

    def __init__(self, app: ASGIApp, trusted: tuple[IPNetwork, ...]) -> None:
        self.app = app
        self.trusted = trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] == "http" and client and is_trusted(client[0], self.trusted):
            headers = scope["headers"]
            forwarded = [value for name, value in headers if name == b"x-forwarded-for"]
            host = client_address(client[0], forwarded, self.trusted)
            scope = {**scope, "client": (host, 0) if host != client[0] else client}
            proto = [value for name, value in headers if name == b"x-forwarded-proto"]
            if proto and proto[-1].strip().lower() in (b"http", b"https"):
                scope["scheme"] = proto[-1].strip().lower().decode("ascii")
        await self.app(scope, receive, send)
