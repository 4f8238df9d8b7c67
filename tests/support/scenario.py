"""A small, fixed week of catalog and subscribers that flow and CLI tests share."""

from __future__ import annotations

from pathlib import Path

from digest.audience.csv_files import import_subscribers
from digest.catalog.importer import import_catalog
from digest.config import Settings
from digest.db import ensure_schema, session_scope
from tests.support.factories import tool_dict, write_catalog, write_subscribers

WEEK = "2026-W47"  # Monday 16 to Sunday 22 November 2026


def week_tools() -> list[dict[str, object]]:
    """Four new developer tools, one new writing tool, and an incumbent for each category."""
    return [
        tool_dict(
            "code-llama-4",
            name="Code Llama 4",
            vendor="Meta",
            tags=["code", "agents"],
            added_at="2026-11-17T10:00:00Z",
        ),
        tool_dict(
            "mistral-3-8b",
            name="Mistral 3 8B",
            vendor="Mistral",
            tags=["code"],
            added_at="2026-11-18T10:00:00Z",
        ),
        tool_dict(
            "patchpilot",
            name="PatchPilot",
            vendor="Forge",
            tags=["code", "review"],
            added_at="2026-11-19T10:00:00Z",
        ),
        tool_dict(
            "stackscribe",
            name="StackScribe",
            vendor="Quill",
            tags=["debugging"],
            added_at="2026-11-20T10:00:00Z",
        ),
        tool_dict(
            "inkwell",
            name="Inkwell",
            vendor="Quill",
            category="Writing",
            tags=["writing"],
            added_at="2026-11-21T10:00:00Z",
        ),
        tool_dict(
            "termwise",
            name="TermWise",
            vendor="Shell",
            tags=["cli"],
            added_at="2026-10-01T10:00:00Z",
        ),
        tool_dict(
            "tonetuner",
            name="ToneTuner",
            vendor="Paper",
            category="Writing",
            tags=["writing"],
            added_at="2026-10-02T10:00:00Z",
        ),
    ]


def seed(settings: Settings, folder: Path, *, subscribers: int = 6) -> None:
    """Import the week's catalog and `subscribers` people (one of them Writing-only)."""
    engine = ensure_schema(settings.database_url)
    catalog = write_catalog(folder / "catalog.json", week_tools())
    rows = [
        {"email": f"reader{i}@example.com", "name": f"Reader {i}"} for i in range(subscribers - 1)
    ]
    rows.append({"email": "writer@example.com", "name": "Writer", "categories": "writing"})
    people = write_subscribers(folder / "subscribers.csv", rows)
    with session_scope(engine) as session:
        import_catalog(session=session, path=catalog)
    with session_scope(engine) as session:
        import_subscribers(session=session, path=people)
