"""Sending through SendGrid's v3 Mail Send API with the official `sendgrid` client.

One batch is one request: one personalization per recipient, in recipient order, carrying the
recipient's address, token substitutions, List-Unsubscribe headers and our own ids as custom
args. SendGrid's answers are translated here, and only here, into the backend errors of
`digest.send.base`: 429 waits for the rate-limit reset, 5xx and network failures are retried with
backoff, 400 is permanent, 401/403 stops the run. The API key never leaves the client's
Authorization header: not in errors, not in logs, not in repr.

A batch held for a later `send_at` (scheduled sends: `batch_id` from `POST /v3/mail/batch`) is
never retried blind: a timeout, a dropped connection or a 5xx may hide an accepted request, so
it raises `AmbiguousSendError` and the sender cancels the batch
(`POST /v3/user/scheduled_sends`, confirmed with a GET) before sending again. A connection
refused never reached SendGrid and is retried as before.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import random
import re
import time
import urllib.error
from collections.abc import Callable, Iterator
from enum import Enum
from typing import Any, Self

import orjson
import sendgrid
from python_http_client.exceptions import HTTPError as SendGridHTTPError

from digest.config import Settings
from digest.errors import ConfigError
from digest.send.base import (
    AmbiguousSendError,
    BaseBackend,
    BatchResult,
    CancelRefusedError,
    OutgoingBatch,
    PermanentSendError,
    SendAuthError,
    TransientSendError,
)

logger = logging.getLogger(__name__)

SEND_PATH = "/v3/mail/send"
_BEARER_RE = re.compile(r"Bearer\s+[^\s'\",}]+")
# RFC 5322 specials: SendGrid drops a to.name with a bare comma or semicolon, so such names go
# as a quoted-string.
_NAME_NEEDS_CARE = re.compile(r'[()<>\[\]:;@\\,."]')


class _RedactSecret(logging.Filter):
    """python_http_client logs request headers (Authorization included) and bodies at DEBUG.

    Each open backend attaches one for its own key and removes it when it closes.
    """

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _BEARER_RE.sub("Bearer [redacted]", message)
        if self.secret:
            redacted = redacted.replace(self.secret, "[redacted]")
        if redacted != message:
            record.msg = redacted
            record.args = ()
        return True


_CLIENT_LOG = logging.getLogger("python_http_client.client")


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


def _display_name(name: str) -> str | None:
    """A to.name SendGrid delivers as given: an RFC 5322 quoted-string when it holds a special."""
    # Line breaks would end the header SendGrid writes; other spacing is kept exactly.
    flat = " ".join(name.split()) if any(ch in name for ch in "\r\n\t") else name
    if not flat.strip():
        return None
    if not _NAME_NEEDS_CARE.search(flat):
        return flat
    escaped = flat.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def build_request_body(batch: OutgoingBatch) -> dict[str, Any]:
    """The Mail Send request body of one batch: one personalization per recipient, in order."""
    digest_id = str(batch.digest_id)
    personalizations: list[dict[str, Any]] = []
    append = personalizations.append
    for recipient in batch.recipients:
        to: dict[str, str] = {"email": recipient.email}
        name = _display_name(recipient.name) if recipient.name else None
        if name:
            to["name"] = name
        person: dict[str, Any] = {
            "to": [to],
            # custom_args values must be strings; the webhook finds the row by delivery_id.
            "custom_args": {"digest_id": digest_id, "delivery_id": str(recipient.delivery_id)},
        }
        if recipient.substitutions:
            person["substitutions"] = recipient.substitutions
        if recipient.headers:
            person["headers"] = recipient.headers
        append(person)
    sender: dict[str, str] = {"email": batch.from_email}
    if batch.from_name:
        sender["name"] = batch.from_name
    # SendGrid requires text/plain before text/html.
    content = [
        {"type": kind, "value": value}
        for kind, value in (("text/plain", batch.text), ("text/html", batch.html))
        if value
    ]
    body: dict[str, Any] = {
        "personalizations": personalizations,
        "from": sender,
        "subject": batch.subject,
        "content": content,
        "categories": [batch.category, "test"] if batch.is_test else [batch.category],
        # Our own List-Unsubscribe and footer link handle unsubscribes, not SendGrid's.
        "tracking_settings": {"subscription_tracking": {"enable": False}},
    }
    if batch.extra_headers:
        body["headers"] = batch.extra_headers
    if batch.provider_batch is not None:
        body["batch_id"] = batch.provider_batch.id
        body["send_at"] = int(batch.provider_batch.send_at.timestamp())
    return body


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
    errors = _error_list(body)
    for error in errors:
        found = _PERSONALIZATION_FIELD.match(str(error.get("field") or ""))
        index = int(found.group(1)) if found else -1
        if not 0 <= index < len(batch.recipients):
            return {}
        # The row names the recipient; the field's remainder says what of theirs was wrong.
        where = {**error, "field": _PERSONALIZATION_FIELD.sub("", str(error["field"]))}
        blamed[batch.recipients[index].delivery_id] = _described(where)[:500]
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


class _LoggedAsSize(bytes):
    """Request bytes that print as their size: the client's DEBUG line shows no address or token."""

    def __str__(self) -> str:
        return f"<{len(self)} bytes of JSON>"

    __repr__ = __str__


