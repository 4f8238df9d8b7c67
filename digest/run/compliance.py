"""What a bulk sender must carry: checked on every stored variant of a digest before the send,
and, for the one-click unsubscribe headers, on every message the provider accepted.

A check that fails fails the run (`failures`, read by digest.run.outcome.run_error): before the
send for the variants, so nobody gets such a digest; after it for the headers, which only the
send sees.
"""

from __future__ import annotations

import html
from typing import Any

from sqlalchemy.engine import Engine

from digest.delivery import ledger
from digest.render.placeholders import UNSUBSCRIBE_URL
from digest.render.variant import clipped_by_gmail


def compliance_checks(engine: Engine, *, digest_id: int, postal_address: str) -> dict[str, Any]:
    """Unsubscribe link and postal address in both parts of every variant; the largest HTML."""
    with engine.connect() as connection:
        variants = ledger.variant_bodies(connection, digest_id=digest_id)
    checks: dict[str, Any] = {
        "variants": len(variants),
        "list_unsubscribe": all(
            UNSUBSCRIBE_URL in body and UNSUBSCRIBE_URL in text for _, body, text in variants
        ),
        "postal_address": all(
            _postal_present(postal_address, body, text) for _, body, text in variants
        ),
        "max_html_bytes": max((len(body.encode()) for _, body, _ in variants), default=0),
    }
    checks["html_under_102kb"] = not any(clipped_by_gmail(body) for _, body, _ in variants)
    return checks


def add_header_check(checks: dict[str, Any], *, sent: int, with_headers: int | None) -> None:
    """The messages this run sent by the ledger, and how many of them the send saw go with both
    one-click unsubscribe headers (None: unknown, the send stopped unexpectedly)."""
    checks["messages_sent"] = sent
    checks["with_unsubscribe_headers"] = with_headers


def failures(checks: dict[str, Any]) -> list[str]:
    """Each failed check as a phrase; empty when everything checked holds (or was not checked)."""
    problems = []
    if checks.get("list_unsubscribe") is False:
        problems.append("a variant lacks the unsubscribe link in its HTML or text part")
    if checks.get("postal_address") is False:
        problems.append("a variant lacks DIGEST_POSTAL_ADDRESS in its HTML or text part")
    if checks.get("html_under_102kb") is False:
        problems.append("a variant's HTML is past Gmail's 102 KB clip")
    sent, with_headers = checks.get("messages_sent"), checks.get("with_unsubscribe_headers")
    if sent and with_headers is not None and with_headers < sent:
        problems.append(
            f"{sent - with_headers} of the {sent} messages this run sent went without both "
            "List-Unsubscribe headers"
        )
    return problems


def _postal_present(address: str, body: str, text: str) -> bool:
    return address in text and (address in body or html.escape(address) in body)
