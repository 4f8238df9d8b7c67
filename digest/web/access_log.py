"""Keeps subscriber tokens out of the web server's access log.

A token in a log line is a working unsubscribe and preferences link; the path is logged with
the token replaced, so the log still shows which page was asked for.
"""

from __future__ import annotations

import logging
import re

_TOKENED_PATH = re.compile(r"/(unsubscribe|preferences|confirm)/[^\s\"?/]+")


def redact_path(text: str) -> str:
    return _TOKENED_PATH.sub(r"/\1/[token]", text)


class RedactTokens(logging.Filter):
    """Rewrites uvicorn access-log records so no token survives in them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.args, tuple):
            record.args = tuple(redact_path(a) if isinstance(a, str) else a for a in record.args)
        record.msg = redact_path(str(record.msg))
        return True


def install() -> None:
    logging.getLogger("uvicorn.access").addFilter(RedactTokens())
