"""Small builders for catalog records, catalog files and subscriber files."""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_counter = itertools.count(1)


def random_email() -> str:
    return f"person{next(_counter)}@example.com"


def tool_dict(slug: str | None = None, **overrides: Any) -> dict[str, Any]:
    """A valid catalog tool record; override any field."""
    slug = slug or f"tool-{next(_counter)}"
    record: dict[str, Any] = {
        "slug": slug,
        "name": slug.replace("-", " ").title(),
        "vendor": "Example Vendor",
        "category": "Developer Tools",
        "tagline": f"The tagline of {slug}",
        "url": f"https://example.com/{slug}",
        "pricing": "free",
        "tags": ["code"],
        "added_at": "2026-11-17T10:00:00Z",
        "community": {"ship": 3, "skip": 1},
        "reviews": [
            {"reviewer": "Builder", "verdict": "ship", "score": 80, "quote": f"{slug} is good."},
            {"reviewer": "Skeptic", "verdict": "skip", "score": 40, "quote": f"{slug} is not."},
        ],
    }
    record.update(overrides)
    return record


def write_catalog(path: Path, tools: Iterable[dict[str, Any]]) -> Path:
    path.write_text(
        json.dumps({"format": "verdict-digest/catalog@1", "tools": list(tools)}), encoding="utf-8"
    )
    return path


def write_subscribers(
    path: Path, rows: Iterable[dict[str, str]], *, header: list[str] | None = None
) -> Path:
    header = header or ["email", "name", "categories", "subscribed_at", "consent_source"]
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
    return path


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
