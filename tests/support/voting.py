"""A reader at the vote pages: open a vote link, press its button, and the votes stored."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.engine import Engine
from starlette.testclient import TestClient

from digest.config import Settings
from digest.db import get_engine
from digest.models import VOTE_TABLE

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def engine_of(settings: Settings) -> Engine:
    return get_engine(settings.database_url)


def path_of(link: str) -> str:
    parts = urlsplit(link)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def votes(settings: Settings) -> list[tuple[str, str]]:
    """(slug, choice) of every stored vote."""
    with engine_of(settings).connect() as connection:
        rows = connection.execute(select(VOTE_TABLE.c.tool_slug, VOTE_TABLE.c.choice))
        return sorted((str(slug), str(choice)) for slug, choice in rows)


def open_link(client: TestClient, link: str) -> tuple[int, str, str | None]:
    """GET the link: (status, page, the form's CSRF value if the page has one)."""
    page = client.get(path_of(link))
    found = _CSRF.search(page.text)
    return page.status_code, page.text, found.group(1) if found else None


def press(client: TestClient, link: str, choice: str | None = None) -> tuple[int, str]:
    """Open the link and press its button, as a reader does."""
    status, _page, csrf = open_link(client, link)
    assert status == 200 and csrf is not None
    chosen = choice or link.rsplit("choice=", 1)[1]
    answer = client.post(urlsplit(link).path, data={"csrf": csrf, "choice": chosen})
    return answer.status_code, answer.text
