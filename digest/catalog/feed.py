"""Fetching the site's catalog feed (`DIGEST_CATALOG_URL`): where it is, and its bytes.

The feed is an `https://` URL (`http://` only to a loopback host, for a feed served on the same
machine), a `file://` URL or a path. Over HTTP this is a well-behaved client: a timeout per try,
a size cap enforced while the body streams in, on the bytes received and on what they decode
to (one gzip or deflate coding, inflated piece by piece in `decoding.py`, since httpx inflates
each network chunk whole), conditional requests (`If-None-Match`,
`If-Modified-Since`; a `304` means nothing to import), a `User-Agent` naming the project, and
transient failures (connect errors, timeouts, 429, 5xx) retried here with backoff, the one retry
layer for them. Nothing here reads the database or imports anything: `sync.py` does.

httpx rather than urllib: it was already installed (Prefect depends on it) and gives, maintained
upstream, streamed bodies, per-phase timeouts, and redirects that drop the
`Authorization` header once they leave the feed's origin; urllib would need each written here.
The bearer token is only ever put in that header: never in a URL, a message or a log line.
"""

from __future__ import annotations

import io
import ipaddress
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Self
from urllib.parse import SplitResult, parse_qsl, quote, urlencode, urlsplit, urlunsplit
from urllib.request import url2pathname

import httpx

from digest import __version__
from digest.catalog.decoding import EncodingError, coding_of, decoded
from digest.config import Settings
from digest.errors import CatalogFeedError, ConfigError
from digest.retry import RetryPolicy

USER_AGENT = f"verdict-digest/{__version__} (catalog sync)"
# Longest wait between two tries, whatever the backoff or the server's Retry-After says.
MAX_DELAY_SECONDS = 60.0
# What `decoding.py` reads; httpx would offer br and zstd too when their libraries are installed.
ACCEPTED_CODINGS = "gzip, deflate"
_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class FeedLocation:
    """Where the feed is; `shown` is the address as messages may print it."""

    url: str
    shown: str
    path: Path | None = None  # set for a file:// URL or a plain path
    # What the address came from, for the fix a message suggests: the setting, or `--url`.
    given_as: str = "DIGEST_CATALOG_URL"


@dataclass(frozen=True)
class Validators:
    """What the server said identifies the body we last imported (sent back to ask for a 304)."""

    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class FeedBody:
    """One fetch: the body, or None when the server answered 304 (nothing new)."""

    raw: bytes | None
    validators: Validators = field(default_factory=Validators)


