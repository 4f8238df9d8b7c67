"""A fake SendGrid v3 Mail Send API on 127.0.0.1, for tests and benchmarks.

`POST /v3/mail/send` validates a request the way SendGrid does (API key, personalization and
recipient limits, duplicate addresses, string custom args/headers/substitutions, content order,
categories), answers 202 with an `X-Message-Id`, and records every accepted personalization in
memory and, optionally, as one JSON line in a record file that another process can read even
after the sender was killed.

Scheduled sends as SendGrid has them: `POST /v3/mail/batch` makes a batch id; a send may carry
`batch_id` (one this fake made) and `send_at` (a UNIX time at most 72 h ahead);
`/v3/user/scheduled_sends` (POST, GET, PATCH, DELETE) cancels or pauses a batch, refused later
than `cancel_deadline_seconds` before the batch's earliest `send_at` (600, SendGrid's rule; a
setting so tests need not wait) and while 10 batches already have a status. A cancelled batch's
messages are never delivered: `delivered` (and `delivered_record` for a record file) leaves them
out, while `accepted` keeps everything the fake took.

Faults are injected at runtime, in this process through methods or from another process through
`POST /_fake/control`: a queue of scripted answers (429 with `X-RateLimit-Reset`, 5xx, 400),
an "always" answer, a delay before every answer (SendGrid far away), a delay before the first
answer on each new connection (a TLS handshake: what keep-alive saves), and dropped connections
(optionally after the message was recorded: accepted, but the answer is lost).

Run it as its own process with
`python -m tests.fakes.fake_sendgrid --port 0 --api-key K --record FILE`; the first line on
stdout is its URL.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self

SEND_PATH = "/v3/mail/send"
BATCH_PATH = "/v3/mail/batch"
SCHEDULED_PATH = "/v3/user/scheduled_sends"
MAX_SCHEDULE_SECONDS = 72 * 3600
MAX_CANCELS = 10
CANCEL_DEADLINE_SECONDS = 600
CONTROL_PATH = "/_fake/control"
STATS_PATH = "/_fake/stats"

MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000
MAX_CATEGORIES = 10
MAX_BODY_BYTES = 30 * 1024 * 1024
HELP_URL = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"

# Loose on purpose: SendGrid refuses what is plainly not an address, not every RFC corner.
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_RECORD_ENCODER = json.JSONEncoder(ensure_ascii=False, check_circular=False, separators=(",", ":"))


@dataclass(frozen=True)
class Fault:
    """One scripted answer to a send request instead of (or after) the normal one."""

    status: int | None = None  # e.g. 429, 500, 503, 400; None means answer normally
    message: str | None = None  # the error message of a 4xx/5xx answer
    reset_in: float | None = None  # 429: X-RateLimit-Reset is now + this many seconds
    drop: bool = False  # close the socket without answering
    after_record: bool = False  # with drop: validate and record the message first
    delay: float = 0.0  # seconds to wait before answering (or dropping)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})


@dataclass(slots=True)
class AcceptedMessage:
    """One accepted personalization: what a single subscriber would receive."""

    request_seq: int
    message_id: str
    index: int
    to: str
    name: str | None
    recipients: list[str]
    subject: str | None
    custom_args: dict[str, Any]
    substitutions: dict[str, Any]
    headers: dict[str, Any]
    batch_id: str | None = None
    send_at: int | None = None


@dataclass(slots=True)
class RequestLog:
    """One request to the send endpoint and what the fake answered."""

    seq: int
    status: int | None  # None: the connection was dropped
    message_id: str | None  # set when the message was recorded, even if the answer was dropped
    personalizations: int
    recorded: bool
    # The request body without its personalizations: from, subject, content, categories, ...
    envelope: dict[str, Any] = field(default_factory=dict)


class ApiError(Exception):
    """A validation failure, answered in SendGrid's error shape."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field

    def body(self) -> bytes:
        help_url = f"{HELP_URL}#message.{self.field}" if self.field else None
        error = {"message": self.message, "field": self.field, "help": help_url}
        return json.dumps({"errors": [error]}).encode()


