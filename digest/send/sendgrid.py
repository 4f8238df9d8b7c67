"""Sending through SendGrid's v3 Mail Send API: one request per batch, over kept-alive connections.

One batch is one request: one personalization per recipient, in recipient order, carrying the
recipient's address, token substitutions, List-Unsubscribe headers and our own ids as custom
args. SendGrid's answers are translated here, and only here, into the backend errors of
`digest.send.base`: 429 waits for the rate-limit reset, 5xx and network failures are retried with
backoff (`digest.retry.RetryPolicy`), 400 is permanent, 401/403 stops the run. The API key never
leaves the Authorization header: not in errors, not in logs, not in repr.

A batch held for a later `send_at` (scheduled sends: `batch_id` from `POST /v3/mail/batch`) is
never retried blind: a timeout, a dropped connection or a 5xx may hide an accepted request, so
it raises `AmbiguousSendError` and the sender cancels the batch
(`POST /v3/user/scheduled_sends`, confirmed with a GET) before sending again. A connection
refused never reached SendGrid and is retried as before.

The transport is httpx, not the `sendgrid` package's client (kept for its event-webhook helper):
that client sends `Connection: close`, so every request paid a new TCP connection, and against
SendGrid a new TLS session (two more round trips each); it has no timeout unless one is set, no
pool, and spent about 4 ms of CPU per 1,000-recipient request against httpx's 1.3 ms, measured
against the fake on this machine. One `httpx.Client` is shared by the sender's threads: its
connection pool is bounded (`POOL_CONNECTIONS`) and keeps connections alive between requests.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from datetime import datetime
from enum import Enum
from typing import Any, Self

import httpx
import orjson

from digest.config import CANCEL_MARGIN_SECONDS, Settings
from digest.errors import ConfigError
from digest.retry import RetryPolicy
from digest.send.base import (
    AmbiguousSendError,
    BaseBackend,
    BatchClosedError,
    BatchResult,
    CancelRefusedError,
    OutgoingBatch,
    PermanentSendError,
    ProviderBatch,
    SendAuthError,
    TransientSendError,
)
from digest.send.sendgrid_request import encode_personalizations, request_body

logger = logging.getLogger(__name__)

SEND_PATH = "/v3/mail/send"
_BEARER_RE = re.compile(r"Bearer\s+[^\s'\",}]+")


class _Verdict(Enum):
    """What an HTTP error status from SendGrid means for the batch."""

    AUTH = "auth"
    PERMANENT = "permanent"
    RATE_LIMITED = "rate-limited"
    RETRY = "retry"
    UNEXPECTED = "unexpected"


_STATUS_VERDICTS: dict[int, _Verdict] = {
    400: _Verdict.PERMANENT,
    401: _Verdict.AUTH,
    403: _Verdict.AUTH,
    413: _Verdict.PERMANENT,
    429: _Verdict.RATE_LIMITED,
}


def _verdict(status: int) -> _Verdict:
    if status in _STATUS_VERDICTS:
        return _STATUS_VERDICTS[status]
    return _Verdict.RETRY if status >= 500 else _Verdict.UNEXPECTED


# A field such as "personalizations.12.to.0.email" blames the 13th recipient of the request.
_PERSONALIZATION_FIELD = re.compile(r"^personalizations\.(\d+)(?:\.|$)")


def _error_list(body: bytes | str | None) -> list[dict[str, Any]]:
    """SendGrid's `{"errors": [{"message", "field"}]}`, or [] when the body is not that."""
    if not body:
        return []
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        errors = json.loads(text).get("errors") or []
    except (ValueError, AttributeError):
        return []
    return (
        [error for error in errors if isinstance(error, dict)] if isinstance(errors, list) else []
    )


def refused_recipients(body: bytes | str | None, batch: OutgoingBatch) -> dict[int, str]:
    """The recipients a 400 blames (delivery id -> SendGrid's message), or {} if it blames the
    request as a whole: any error not about one personalization makes the request at fault."""
    blamed: dict[int, str] = {}
    delivery_ids = batch.delivery_ids
    errors = _error_list(body)
    for error in errors:
        found = _PERSONALIZATION_FIELD.match(str(error.get("field") or ""))
        index = int(found.group(1)) if found else -1
        if not 0 <= index < len(delivery_ids):
            return {}
        # The row names the recipient; the field's remainder says what of theirs was wrong.
        where = {**error, "field": _PERSONALIZATION_FIELD.sub("", str(error["field"]))}
        blamed[delivery_ids[index]] = _described(where)[:500]
    return blamed


