"""`digest web` access logs never carry a subscriber's token."""

from __future__ import annotations

import logging

from digest.web.access_log import RedactTokens, redact_path


def test_tokens_in_logged_paths_are_replaced() -> None:
    # A logged token would be a working unsubscribe link for whoever reads the log.
    line = '127.0.0.1:5000 - "POST /unsubscribe/dW5zdWI6NA.abcDEF123 HTTP/1.1" 200'
    assert redact_path(line) == '127.0.0.1:5000 - "POST /unsubscribe/[token] HTTP/1.1" 200'
    assert redact_path("GET /preferences/x.y?a=1") == "GET /preferences/[token]?a=1"
    assert redact_path("GET /archive/2026-W47") == "GET /archive/2026-W47"


def test_uvicorn_style_records_are_rewritten() -> None:
    # uvicorn passes the path as a format argument, not in the message itself.
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:1", "GET", "/confirm/secret.token", "1.1", 200),
        None,
    )
    assert RedactTokens().filter(record)
    assert "secret.token" not in record.getMessage()
    assert "/confirm/[token]" in record.getMessage()


def test_percent_encoded_tokens_are_replaced_and_decoded_controls_shown_escaped() -> None:
    # The app decodes before it reads a token, so the log is matched decoded too.
    token = "dm90ZToy.3aWEt9-QlyyF2oyoPFHHy89J"
    encoded = token.replace(".", "%2E")
    assert token not in redact_path(f"GET /compare/a-vs-b?%72={encoded} HTTP/1.1")
    assert redact_path(f"GET /vot%65/{encoded}") == "GET /vote/[token]"
    assert redact_path(f"GET /x?r={encoded}&a=1") == "GET /x?r=[token]&a=1"
    assert redact_path("GET /x%0Aforged line") == "GET /x\\x0aforged line"