def _require_strings(values: Any, key: str, index: int | None = None) -> None:
    """A custom_args/headers/substitutions object: every value must be a string."""
    if type(values) is dict and all(type(value) is str for value in values.values()):
        return
    where = key if index is None else f"personalizations.{index}.{key}"
    if type(values) is not dict:
        raise ApiError(400, "Invalid type. Expected: object.", where)
    name, value = next((n, v) for n, v in values.items() if type(v) is not str)
    kind = type(value).__name__
    raise ApiError(400, f"Invalid type. Expected: string, given: {kind}.", f"{where}.{name}")


def _addresses(entries: Any, index: int, kind: str, required: bool) -> list[str]:
    if entries is None and not required:
        return []
    if type(entries) is not list or (required and not entries):
        where = f"personalizations.{index}.{kind}"
        raise ApiError(
            400,
            f"The {where} array is required for all personalization objects, "
            "and must have at least one email object with a valid email address.",
            where,
        )
    emails: list[str] = []
    for position, entry in enumerate(entries):
        email = entry.get("email") if type(entry) is dict else None
        if type(email) is not str or not _EMAIL_RE.match(email):
            where = f"personalizations.{index}.{kind}.{position}.email"
            raise ApiError(400, "Does not contain a valid address.", where)
        emails.append(email)
    return emails


def validate(body: Any) -> list[tuple[list[str], str | None]]:
    """Check a mail-send body; return per personalization its recipients and its subject."""
    if not isinstance(body, dict):
        raise ApiError(400, "Bad Request", None)
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        raise ApiError(
            400,
            "The personalizations field is required and must have at least one personalization.",
            "personalizations",
        )
    if len(personalizations) > MAX_PERSONALIZATIONS:
        raise ApiError(
            400,
            f"The personalizations field may not have more than {MAX_PERSONALIZATIONS} elements.",
            "personalizations",
        )
    sender = body.get("from")
    if not isinstance(sender, dict) or not isinstance(sender.get("email"), str):
        raise ApiError(
            400,
            "The from object must be provided for every email send. It is an "
            "object that requires the email parameter, but may also contain a name "
            "parameter.",
            "from",
        )
    if not _EMAIL_RE.match(sender["email"]):
        raise ApiError(400, "The from email does not contain a valid address.", "from.email")
    top_subject = body.get("subject")
    if top_subject is not None and not isinstance(top_subject, str):
        raise ApiError(400, "Invalid type. Expected: string.", "subject")
    _validate_content(body.get("content"))
    _validate_categories(body.get("categories"))
    for key in ("custom_args", "headers"):
        if key in body:
            _require_strings(body[key], key)

    seen: set[str] = set()
    total = 0
    result: list[tuple[list[str], str | None]] = []
    # Error locations are formatted only on failure: this loop runs 1,000 times per request.
    for index, person in enumerate(personalizations):
        if type(person) is not dict:
            raise ApiError(400, "Invalid type. Expected: object.", f"personalizations.{index}")
        emails = _addresses(person.get("to"), index, "to", required=True)
        if "cc" in person or "bcc" in person:
            emails += _addresses(person.get("cc"), index, "cc", required=False)
            emails += _addresses(person.get("bcc"), index, "bcc", required=False)
        total += len(emails)
        if total > MAX_RECIPIENTS:
            raise ApiError(
                400,
                f"The total number of recipients must be no more than {MAX_RECIPIENTS}.",
                "personalizations",
            )
        for email in emails:
            folded = email.casefold()
            if folded in seen:
                raise ApiError(
                    400,
                    "Each email address in the personalization block should be "
                    "unique between to, cc, and bcc. We found the first duplicate "
                    f"instance of [{email}] in the personalizations.{index} field.",
                    f"personalizations.{index}",
                )
            seen.add(folded)
        subject = person.get("subject", top_subject)
        if not isinstance(subject, str) or not subject:
            raise ApiError(
                400,
                "The subject is required. You can get around this requirement "
                "if you use a template with a subject defined or if every "
                "personalization has a subject defined.",
                "subject",
            )
        for key in ("custom_args", "headers", "substitutions"):
            if key in person:
                _require_strings(person[key], key, index)
        result.append((emails, subject))
    return result