def shown_feed_url(url: str, given_as: str = "DIGEST_CATALOG_URL") -> str:
    """The feed's address without credentials: no user or password, every query value hidden."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return f"(an unparsable {given_as})"
    if not parts.scheme or len(parts.scheme) == 1:  # a path (or a Windows drive letter)
        return url
    if ":" in host:
        host = f"[{host}]"
    query = urlencode([(name, "***") for name, _ in parse_qsl(parts.query, True)], safe="*")
    return urlunsplit((parts.scheme, host + port, quote(parts.path, safe="/%"), query, ""))


def _has_host_and_port(parts: SplitResult) -> bool:
    """A host (no spaces), and a port, if any, from 1 to 65535."""
    try:
        port = parts.port
    except ValueError:
        return False
    host = parts.hostname or ""
    return bool(host) and " " not in host and (port is None or port > 0)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _may_fetch(scheme: str, host: str) -> bool:
    """https anywhere; plain http only to this machine, where nobody on the path can change it."""
    return scheme == "https" or (scheme == "http" and _is_loopback(host))


def locate(url: str, given_as: str = "DIGEST_CATALOG_URL") -> FeedLocation:
    """The feed `url` names (`given_as`: the setting or option it came from, for messages);
    `ConfigError` for a scheme we do not fetch."""
    invalid = ConfigError(
        f"{given_as} is not a valid address. Give the site's https:// feed, a file:// URL or a "
        "path."
    )
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in url):
        raise invalid  # a pasted newline or tab: no address holds one
    shown = shown_feed_url(url, given_as)
    try:
        parts = urlsplit(url)
    except ValueError:
        raise invalid from None
    scheme = parts.scheme.lower()
    if not scheme or len(scheme) == 1:
        return FeedLocation(url=url, shown=shown, path=Path(url), given_as=given_as)
    if scheme == "file":
        if (parts.hostname or "localhost").lower() != "localhost":
            # file://otherhost/x names a file on another machine, not the local /x.
            raise ConfigError(
                f"{given_as}={shown} names a file on another machine ({parts.hostname}), which "
                "cannot be read from here. Give a file on this machine (file:///path, or the "
                "path itself) or the site's https:// feed."
            )
        path = Path(url2pathname(parts.path))
        return FeedLocation(url=url, shown=shown, path=path, given_as=given_as)
    if scheme in ("http", "https") and not _has_host_and_port(parts):
        raise invalid
    if _may_fetch(scheme, parts.hostname or ""):
        return FeedLocation(url=url, shown=shown, given_as=given_as)
    why = "plain http is allowed only to this machine" if scheme == "http" else "unknown scheme"
    unset = ", or leave it unset" if given_as == "DIGEST_CATALOG_URL" else ""
    raise ConfigError(
        f"{given_as}={shown} cannot be fetched ({why}). Set it to the site's https:// "
        f"feed, a file:// URL or a path{unset}."
    )


class _Transient(Exception):
    """A failure worth another try: the reason, and how long the server asked us to wait."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:  # an HTTP date: our own backoff is good enough
        return None


