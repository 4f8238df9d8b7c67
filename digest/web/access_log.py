"""Keeps subscriber tokens out of every log line the web server writes.

A token in a log line is a working unsubscribe and preferences link; the path is logged with
the token replaced, so the log still shows which page was asked for. The access log is rewritten
by a filter; every other logger (uvicorn.error, Starlette, our own, tracebacks included) by a
log-record factory that `digest web` installs, so no record is made with a token in it.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import unquote

_TOKENED_PATH = re.compile(r"/(unsubscribe|preferences|confirm|vote)/[^\s\"'?/]+")
# The delivery's token on links to our own pages (digest/web/visits.py).
_READER_QUERY = re.compile(r"([?&]r=)[^\s\"'&#]+")
# A token on its own (payload.signature, the signature 24 base64url characters).
_BARE_TOKEN = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{24}(?![A-Za-z0-9_-])")


# Control characters as they are shown once a path is decoded: a logged %0A starts no line.
_SHOWN_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)]}


def redact_path(text: str) -> str:
    # Matched decoded: the app decodes a path and its query before it reads a token, so
    # `/vot%65/a%2Eb` and `?%72=` reached a vote and a reader's token that the raw text hid.
    if "%" in text:
        text = unquote(text).translate(_SHOWN_CONTROLS)
    text = _READER_QUERY.sub(r"\1[token]", _TOKENED_PATH.sub(r"/\1/[token]", text))
    return _BARE_TOKEN.sub("[token]", text)


class RedactTokens(logging.Filter):
    """Rewrites uvicorn access-log records so no token survives in them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.args, tuple):
            record.args = tuple(redact_path(a) if isinstance(a, str) else a for a in record.args)
        record.msg = redact_path(str(record.msg))
        return True


def _redact_value(value: object) -> object:
    return redact_path(value) if isinstance(value, str) else value


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """The record with tokens replaced in its message, arguments and traceback text."""
    if isinstance(record.args, tuple):
        record.args = tuple(_redact_value(a) for a in record.args)
    elif isinstance(record.args, dict):
        record.args = {k: _redact_value(v) for k, v in record.args.items()}
    if isinstance(record.msg, str):
        record.msg = redact_path(record.msg)
    if record.exc_info and not record.exc_text:
        # Formatted once here, redacted; formatters reuse exc_text instead of formatting again.
        record.exc_text = redact_path(logging.Formatter().formatException(record.exc_info))
    if record.stack_info:
        record.stack_info = redact_path(record.stack_info)
    return record


def install() -> None:
    """Redact the access log's records and every record any logger makes from now on."""
    logging.getLogger("uvicorn.access").addFilter(RedactTokens())
    make_record = logging.getLogRecordFactory()
    if getattr(make_record, "redacts_tokens", False):
        return

    def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return redact_record(make_record(*args, **kwargs))

    redacting_factory.redacts_tokens = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(redacting_factory)