def validate_schedule(body: dict[str, Any], known_batches: set[str], now: float) -> None:
    """`batch_id` must be one this account made; `send_at` a UNIX time at most 72 h ahead."""
    batch_id = body.get("batch_id")
    if batch_id is not None and (type(batch_id) is not str or batch_id not in known_batches):
        raise ApiError(400, "The batch id is not valid.", "batch_id")
    send_at = body.get("send_at")
    if send_at is None:
        return
    if type(send_at) is not int:
        raise ApiError(400, "Invalid type. Expected: integer.", "send_at")
    if send_at > now + MAX_SCHEDULE_SECONDS:
        raise ApiError(
            400, "The send_at parameter can not be more than 72 hours in the future.", "send_at"
        )


def _validate_content(content: Any) -> None:
    if not isinstance(content, list) or not content:
        raise ApiError(
            400,
            "Unless a valid template_id is provided, the content parameter is "
            "required. There must be at least one defined content block.",
            "content",
        )
    types: list[str] = []
    for position, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise ApiError(400, "Content types must be strings.", f"content.{position}.type")
        value = part.get("value")
        if not isinstance(value, str) or not value:
            raise ApiError(
                400,
                "The content value must be a string at least one character in length.",
                f"content.{position}.value",
            )
        types.append(part["type"])
    # SendGrid insists on text/plain first, then text/html, then anything else.
    expected = [kind for kind in ("text/plain", "text/html") if kind in types]
    if types[: len(expected)] != expected:
        raise ApiError(
            400,
            "If present, text/plain must be first, followed by text/html, "
            "followed by any other content.",
            "content",
        )


def _validate_categories(categories: Any) -> None:
    if categories is None:
        return
    if not isinstance(categories, list) or len(categories) > MAX_CATEGORIES:
        raise ApiError(
            400,
            f"You may not have more than {MAX_CATEGORIES} categories per request.",
            "categories",
        )
    for position, category in enumerate(categories):
        if not isinstance(category, str) or len(category) > 255:
            raise ApiError(
                400,
                "Categories must be strings of at most 255 characters.",
                f"categories.{position}",
            )


def _dropped_for_name(name: str | None) -> bool:
    """SendGrid takes a comma or semicolon in an unquoted to.name as an address separator."""
    if not name or ("," not in name and ";" not in name):
        return False
    return not (len(name) >= 2 and name.startswith('"') and name.endswith('"'))