def _described(error: dict[str, Any]) -> str:
    field = error.get("field")
    return f"{error.get('message')} (field {field})" if field else str(error.get("message"))


def _sendgrid_errors(body: bytes | str | None) -> str:
    """SendGrid's `{"errors": [{"message", "field"}]}` as one readable line."""
    if not body:
        return "no details given"
    parts = [_described(error) for error in _error_list(body)]
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    joined = "; ".join(parts) if parts else text.strip()
    return joined[:1000] or "no details given"


_JSON_UTF8 = "application/json; charset=utf-8"
BATCH_PATH = "/v3/mail/batch"
SCHEDULED_PATH = "/v3/user/scheduled_sends"
# Connections kept open to SendGrid: the sender's requests in flight, and its cancels beside them.
POOL_CONNECTIONS = 16


class _HTTPStatusError(Exception):
    """A non-2xx answer, with what the translation below needs of it."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.status_code = response.status_code
        self.body = response.content
        self.headers = response.headers


def _never_arrived(exc: BaseException) -> bool:
    """No connection was made (refused, unreachable, no free connection in time): the request
    never reached SendGrid, so repeating it is safe."""
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


class SendGridBackend(BaseBackend):
    """Sends each batch as one SendGrid Mail Send request, retrying what is worth retrying."""

    # SendGrid pauses or cancels at most 10 batches at once.
    cancel_slots = 10
    recipient_encoder = staticmethod(encode_personalizations)

    def __init__(
        self,
        settings: Settings,
        *,
        max_attempts: int | None = None,
        backoff_base_seconds: float = 0.5,
        backoff_max_seconds: float = 30.0,
        max_rate_limit_wait_seconds: float = 60.0,
        timeout_seconds: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        rng: Any = None,
    ) -> None:
        key = settings.sendgrid_api_key
        if key is None or not key.get_secret_value().strip():
            raise ConfigError(
                "SENDGRID_API_KEY is not set, and DIGEST_EMAIL_BACKEND=sendgrid needs it: set "
                "SENDGRID_API_KEY to a SendGrid API key with the Mail Send permission, or use "
                "DIGEST_EMAIL_BACKEND=outbox."
            )
        host = settings.sendgrid_host.rstrip("/")
        if not host.startswith(("http://", "https://")):
            raise ConfigError(
                f"DIGEST_SENDGRID_HOST={host!r} is not an http(s) URL: set it to "
                "https://api.sendgrid.com (or leave it unset)."
            )
        attempts = settings.send_max_attempts if max_attempts is None else max_attempts
        if attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._key = key
        self._host = host
        # Honoured until this long before send_at (DIGEST_SENDGRID_CANCEL_DEADLINE_SECONDS).
        self.cancel_deadline_seconds = settings.sendgrid_cancel_deadline_seconds
        self.request_timeout_seconds = (
            settings.sendgrid_timeout_seconds if timeout_seconds is None else timeout_seconds
        )
        self._retry = RetryPolicy(
            attempts=attempts,
            base_seconds=backoff_base_seconds,
            max_backoff_seconds=backoff_max_seconds,
            max_wait_seconds=max_rate_limit_wait_seconds,
            sleep=sleep,
            **({"rng": rng} if rng is not None else {}),
        )
        self._clock = clock
        self._client: httpx.Client | None = None
        _check_cancel_window(settings, self.request_timeout_seconds)

    @classmethod
    def from_settings(cls, settings: Settings, *, interactive: bool = False) -> Self:
        if not interactive:
            return cls(settings)
        # One retry and a short timeout: someone waits for the page.
        return cls(
            settings,
            max_attempts=min(settings.send_max_attempts, 2),
            timeout_seconds=min(settings.sendgrid_timeout_seconds, 10.0),
        )

    def __repr__(self) -> str:
        return (
            f"SendGridBackend(host={self._host!r}, "
            f"timeout_seconds={self.request_timeout_seconds!r}, "
            f"max_attempts={self._retry.attempts!r})"
        )

    def __getstate__(self) -> dict[str, Any]:
        # Pickling (a Prefect parameter, a cache) would copy the key; build the backend in place.
        raise TypeError(
            "SendGridBackend cannot be pickled; build it from Settings where it is used"
        )

    def open(self) -> None:
        if self._client is None:
            limits = httpx.Limits(
                max_connections=POOL_CONNECTIONS, max_keepalive_connections=POOL_CONNECTIONS
            )
            self._client = httpx.Client(
                base_url=self._host,
                headers={
                    "Authorization": f"Bearer {self._key.get_secret_value()}",
                    "User-Agent": "verdict-digest",
                    "Accept": "application/json",
                },
                # SendGrid's answers are short: a silent server is a lost answer, not a wait.
                timeout=httpx.Timeout(self.request_timeout_seconds),
                limits=limits,
                follow_redirects=False,
            )

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def send_batch(self, batch: OutgoingBatch) -> BatchResult:
        if not batch.recipient_count:
            return BatchResult(message_id=None, accepted=0)
        with self._opened():
            return self._post(batch)

    def _call(self, method: str, path: str, body: bytes | None = None) -> httpx.Response:
        """One request; a non-2xx answer raises `_HTTPStatusError`, network trouble httpx's own."""
        assert self._client is not None
        headers = {"Content-Type": _JSON_UTF8} if body is not None else None
        response = self._client.request(method, path, content=body, headers=headers)
        if response.status_code >= 300:
            raise _HTTPStatusError(response)
        return response

    def _post(self, batch: OutgoingBatch) -> BatchResult:
        # Dicts, not helpers.mail.Mail: add_personalization prepends by default; ~15x slower too.
        # Serialised once here, not on every retry.
        body = request_body(batch)
        size = batch.recipient_count
        held = batch.provider_batch
        problem = ""
        retry_after: float | None = None
        for attempt in self._retry.tries():
            try:
                response = self._call("POST", SEND_PATH, body)
            except _HTTPStatusError as exc:
                problem, told, retry_after = self._judge(exc, batch)
                if held is not None and exc.status_code >= 500:
                    raise self._ambiguous(problem) from None
            except httpx.TransportError as exc:
                problem, told, retry_after = self._network_problem(exc), None, None
                if held is not None and not _never_arrived(exc):
                    raise self._ambiguous(problem) from None
            else:
                message_id = response.headers.get("X-Message-Id")
                return BatchResult(message_id=message_id or None, accepted=size)
            if not self._retry.has_next(attempt):
                break
            wait = self._retry.delay(attempt, told)
            _within_join_time(held, wait + self.request_timeout_seconds, problem)
            logger.warning(
                "SendGrid did not accept a batch of %d for digest %s (%s); "
                "attempt %d of %d in %.2f s",
                size,
                batch.digest_id,
                problem,
                attempt + 1,
                self._retry.attempts,
                wait,
            )
            self._retry.sleep(wait)
        raise TransientSendError(
            f"SendGrid did not accept the request after {self._retry.attempts} attempt(s): "
            f"{problem}",
            retry_after=retry_after,
        )

    @staticmethod
    def _ambiguous(problem: str) -> AmbiguousSendError:
        return AmbiguousSendError(f"SendGrid may or may not have accepted the request: {problem}")

    # Scheduled sends: batch ids, cancels and their confirmation --------------------------------

    def new_batch_id(self) -> str:
        with self._opened():
            response = self._control("creating a batch id", "POST", BATCH_PATH)
        batch_id = orjson.loads(response.content or b"{}").get("batch_id")
        if not isinstance(batch_id, str) or not batch_id:
            raise TransientSendError("SendGrid answered POST /v3/mail/batch without a batch_id")
        return batch_id

    def cancel_batch(self, batch_id: str) -> None:
        """Cancel the batch, then read the cancel back: only a confirmed cancel returns."""
        with self._opened():
            try:
                self._control(
                    "a cancel",
                    "POST",
                    SCHEDULED_PATH,
                    orjson.dumps({"batch_id": batch_id, "status": "cancel"}),
                )
            except _HTTPStatusError as refused:
                # A second cancel or pause of a batch answers 400 ("already has a status"): our
                # own earlier POST may have gone through with its answer lost. Read it back.
                current = self._cancel_status(batch_id)
                if current is None:
                    detail = self._scrub(_sendgrid_errors(refused.body))
                    raise CancelRefusedError(
                        f"SendGrid refused to cancel batch {batch_id} "
                        f"(HTTP {refused.status_code}: {detail})"
                    ) from None
                if current != "cancel":
                    self._patch_to_cancel(batch_id)
            if self._cancel_status(batch_id) != "cancel":
                raise CancelRefusedError(f"SendGrid did not confirm the cancel of batch {batch_id}")

    def forget_cancel(self, batch_id: str) -> None:
        with self._opened():
            try:
                self._control("removing a cancel", "DELETE", f"{SCHEDULED_PATH}/{batch_id}")
            except _HTTPStatusError as exc:
                if exc.status_code != 404:  # already gone is what we wanted
                    raise TransientSendError(
                        f"SendGrid refused to remove the cancel of batch {batch_id} "
                        f"(HTTP {exc.status_code})"
                    ) from None

    def _patch_to_cancel(self, batch_id: str) -> None:
        try:
            self._control(
                "a cancel",
                "PATCH",
                f"{SCHEDULED_PATH}/{batch_id}",
                orjson.dumps({"status": "cancel"}),
            )
        except _HTTPStatusError as refused:
            detail = self._scrub(_sendgrid_errors(refused.body))
            raise CancelRefusedError(
                f"SendGrid refused to cancel batch {batch_id} (HTTP {refused.status_code}: "
                f"{detail})"
            ) from None

    def _cancel_status(self, batch_id: str) -> str | None:
        """The batch's standing status (`cancel` or `pause`), None when it has none."""
        try:
            response = self._control("reading a cancel", "GET", f"{SCHEDULED_PATH}/{batch_id}")
        except _HTTPStatusError:
            return None
        entries = orjson.loads(response.content or b"[]")
        found = [e.get("status") for e in entries if isinstance(e, dict)]
        return str(found[0]) if found else None

    def _opened(self) -> _OpenedHere:
        return _OpenedHere(self)

    def _control(
        self, what: str, method: str, path: str, body: bytes | None = None
    ) -> httpx.Response:
        """One small control request, repeated on 5xx, 429 and network errors (each is safe to
        repeat: a second cancel finds the first). Other 4xx raise; 401/403 stop the run."""
        problem = ""
        for attempt in self._retry.tries():
            try:
                return self._call(method, path, body)
            except _HTTPStatusError as exc:
                if _verdict(exc.status_code) is _Verdict.AUTH:
                    raise SendAuthError(
                        f"SendGrid rejected the API key ({what}: HTTP {exc.status_code}). Fix "
                        "SENDGRID_API_KEY: it needs the Mail Send and Scheduled Sends permissions."
                    ) from None
                if exc.status_code < 500 and exc.status_code != 429:
                    raise
                problem = f"HTTP {exc.status_code}"
            except httpx.TransportError as exc:
                problem = self._network_problem(exc)
            if self._retry.has_next(attempt):
                self._retry.pause(attempt)
        raise TransientSendError(
            f"SendGrid did not answer {what} after {self._retry.attempts} attempt(s): {problem}"
        )

    def _judge(
        self, exc: _HTTPStatusError, batch: OutgoingBatch
    ) -> tuple[str, float | None, float | None]:
        """Raise when retrying cannot help; else say what happened, how long SendGrid asked us
        to wait (None: our backoff), and until when it limits us."""
        status = exc.status_code
        detail = self._scrub(_sendgrid_errors(exc.body))
        verdict = _verdict(status)
        if verdict is _Verdict.AUTH:
            sender_hint = (
                " and that DIGEST_FROM_EMAIL is a verified sender" if status == 403 else ""
            )
            raise SendAuthError(
                f"SendGrid rejected the API key (HTTP {status}: {detail}). Fix SENDGRID_API_KEY: "
                f"check that it is a current key with the Mail Send permission{sender_hint}."
            ) from None
        if verdict is _Verdict.PERMANENT:
            raise PermanentSendError(
                f"SendGrid refused the request (HTTP {status}): {detail}",
                refused={
                    delivery_id: self._scrub(f"SendGrid refused this recipient: {message}")
                    for delivery_id, message in refused_recipients(exc.body, batch).items()
                },
            ) from None
        if verdict is _Verdict.UNEXPECTED:
            raise TransientSendError(
                f"SendGrid answered HTTP {status} at {self._host}{SEND_PATH} ({detail}); "
                "check DIGEST_SENDGRID_HOST."
            ) from None
        if verdict is _Verdict.RATE_LIMITED:
            until_reset = self._until_reset(exc.headers)
            if until_reset is not None:
                return f"rate limited (HTTP 429) for {until_reset:.1f} s", until_reset, until_reset
            return "rate limited (HTTP 429)", None, None
        return f"HTTP {status} ({detail})", None, None

    def _until_reset(self, headers: Any) -> float | None:
        """Seconds until the epoch second in X-RateLimit-Reset, never negative; None if absent."""
        raw = headers.get("X-RateLimit-Reset") if headers is not None else None
        try:
            reset = float(str(raw))
        except (TypeError, ValueError):
            return None
        return max(0.0, reset - self._clock())

    def _network_problem(self, exc: httpx.TransportError) -> str:
        if isinstance(exc, httpx.ConnectError) and "refused" in str(exc).lower():
            return f"could not connect to {self._host} (connection refused)"
        if isinstance(exc, httpx.TimeoutException):
            return (
                f"no answer within {self.request_timeout_seconds:g} s "
                "(DIGEST_SENDGRID_TIMEOUT_SECONDS)"
            )
        if isinstance(exc, httpx.RemoteProtocolError):
            return "SendGrid closed the connection without answering"
        if isinstance(exc, httpx.ReadError | httpx.WriteError):
            return "the connection was reset"
        return self._scrub(f"{type(exc).__name__}: {exc}")

    def _scrub(self, text: str) -> str:
        """Belt and braces: whatever a server or library echoes, the key does not pass."""
        secret = self._key.get_secret_value()
        if secret and secret in text:
            text = text.replace(secret, "[redacted]")
        return _BEARER_RE.sub("Bearer [redacted]", text)


