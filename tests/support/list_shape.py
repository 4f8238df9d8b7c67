"""A real list's shape for tests and benchmarks: a week with new tools in seven categories and
subscribers spread over 64 content variants (every mix of one to three categories, and the
every-category reader), the every-category variant the largest, as on a real list.

`seed_list` writes the catalog through the real import and the subscribers straight into the
database in bulk, so a million rows take seconds; `list_csv` writes the same people as a
subscribers file for the import path.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Engine

from digest.catalog.importer import import_catalog
from digest.db import session_scope
from digest.models import Subscriber
from tests.support.factories import tool_dict, write_catalog

WEEK = "2026-W47"  # Monday 16 to Sunday 22 November 2026
CATEGORIES = (
    "Developer Tools",
    "Writing",
    "Image Generation",
    "Data & Analytics",
    "Agents & Automation",
    "Speech & Audio",
    "Safety & Evaluation",
)
# Every mix of one to three categories: 7 + 21 + 35 = 63 variants, plus every category.
MIXES: tuple[tuple[str, ...], ...] = tuple(
    mix for size in (1, 2, 3) for mix in itertools.combinations(CATEGORIES, size)
)
VARIANTS = len(MIXES) + 1


def week_tools() -> list[dict[str, Any]]:
    """Per category two tools new in the week and one incumbent: a pair a category, or two."""
    tools: list[dict[str, Any]] = []
    for number, category in enumerate(CATEGORIES):
        prefix = category.split()[0].lower().replace("&", "and")
        for index in range(2):
            tools.append(
                tool_dict(
                    f"{prefix}-new-{index}",
                    name=f"{category.split()[0]} Nova {index}",
                    category=category,
                    added_at=f"2026-11-{17 + index + number % 3:02d}T10:00:00Z",
                )
            )
        tools.append(
            tool_dict(f"{prefix}-incumbent", category=category, added_at="2026-09-01T10:00:00Z")
        )
    return tools


def categories_of(index: int) -> list[str]:
    """Subscriber `index`'s categories: four in ten read everything, the rest one mix each."""
    if index % 10 < 4:
        return []
    return list(MIXES[(index * 7919) % len(MIXES)])


def person(index: int) -> dict[str, Any]:
    return {
        "email": f"reader{index}@example.com",
        "name": f"Lectrice {index} Ærøskøbing" if index % 7 == 0 else f"Reader {index}",
        "categories": categories_of(index),
    }


def seed_list(engine: Engine, folder: Path, size: int, *, chunk: int = 20_000) -> None:
    """Import the week's catalog and write `size` active subscribers in bulk."""
    catalog = write_catalog(folder / "catalog.json", week_tools())
    with session_scope(engine) as session:
        import_catalog(session=session, path=catalog)
    now = datetime.now(UTC)
    with engine.begin() as connection:
        for start in range(0, size, chunk):
            connection.execute(
                insert(Subscriber),
                [
                    {
                        **person(i),
                        "email_key": f"reader{i}@example.com",
                        "status": "active",
                        "created_at": now,
                    }
                    for i in range(start, min(size, start + chunk))
                ],
            )


def list_rows(size: int) -> Iterator[dict[str, str]]:
    """The same people as rows of a subscribers file."""
    for index in range(size):
        row = person(index)
        yield {
            "email": row["email"],
            "name": row["name"],
            "categories": ";".join(row["categories"]),
            "subscribed_at": "2026-01-05T09:00:00Z",
            "consent_source": "signup-form",
        }