class _State:
    """What the handler threads share: the key, the faults, the records."""

    def __init__(self, api_key: str, record_path: Path | None, keep_in_memory: bool) -> None:
        self.api_key = api_key
        self.record_path = record_path
        self.keep_in_memory = keep_in_memory
        self.lock = threading.Lock()
        self.faults: deque[Fault] = deque()
        self.always: Fault | None = None
        self.delay = 0.0
        self.connect_delay = 0.0
        self.connections = 0
        self.accepted: list[AcceptedMessage] = []
        # Answered 202 but never delivered, as SendGrid does with an unquoted comma in to.name.
        self.dropped: list[AcceptedMessage] = []
        self.requests: list[RequestLog] = []
        self.accepted_count = 0
        self.seq = itertools.count(1)
        self.id_prefix = os.urandom(6).hex()
        self.record_file = record_path.open("a", encoding="utf-8") if record_path else None
        # Scheduled sends: batch ids made, each batch's earliest send_at, standing statuses,
        # and batches whose cancel stood at their send_at (discarded for good).
        self.batch_ids: set[str] = set()
        self.batch_send_at: dict[str, int] = {}
        self.statuses: dict[str, str] = {}
        self.discarded: set[str] = set()
        self.cancel_deadline = float(CANCEL_DEADLINE_SECONDS)
        self.calls: list[tuple[str, str, int]] = []  # (method, path, status) of control calls

    def next_fault(self) -> Fault | None:
        with self.lock:
            return self.faults.popleft() if self.faults else self.always

    def record(
        self,
        seq: int,
        message_id: str,
        body: dict[str, Any],
        checked: list[tuple[list[str], str | None]],
    ) -> None:
        messages: list[AcceptedMessage] = []
        dropped: list[AcceptedMessage] = []
        lines: list[str] = []
        for index, (person, (emails, subject)) in enumerate(
            zip(body["personalizations"], checked, strict=True)
        ):
            first = person["to"][0]
            message = AcceptedMessage(
                request_seq=seq,
                message_id=message_id,
                index=index,
                to=first["email"],
                name=first.get("name"),
                recipients=emails,
                subject=subject,
                custom_args=person.get("custom_args", {}),
                substitutions=person.get("substitutions", {}),
                headers=person.get("headers", {}),
                batch_id=body.get("batch_id"),
                send_at=body.get("send_at"),
            )
            if _dropped_for_name(message.name):
                dropped.append(message)
                continue
            messages.append(message)
            if self.record_file is not None:
                lines.append(
                    _RECORD_ENCODER.encode(
                        {
                            "request_seq": seq,
                            "message_id": message_id,
                            "index": index,
                            "to": message.to,
                            "name": message.name,
                            "recipients": emails,
                            "subject": subject,
                            "custom_args": message.custom_args,
                            "substitutions": message.substitutions,
                            "headers": message.headers,
                            "batch_id": message.batch_id,
                            "send_at": message.send_at,
                        }
                    )
                )
        with self.lock:
            batch_id, send_at = body.get("batch_id"), body.get("send_at")
            if batch_id is not None:
                when = send_at if send_at is not None else int(time.time())
                self.batch_send_at[batch_id] = min(self.batch_send_at.get(batch_id, when), when)
            self.accepted_count += len(messages)
            self.dropped.extend(dropped)
            if self.keep_in_memory:
                self.accepted.extend(messages)
            if self.record_file is not None:
                lines.append("")
                # One write and a flush per request: a reader in another process sees whole lines.
                self.record_file.write("\n".join(lines))
                self.record_file.flush()

    def write_record(self, entry: dict[str, Any]) -> None:
        """A line of the record file that is not a message: a cancel standing or withdrawn."""
        if self.record_file is not None:
            self.record_file.write(_RECORD_ENCODER.encode(entry) + "\n")
            self.record_file.flush()

    def is_cancelled(self, batch_id: str | None) -> bool:
        if batch_id is None:
            return False
        return self.statuses.get(batch_id) == "cancel" or batch_id in self.discarded

    def log(self, entry: RequestLog) -> None:
        with self.lock:
            self.requests.append(entry)

    def control(self, command: dict[str, Any]) -> None:
        with self.lock:
            if command.get("clear"):
                self.faults.clear()
                self.always = None
                self.delay = 0.0
            for item in command.get("queue", []):
                fault = Fault.from_json(item)
                self.faults.extend([fault] * int(item.get("times", 1)))
            if "always" in command:
                always = command["always"]
                self.always = Fault.from_json(always) if always is not None else None
            if "delay" in command:
                self.delay = float(command["delay"])
            if "connect_delay" in command:
                self.connect_delay = float(command["connect_delay"])
            if "cancel_deadline" in command:
                self.cancel_deadline = float(command["cancel_deadline"])

    def stats(self) -> dict[str, int]:
        with self.lock:
            return {
                "requests": len(self.requests),
                "accepted_requests": sum(1 for r in self.requests if r.recorded),
                "accepted": self.accepted_count,
                "dropped": len(self.dropped),
                "queued_faults": len(self.faults),
                "batch_ids": len(self.batch_ids),
                "connections": self.connections,
            }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return None  # quiet: tests and benchmarks read the records, not an access log

    def setup(self) -> None:
        super().setup()
        state = self.server.state
        with state.lock:
            state.connections += 1
            delay = state.connect_delay
        if delay > 0:
            time.sleep(delay)  # a new connection's handshake, before its first answer

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _answer(
        self, status: int, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if body:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def do_GET(self) -> None:
        if self.path == STATS_PATH:
            self._answer(200, json.dumps(self.server.state.stats()).encode())
        elif self.path.startswith((BATCH_PATH, SCHEDULED_PATH)):
            self._scheduling("GET", b"")
        else:
            self._answer(404, ApiError(404, "Not Found").body())

    def do_PATCH(self) -> None:
        self._scheduling("PATCH", self._read_body())

    def do_DELETE(self) -> None:
        self._scheduling("DELETE", self._read_body())

    def _scheduling(self, method: str, raw: bytes) -> None:
        """Batch ids and scheduled-send statuses, answered as SendGrid does."""
        state = self.server.state
        try:
            self._authorize()
            status, answer = _schedule_call(state, method, self.path, raw)
        except ApiError as error:
            status, answer = error.status, error.body()
        with state.lock:
            state.calls.append((method, self.path, status))
        self._answer(status, answer)

    def _authorize(self) -> None:
        given = self.headers.get("Authorization")
        if given is None:
            raise ApiError(401, "Permission denied, wrong credentials", None)
        if given != f"Bearer {self.server.state.api_key}":
            raise ApiError(
                401, "The provided authorization grant is invalid, expired, or revoked", None
            )

    def do_POST(self) -> None:
        state = self.server.state
        raw = self._read_body()
        if self.path == CONTROL_PATH:
            state.control(json.loads(raw or b"{}"))
            self._answer(200, json.dumps(state.stats()).encode())
            return
        if self.path.startswith((BATCH_PATH, SCHEDULED_PATH)):
            self._scheduling("POST", raw)
            return
        if self.path != SEND_PATH:
            self._answer(404, ApiError(404, "Not Found").body())
            return
        seq = next(state.seq)
        fault = state.next_fault()
        delay = state.delay + (fault.delay if fault else 0.0)
        dropping = fault is not None and fault.drop
        status: int | None = 202
        answer: tuple[bytes, dict[str, str]] = (b"", {})
        message_id: str | None = None
        body: Any = None
        try:
            if fault is not None and fault.status is not None:
                raise _fault_error(fault)
            body, checked = self._check(raw)
            if not dropping or (fault is not None and fault.after_record):
                message_id = f"{state.id_prefix}-{seq:08d}"
                state.record(seq, message_id, body, checked)
                answer = (b"", {"X-Message-Id": message_id})
        except ApiError as error:
            status = error.status
            answer = (error.body(), _error_headers(error))
        if dropping:
            status = None
        envelope: dict[str, Any] = {}
        count = 0
        if isinstance(body, dict):
            envelope = {k: v for k, v in body.items() if k != "personalizations"}
            count = len(body.get("personalizations") or ())
        state.log(RequestLog(seq, status, message_id, count, message_id is not None, envelope))
        if delay > 0:
            time.sleep(delay)
        try:
            if status is None:
                self._drop()
            else:
                self._answer(status, *answer)
        except OSError:
            self.close_connection = True  # the client gave up waiting; nothing to answer

    def _check(self, raw: bytes) -> tuple[dict[str, Any], list[tuple[list[str], str | None]]]:
        state = self.server.state
        if len(raw) > MAX_BODY_BYTES:
            raise ApiError(
                413, "The JSON payload you have included in your request is too large.", None
            )
        self._authorize()
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, "Bad Request", None) from exc
        checked = validate(body)
        with state.lock:
            validate_schedule(body, state.batch_ids, time.time())
        return body, checked