class _OpenedHere:
    """Opens the backend's client for one call if the caller had not: close only what we opened."""

    def __init__(self, backend: SendGridBackend) -> None:
        self._backend = backend
        self._opened = False

    def __enter__(self) -> None:
        if self._backend._client is None:
            self._backend.open()
            self._opened = True

    def __exit__(self, *exc_info: object) -> None:
        if self._opened:
            self._backend.close()


def _check_cancel_window(settings: Settings, timeout: float) -> None:
    """A held request's answer may take the whole timeout to be found lost, and its cancel must
    still be asked and confirmed before SendGrid's deadline: the lead time must leave room for
    both, or a lost answer could leave rows nobody can settle."""
    lead, deadline = settings.send_lead_seconds, settings.sendgrid_cancel_deadline_seconds
    needed = deadline + timeout + CANCEL_MARGIN_SECONDS
    if lead and lead <= needed:
        raise ConfigError(
            f"DIGEST_SEND_LEAD_SECONDS={lead} leaves no time to cancel a batch whose answer was "
            f"lost: SendGrid stops honouring cancels {deadline} s before send_at "
            f"(DIGEST_SENDGRID_CANCEL_DEADLINE_SECONDS), a request may take {timeout:g} s "
            f"before its answer counts as lost (DIGEST_SENDGRID_TIMEOUT_SECONDS), and a cancel "
            f"needs {CANCEL_MARGIN_SECONDS} s to be asked and confirmed. Set "
            f"DIGEST_SEND_LEAD_SECONDS above {needed:g} (900 with the defaults), shorten "
            "DIGEST_SENDGRID_TIMEOUT_SECONDS, or set the lead to 0 to send at once."
        )


def _within_join_time(held: ProviderBatch | None, seconds: float, problem: str) -> None:
    """A held request may wait for a retry only while its batch still takes requests."""
    if held is not None and datetime.now(held.join_by.tzinfo).timestamp() + seconds >= (
        held.join_by.timestamp()
    ):
        raise BatchClosedError(
            f"{problem}; waiting to try again would pass the time its provider batch takes "
            "requests, so it goes again under the next batch"
        )
