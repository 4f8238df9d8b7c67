"""The site's catalog feed, served for real on 127.0.0.1 by the standard library's http.server.

Tests set what it serves (the document, failures to answer first, a hang, gzip) and read back
every request it received, headers included.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.factories import iso


@dataclass
class Served:
    """What the feed answers, changed by tests between requests."""

    document: dict[str, Any] = field(default_factory=dict)
    # Documents served (one per 200) before `document`: a feed that changes between tries.
    earlier: list[dict[str, Any]] = field(default_factory=list)
    # Statuses answered, one per request, before the document is served (503, 429, ...).
    failures: list[int] = field(default_factory=list)
    hang_seconds: float = 0.0
    # Sent with each failure status, when set.
    retry_after: str | None = None
    # Every request is answered 302 to this address, when set.
    redirect_to: str | None = None
    gzip: bool = False
    last_modified: str = field(default_factory=lambda: formatdate(usegmt=True))
    # Every request: path and headers, in order.
    requests: list[dict[str, str]] = field(default_factory=list)

    def body(self) -> bytes:
        return json.dumps(self.document).encode()

    def etag(self) -> str:
        return '"' + hashlib.sha256(self.body()).hexdigest()[:16] + '"'


def feed_document(tools: list[dict[str, Any]], generated_at: Any = None) -> dict[str, Any]:
    document: dict[str, Any] = {"format": "verdict-digest/catalog@1", "tools": tools}
    if isinstance(generated_at, str):
        document["generated_at"] = generated_at
    elif generated_at is not None:
        document["generated_at"] = iso(generated_at)
    return document


class _Handler(BaseHTTPRequestHandler):
    served: Served

    def do_GET(self) -> None:
        served = self.served
        served.requests.append({"path": self.path, **dict(self.headers.items())})
        if served.hang_seconds:
            time.sleep(served.hang_seconds)
        if served.redirect_to:
            self.send_response(302)
            self.send_header("Location", served.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if served.failures:
            self._plain(served.failures.pop(0), b"try later")
            return
        if served.earlier:
            self._json(json.dumps(served.earlier.pop(0)).encode(), '"earlier"')
            return
        etag = served.etag()
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        self._json(served.body(), etag)

    def _json(self, body: bytes, etag: str) -> None:
        served = self.served
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", served.last_modified)
        if served.gzip and "gzip" in self.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _plain(self, status: int, body: bytes) -> None:
        self.send_response(status)
        if self.served.retry_after is not None:
            self.send_header("Retry-After", self.served.retry_after)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout, size cap) closes mid-answer: expected, not a failure.
        return


@contextmanager
def feed_server(served: Served) -> Iterator[str]:
    """Serve `served` on a free loopback port; yields the feed's URL."""
    handler = type("FeedHandler", (_Handler,), {"served": served})
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/catalog.json"
    finally:
        server.shutdown()
        server.server_close()