def _schedule_call(state: _State, method: str, path: str, raw: bytes) -> tuple[int, bytes]:
    """One call to /v3/mail/batch or /v3/user/scheduled_sends[/<batch_id>]."""
    with state.lock:
        if path == BATCH_PATH and method == "POST":
            made = os.urandom(16).hex()
            state.batch_ids.add(made)
            return 201, json.dumps({"batch_id": made}).encode()
        if path == SCHEDULED_PATH and method == "GET":
            listed = [{"batch_id": b, "status": st} for b, st in state.statuses.items()]
            return 200, json.dumps(listed).encode()
        if path == SCHEDULED_PATH and method == "POST":
            body = _json_object(raw)
            named = body.get("batch_id")
            if named in state.statuses:
                raise ApiError(400, "The batch id already has a status; update it.", "batch_id")
            _set_status(state, named, body.get("status"))
            return 201, json.dumps({"batch_id": named, "status": body["status"]}).encode()
        target = path.removeprefix(SCHEDULED_PATH + "/")
        if not path.startswith(SCHEDULED_PATH + "/") or target not in state.batch_ids:
            raise ApiError(404, "Not Found", None)
        if method == "GET":
            found = state.statuses.get(target)
            listed = [{"target": target, "status": found}] if found else []
            return 200, json.dumps(listed).encode()
        if target not in state.statuses:
            raise ApiError(404, "batch id not found", None)
        if method == "PATCH":
            _set_status(state, target, _json_object(raw).get("status"), replacing=True)
            return 204, b""
        # DELETE: once the batch's send time has passed its cancel has done its work for good;
        # before, deleting the cancel lets the batch go out again.
        sends_at = state.batch_send_at.get(target)
        if state.statuses.pop(target) == "cancel" and sends_at and sends_at <= time.time():
            state.discarded.add(target)
        else:
            state.write_record({"withdrawn": target})
        return 204, b""


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw or b"{}")
    except ValueError as exc:
        raise ApiError(400, "Bad Request", None) from exc
    if not isinstance(body, dict):
        raise ApiError(400, "Bad Request", None)
    return body