class _EncodedBody:
    """A request body serialised once, already UTF-8.

    python_http_client calls `.encode("utf-8")` on a body whose Content-Type is not bare
    application/json, then formats the result into a DEBUG line on every request, whether DEBUG
    is on or not: ~2.5 ms per 1,000 recipients, and the line would hold every address and token.
    """

    def __init__(self, data: bytes) -> None:
        self._data = _LoggedAsSize(data)

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self._data


def _json_body(data: dict[str, Any]) -> _EncodedBody:
    # The client keeps the last request's Content-Type, so every body goes pre-encoded.
    return _EncodedBody(orjson.dumps(data))


def _never_arrived(exc: BaseException) -> bool:
    """A refused connection: the request never reached SendGrid, so repeating it is safe."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    return isinstance(reason, ConnectionRefusedError)


class SendGridBackend(BaseBackend):
    """Sends each batch as one SendGrid Mail Send request, retrying what is worth retrying."""

    # SendGrid pauses or cancels at most 10 batches at once.
    cancel_slots = 10

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
        rng: random.Random | None = None,
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
        self._timeout = (
            settings.sendgrid_timeout_seconds if timeout_seconds is None else timeout_seconds
        )
        self._max_attempts = attempts
        self._backoff_base = backoff_base_seconds
        self._backoff_max = backoff_max_seconds
        self._max_rate_limit_wait = max_rate_limit_wait_seconds
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        self._mail_send: Any = None
        self._client: Any = None
        self._redact: _RedactSecret | None = None

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
            f"SendGridBackend(host={self._host!r}, timeout_seconds={self._timeout!r}, "
            f"max_attempts={self._max_attempts!r})"
        )

    def __getstate__(self) -> dict[str, Any]:
        # Pickling (a Prefect parameter, a cache) would copy the key; build the backend in place.
        raise TypeError(
            "SendGridBackend cannot be pickled; build it from Settings where it is used"
        )

    def open(self) -> None:
        if self._mail_send is None:
            secret = self._key.get_secret_value()
            self._redact = _RedactSecret(secret)
            _CLIENT_LOG.addFilter(self._redact)
            client = sendgrid.SendGridAPIClient(secret, host=self._host)
            # The client has no timeout by default: a silent server would hang the run forever.
            client.client.timeout = self._timeout
            self._client = client.client
            self._mail_send = client.client.mail.send

    def close(self) -> None:
        self._mail_send = None
        self._client = None
        if self._redact is not None:
            _CLIENT_LOG.removeFilter(self._redact)
            self._redact = None

    def send_batch(self, batch: OutgoingBatch) -> BatchResult:
        if not batch.recipients:
            return BatchResult(message_id=None, accepted=0)
        # Close only what we opened: a caller's `with` keeps the client for every batch.
        opened_here = self._mail_send is None
        self.open()
        try:
            return self._post(batch)
        finally:
            if opened_here:
                self.close()

    def _post(self, batch: OutgoingBatch) -> BatchResult:
        # A dict, not helpers.mail.Mail: add_personalization prepends by default; ~15x slower too.
        # Serialised once here, not on every retry, by orjson: compact UTF-8 (no \u escapes),
        # five times faster than json. A Content-Type other than bare application/json makes
        # the client send it as is.
        body = _EncodedBody(orjson.dumps(build_request_body(batch)))
        size = len(batch.recipients)
        problem = ""
        retry_after: float | None = None
        for attempt in range(1, self._max_attempts + 1):
            try:
                response = self._mail_send.post(
                    request_body=body, request_headers={"Content-Type": _JSON_UTF8}
                )
            except SendGridHTTPError as exc:
                problem, wait, retry_after = self._judge(exc, attempt, batch)
                if batch.provider_batch is not None and int(exc.status_code) >= 500:
                    raise self._ambiguous(problem) from None
            except (OSError, http.client.HTTPException) as exc:
                problem, wait, retry_after = (
                    self._network_problem(exc),
                    self._backoff(attempt),
                    None,
                )
                if batch.provider_batch is not None and not _never_arrived(exc):
                    raise self._ambiguous(problem) from None
            else:
                message_id = response.headers.get("X-Message-Id")
                return BatchResult(message_id=message_id or None, accepted=size)
            if attempt < self._max_attempts:
                logger.warning(
                    "SendGrid did not accept a batch of %d for digest %s (%s); "
                    "attempt %d of %d in %.2f s",
                    size,
                    batch.digest_id,
                    problem,
                    attempt + 1,
                    self._max_attempts,
                    wait,
                )
                self._sleep(wait)
        raise TransientSendError(
            f"SendGrid did not accept the request after {self._max_attempts} attempt(s): {problem}",
            retry_after=retry_after,
        )

    @staticmethod
    def _ambiguous(problem: str) -> AmbiguousSendError:
        return AmbiguousSendError(f"SendGrid may or may not have accepted the request: {problem}")

    # Scheduled sends: batch ids, cancels and their confirmation --------------------------------

    def new_batch_id(self) -> str:
        with self._opened():
            response = self._control("creating a batch id", lambda: self._client.mail.batch.post())
        batch_id = orjson.loads(response.body or b"{}").get("batch_id")
        if not isinstance(batch_id, str) or not batch_id:
            raise TransientSendError("SendGrid answered POST /v3/mail/batch without a batch_id")
        return batch_id

    def cancel_batch(self, batch_id: str) -> None:
        """Cancel the batch, then read the cancel back: only a confirmed cancel returns."""
        with self._opened():
            statuses = self._client.user.scheduled_sends
            try:
                self._control(
                    "a cancel",
                    lambda: statuses.post(
                        request_body=_json_body({"batch_id": batch_id, "status": "cancel"}),
                        request_headers={"Content-Type": _JSON_UTF8},
                    ),
                )
            except SendGridHTTPError as refused:
                # A cancel or pause may already stand (a lost answer to our own earlier POST).
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
            target = self._client.user.scheduled_sends._(batch_id)
            try:
                self._control("removing a cancel", lambda: target.delete())
            except SendGridHTTPError as exc:
                if int(exc.status_code) != 404:  # already gone is what we wanted
                    raise TransientSendError(
                        f"SendGrid refused to remove the cancel of batch {batch_id} "
                        f"(HTTP {exc.status_code})"
                    ) from None

    def _patch_to_cancel(self, batch_id: str) -> None:
        target = self._client.user.scheduled_sends._(batch_id)
        try:
            self._control(
                "a cancel",
                lambda: target.patch(
                    request_body=_json_body({"status": "cancel"}),
                    request_headers={"Content-Type": _JSON_UTF8},
                ),
            )
        except SendGridHTTPError as refused:
            detail = self._scrub(_sendgrid_errors(refused.body))
            raise CancelRefusedError(
                f"SendGrid refused to cancel batch {batch_id} (HTTP {refused.status_code}: "
                f"{detail})"
            ) from None

    def _cancel_status(self, batch_id: str) -> str | None:
        """The batch's standing status (`cancel` or `pause`), None when it has none."""
        target = self._client.user.scheduled_sends._(batch_id)
        try:
            response = self._control("reading a cancel", lambda: target.get())
        except SendGridHTTPError:
            return None
        entries = orjson.loads(response.body or b"[]")
        found = [e.get("status") for e in entries if isinstance(e, dict)]
        return str(found[0]) if found else None

    @contextlib.contextmanager
    def _opened(self) -> Iterator[None]:
        opened_here = self._client is None
        self.open()
        try:
            yield
        finally:
            if opened_here:
                self.close()

    def _control(self, what: str, call: Callable[[], Any]) -> Any:
        """One small control request, repeated on 5xx and network errors (each is safe to repeat:
        a second cancel finds the first). Other 4xx raise SendGridHTTPError; 401/403 stop."""
        problem = ""
        for attempt in range(1, self._max_attempts + 1):
            try:
                return call()
            except SendGridHTTPError as exc:
                status = int(exc.status_code)
                if _verdict(status) is _Verdict.AUTH:
                    raise SendAuthError(
                        f"SendGrid rejected the API key ({what}: HTTP {status}). Fix "
                        "SENDGRID_API_KEY: it needs the Mail Send and Scheduled Sends permissions."
                    ) from None
                if status < 500 and status != 429:
                    raise
                problem = f"HTTP {status}"
            except (OSError, http.client.HTTPException) as exc:
                problem = self._network_problem(exc)
            if attempt < self._max_attempts:
                self._sleep(self._backoff(attempt))
        raise TransientSendError(
            f"SendGrid did not answer {what} after {self._max_attempts} attempt(s): {problem}"
        )

    def _judge(
        self, exc: SendGridHTTPError, attempt: int, batch: OutgoingBatch
    ) -> tuple[str, float, float | None]:
        """Raise when retrying cannot help; else say what happened and how long to wait."""
        status = int(exc.status_code)
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
                wait = min(until_reset, self._max_rate_limit_wait)
                return f"rate limited (HTTP 429) for {until_reset:.1f} s", wait, until_reset
            return "rate limited (HTTP 429)", self._backoff(attempt), None
        return f"HTTP {status} ({detail})", self._backoff(attempt), None

    def _until_reset(self, headers: Any) -> float | None:
        """Seconds until the epoch second in X-RateLimit-Reset, never negative; None if absent."""
        raw = headers.get("X-RateLimit-Reset") if headers is not None else None
        try:
            reset = float(str(raw))
        except (TypeError, ValueError):
            return None
        return max(0.0, reset - self._clock())

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter, so that parallel senders spread out."""
        ceiling = min(self._backoff_max, self._backoff_base * 2 ** (attempt - 1))
        return self._rng.uniform(0.0, ceiling)

    def _network_problem(self, exc: BaseException) -> str:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, TimeoutError):
            return f"no answer within {self._timeout:g} s (DIGEST_SENDGRID_TIMEOUT_SECONDS)"
        if isinstance(reason, http.client.RemoteDisconnected):
            return "SendGrid closed the connection without answering"
        if isinstance(reason, ConnectionRefusedError):
            return f"could not connect to {self._host} (connection refused)"
        if isinstance(reason, ConnectionResetError):
            return "the connection was reset"
        return self._scrub(f"{type(reason).__name__}: {reason}")

    def _scrub(self, text: str) -> str:
        """Belt and braces: whatever a server or library echoes, the key does not pass."""
        secret = self._key.get_secret_value()
        if secret and secret in text:
            text = text.replace(secret, "[redacted]")
        return _BEARER_RE.sub("Bearer [redacted]", text)
