"""What a bulk sender must carry, checked on every stored variant of a digest."""

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


def _postal_present(address: str, body: str, text: str) -> bool:
    return address in text and (address in body or html.escape(address) in body)