def _set_status(state: _State, batch_id: Any, status: Any, *, replacing: bool = False) -> None:
    """Cancel or pause a batch, refused past the deadline and beyond 10 batches at once."""
    if type(batch_id) is not str or batch_id not in state.batch_ids:
        raise ApiError(400, "The batch id is not valid.", "batch_id")
    if status not in ("cancel", "pause"):
        raise ApiError(400, "The status must be either cancel or pause.", "status")
    if not replacing and len(state.statuses) >= MAX_CANCELS:
        raise ApiError(
            400, f"You can't pause or cancel more than {MAX_CANCELS} batches at one time.", None
        )
    sends_at = state.batch_send_at.get(batch_id)
    if sends_at is not None and sends_at - time.time() < state.cancel_deadline:
        raise ApiError(
            400,
            "You can't pause or cancel a batch later than "
            f"{state.cancel_deadline:g} seconds before its send_at time.",
            "batch_id",
        )
    state.statuses[batch_id] = status
    if status == "cancel":
        state.write_record({"cancelled": batch_id})
    else:
        state.write_record({"withdrawn": batch_id})


class _RateLimitError(ApiError):
    def __init__(self, reset: int) -> None:
        super().__init__(429, "Too many requests", None)
        self.reset = reset


def _fault_error(fault: Fault) -> ApiError:
    status = fault.status or 500
    if status == 429:
        return _RateLimitError(int(time.time() + (fault.reset_in or 0.0)))
    default = "Bad Request" if status < 500 else "Internal Server Error"
    return ApiError(status, fault.message or default, None)


def _error_headers(error: ApiError) -> dict[str, str]:
    if isinstance(error, _RateLimitError):
        return {
            "X-RateLimit-Limit": "600",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(error.reset),
        }
    return {}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], state: _State) -> None:
        self.state = state
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        return None  # a client that hung up mid-answer is expected under fault injection