@dataclass(frozen=True)
class FeedClient:
    """Fetches a feed; built from the settings, or by tests with short timeouts and no waits."""

    timeout_seconds: float
    max_bytes: int
    max_attempts: int
    token: str | None = field(default=None, repr=False)
    backoff_seconds: float = 1.0
    sleep: Callable[[float], None] = time.sleep

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        token = settings.catalog_token.get_secret_value() if settings.catalog_token else None
        return cls(
            timeout_seconds=settings.catalog_timeout_seconds,
            max_bytes=settings.catalog_max_bytes,
            max_attempts=settings.catalog_max_attempts,
            token=token or None,
        )

    def fetch(self, location: FeedLocation, validators: Validators) -> FeedBody:
        """The feed's body (or a 304); `CatalogFeedError` naming the address and the reason."""
        if location.path is not None:
            return FeedBody(raw=self._read_file(location))
        with httpx.Client(
            headers=self._headers(validators),
            timeout=self.timeout_seconds,
            follow_redirects=True,
            max_redirects=5,
            event_hooks={"request": [partial(_refuse_plain_redirect, location)]},
        ) as client:
            retry = self._retry_policy()
            for attempt in retry.tries():
                try:
                    return self._try(client, location, validators)
                except _Transient as failure:
                    if not retry.has_next(attempt):
                        raise _failed(
                            location,
                            f"{failure.reason} on each of {attempt} tries",
                            "Check that the site is up, then run again.",
                        ) from None
                    retry.pause(attempt, failure.retry_after)
        raise AssertionError("a retry policy has at least one try")

    def _retry_policy(self) -> RetryPolicy:
        # No jitter: one weekly fetch has nobody to spread out from.
        return RetryPolicy(
            attempts=self.max_attempts,
            base_seconds=self.backoff_seconds,
            max_backoff_seconds=MAX_DELAY_SECONDS,
            max_wait_seconds=MAX_DELAY_SECONDS,
            jitter=False,
            sleep=self.sleep,
        )

    def _headers(self, validators: Validators) -> dict[str, str]:
        headers = {
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
            "Accept-Encoding": ACCEPTED_CODINGS,
        }
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if validators.etag:
            headers["If-None-Match"] = validators.etag
        if validators.last_modified:
            headers["If-Modified-Since"] = validators.last_modified
        return headers

    def _try(
        self, client: httpx.Client, location: FeedLocation, validators: Validators
    ) -> FeedBody:
        """One request; `_Transient` for what another try may fix."""
        try:
            with client.stream("GET", location.url) as response:
                return self._answer(response, location, validators)
        except httpx.TimeoutException:
            raise _Transient(f"no answer within {self.timeout_seconds:g} s") from None
        except httpx.TooManyRedirects:
            raise _failed(location, "too many redirects", f"Check {location.given_as}.") from None
        except httpx.TransportError as error:
            raise _Transient(f"connection failed ({type(error).__name__})") from None

    def _answer(
        self, response: httpx.Response, location: FeedLocation, validators: Validators
    ) -> FeedBody:
        status = response.status_code
        if status == 304:
            return FeedBody(raw=None, validators=validators)
        if status in _TRANSIENT_STATUS or status >= 500:
            retry_after = _retry_after(response.headers.get("Retry-After"))
            raise _Transient(f"HTTP {status}", retry_after)
        if status != 200:
            raise _failed(location, f"HTTP {status}", _fix_for(status, location.given_as))
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise self._too_large(location)
        return FeedBody(
            raw=self._body(response, location),
            validators=Validators(
                etag=response.headers.get("ETag"),
                last_modified=response.headers.get("Last-Modified"),
            ),
        )

    def _body(self, response: httpx.Response, location: FeedLocation) -> bytes:
        """The body, decoded here piece by piece (`decoding.py`), so that the cap holds for what
        is received and for what it decodes to, before either is held in memory."""
        try:
            coding = coding_of(response.headers.get("Content-Encoding"))
        except EncodingError as refused:
            raise _failed(location, str(refused), "Check the site's feed.") from None
        deadline = time.monotonic() + self.timeout_seconds
        received = 0

        def raw_chunks() -> Iterator[bytes]:
            nonlocal received
            for chunk in response.iter_raw():
                received += len(chunk)
                if received > self.max_bytes:
                    raise self._too_large(location)
                if time.monotonic() > deadline:  # a body that trickles in forever
                    raise _Transient(f"the body took longer than {self.timeout_seconds:g} s")
                yield chunk

        body = io.BytesIO()
        try:
            for piece in decoded(raw_chunks(), coding):
                if body.tell() + len(piece) > self.max_bytes:
                    raise self._too_large(location)
                body.write(piece)
        except EncodingError as broken:
            raise _failed(location, str(broken), "Check the site's feed.") from None
        return body.getvalue()  # the buffer itself, not a copy of it

    def _too_large(self, location: FeedLocation) -> CatalogFeedError:
        return _failed(
            location,
            f"it is larger than DIGEST_CATALOG_MAX_BYTES ({self.max_bytes:,} bytes)",
            "Raise DIGEST_CATALOG_MAX_BYTES if the catalog really is that large.",
        )

    def _read_file(self, location: FeedLocation) -> bytes:
        assert location.path is not None
        try:
            with location.path.open("rb") as stream:
                raw = stream.read(self.max_bytes + 1)
        except OSError as error:
            raise _failed(
                location, f"cannot read it ({error.strerror})", f"Check {location.given_as}."
            ) from None
        if len(raw) > self.max_bytes:
            raise self._too_large(location)
        return raw


def _refuse_plain_redirect(location: FeedLocation, request: httpx.Request) -> None:
    """Called before every request, redirects included: a redirect may not downgrade to http."""
    if not _may_fetch(request.url.scheme, request.url.host):
        raise _failed(
            location,
            f"it redirected to {shown_feed_url(str(request.url))}, which is not https",
            f"Point {location.given_as} at the feed's https address.",
        )


def _fix_for(status: int, given_as: str) -> str:
    if status in (401, 403):
        return "Check DIGEST_CATALOG_TOKEN, the feed's bearer token."
    if status in (404, 410):
        return f"Check {given_as}."
    return f"Check {given_as} and the site's feed."


def _failed(location: FeedLocation, reason: str, fix: str) -> CatalogFeedError:
    return CatalogFeedError(
        f"Catalog sync from {location.shown} failed: {reason}; nothing was imported. {fix}"
    )