class FakeSendGrid:
    """The fake in a background thread of this process; a context manager giving `.url`."""

    def __init__(
        self,
        api_key: str = "SG.fake-test-key",
        *,
        port: int = 0,
        record_path: Path | str | None = None,
        keep_in_memory: bool = True,
    ) -> None:
        self._state = _State(api_key, Path(record_path) if record_path else None, keep_in_memory)
        self._server = _Server(("127.0.0.1", port), self._state)
        self._thread: threading.Thread | None = None

    @property
    def api_key(self) -> str:
        return self._state.api_key

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="fake-sendgrid",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
        with self._state.lock:
            if self._state.record_file is not None:
                self._state.record_file.close()
                self._state.record_file = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # Fault injection -----------------------------------------------------------------------

    def queue(self, *faults: Fault) -> None:
        """Answer the next requests with these faults, in order, then normally again."""
        with self._state.lock:
            self._state.faults.extend(faults)

    def fail_next(
        self, count: int, status: int, *, message: str | None = None, reset_in: float | None = None
    ) -> None:
        self.queue(*[Fault(status=status, message=message, reset_in=reset_in)] * count)

    def drop_next(self, count: int = 1, *, after_record: bool = False) -> None:
        self.queue(*[Fault(drop=True, after_record=after_record)] * count)

    def always(self, fault: Fault | None) -> None:
        """Answer every request (once the queue is empty) with this fault; None to stop."""
        with self._state.lock:
            self._state.always = fault

    def set_delay(self, seconds: float) -> None:
        """Wait this long before every answer, after the message was recorded."""
        with self._state.lock:
            self._state.delay = seconds

    def set_connect_delay(self, seconds: float) -> None:
        """Wait this long on every new connection before its first answer (a TLS handshake)."""
        with self._state.lock:
            self._state.connect_delay = seconds

    def clear_faults(self) -> None:
        self._state.control({"clear": True})

    # What was seen -------------------------------------------------------------------------

    @property
    def accepted(self) -> list[AcceptedMessage]:
        with self._state.lock:
            return list(self._state.accepted)

    @property
    def delivered(self) -> list[AcceptedMessage]:
        """What subscribers get: every accepted message whose batch was not cancelled."""
        with self._state.lock:
            return [m for m in self._state.accepted if not self._state.is_cancelled(m.batch_id)]

    @property
    def statuses(self) -> dict[str, str]:
        """Standing scheduled-send statuses, batch id -> `cancel` or `pause`."""
        with self._state.lock:
            return dict(self._state.statuses)

    @property
    def calls(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every batch-id and scheduled-send call."""
        with self._state.lock:
            return list(self._state.calls)

    def set_cancel_deadline(self, seconds: float) -> None:
        """Refuse cancels this close to a batch's send_at (SendGrid: 600 s)."""
        with self._state.lock:
            self._state.cancel_deadline = seconds

    def lose_answers(self, *request_numbers: int) -> None:
        """Accept the given mail-send requests (counted from the next one, 1-based), then close
        the connection without answering: the answer is lost, the messages are not."""
        faults = [Fault()] * max(request_numbers, default=0)
        for number in request_numbers:
            faults[number - 1] = Fault(drop=True, after_record=True)
        self.queue(*faults)

    @property
    def dropped(self) -> list[AcceptedMessage]:
        """Personalizations answered 202 and then silently dropped, as SendGrid does."""
        with self._state.lock:
            return list(self._state.dropped)

    @property
    def requests(self) -> list[RequestLog]:
        with self._state.lock:
            return list(self._state.requests)

    def stats(self) -> dict[str, int]:
        return self._state.stats()


class FakeControl:
    """Drives a fake running in another process through its control endpoint."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def _post(self, command: dict[str, Any]) -> dict[str, int]:
        request = urllib.request.Request(  # noqa: S310 (a local http URL)
            self.url + CONTROL_PATH,
            data=json.dumps(command).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (local URL)
            result: dict[str, int] = json.loads(response.read())
            return result

    def queue(self, *faults: Fault) -> None:
        self._post({"queue": [asdict(fault) for fault in faults]})

    def always(self, fault: Fault | None) -> None:
        self._post({"always": asdict(fault) if fault is not None else None})

    def set_delay(self, seconds: float) -> None:
        self._post({"delay": seconds})

    def clear_faults(self) -> None:
        self._post({"clear": True})

    def set_cancel_deadline(self, seconds: float) -> None:
        self._post({"cancel_deadline": seconds})

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(self.url + STATS_PATH, timeout=10) as response:  # noqa: S310
            result: dict[str, int] = json.loads(response.read())
            return result


class FakeSendGridProcess:
    """The fake as a child process (off the sender's CPU and GIL); a context manager."""

    def __init__(
        self,
        api_key: str,
        record_path: Path | str | None,
        *,
        delay: float = 0.0,
        connect_delay: float = 0.0,
    ) -> None:
        self.api_key = api_key
        # None: count accepted messages only (see stats()), for speed runs.
        self.record_path = Path(record_path) if record_path is not None else None
        self.delay = delay
        self.connect_delay = connect_delay
        self.url = ""
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> Self:
        root = Path(__file__).resolve().parents[2]
        command = [
            sys.executable,
            "-m",
            "tests.fakes.fake_sendgrid",
            "--port",
            "0",
            "--slow",
            str(self.delay),
            "--connect-delay",
            str(self.connect_delay),
        ]
        if self.record_path is not None:
            command += ["--record", str(self.record_path)]
        env = {**os.environ, "FAKE_SENDGRID_API_KEY": self.api_key}
        self._process = subprocess.Popen(
            command, cwd=root, env=env, stdout=subprocess.PIPE, text=True
        )
        assert self._process.stdout is not None
        self.url = self._process.stdout.readline().strip()
        if not self.url:
            raise RuntimeError("the fake SendGrid process exited before printing its URL")
        return self

    @property
    def control(self) -> FakeControl:
        return FakeControl(self.url)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            if self._process.stdout is not None:
                self._process.stdout.close()


def read_record(path: Path | str) -> list[dict[str, Any]]:
    """Every accepted personalization written to a record file, in order."""
    return list(iter_record(path))


def iter_record(path: Path | str) -> Iterator[dict[str, Any]]:
    for entry in _record_lines(path):
        if "to" in entry:
            yield entry


def delivered_record(path: Path | str) -> list[dict[str, Any]]:
    """The record file's messages that reach their subscriber: a batch whose cancel still
    stands (or stood at its send time) delivers nothing."""
    messages: list[dict[str, Any]] = []
    cancelled: set[str] = set()
    for entry in _record_lines(path):
        if "to" in entry:
            messages.append(entry)
        elif "cancelled" in entry:
            cancelled.add(entry["cancelled"])
        elif "withdrawn" in entry:
            cancelled.discard(entry["withdrawn"])
    return [m for m in messages if m.get("batch_id") not in cancelled]


def _record_lines(path: Path | str) -> Iterator[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--api-key",
        default=os.environ.get("FAKE_SENDGRID_API_KEY"),
        help="the accepted key (default: $FAKE_SENDGRID_API_KEY)",
    )
    parser.add_argument("--record", type=Path, default=None, help="append accepted messages here")
    parser.add_argument(
        "--slow", "--delay", type=float, default=0.0, help="seconds before every answer"
    )
    parser.add_argument(
        "--connect-delay",
        type=float,
        default=0.0,
        help="seconds before the first answer on each new connection (a TLS handshake)",
    )
    args = parser.parse_args(argv)
    if not args.api_key:
        parser.error("give --api-key or set FAKE_SENDGRID_API_KEY")
    fake = FakeSendGrid(args.api_key, port=args.port, record_path=args.record, keep_in_memory=False)
    fake.set_delay(args.slow)
    fake.set_connect_delay(args.connect_delay)

    def _stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)
    print(fake.url, flush=True)
    try:
        fake._server.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
