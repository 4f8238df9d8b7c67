"""A catalog full of markup renders an email without tag text anywhere: not in the HTML part
(escaped or not), not in the text part, not in the subject. And an import killed halfway leaves
nothing behind."""

from __future__ import annotations

import email
import json
import os
import re
import signal
import subprocess
import time
from email.message import Message
from html.parser import HTMLParser
from pathlib import Path

import pytest
from sqlmodel import Session, select

from digest.catalog.markup import ELEMENTS
from digest.db import get_engine
from digest.models import Subscriber, Tool
from tests.support.cli import DIGEST, run_digest
from tests.support.factories import write_catalog, write_subscribers
from tests.support.scenario import WEEK, week_tools

MARKUP = {
    "name": "Markup <b>Mayhem</b> {n}",
    "tagline": "ClipForge <script>alert(1)</script> writes <i>perfect</i> &lt;b&gt;HTML&lt;/b&gt;",
    "vendor": "<img src=x onerror=alert(1)>Tag &amp; Co",
    "description": "<p>Long <a href='javascript:alert(1)'>text</a></p><!-- x -->"
    "<svg/onload=alert(1)>",
    "best_for": "<iframe src=javascript:alert(1)></iframe>Teams <u>who</u> ship",
    "license": "<em>MIT</em>",
}
TAG = re.compile(r"<\s*/?\s*(" + "|".join(sorted(ELEMENTS, key=len, reverse=True)) + r")\b", re.I)
ESCAPED_TAG = re.compile(
    r"&(?:lt|#0*60|#x0*3c);\s*/?\s*(" + "|".join(sorted(ELEMENTS, key=len, reverse=True)) + r")\b",
    re.I,
)


class _Text(HTMLParser):
    """The text a reader sees, and every attribute value, of an HTML document."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.seen: list[str] = []

    def handle_data(self, data: str) -> None:
        self.seen.append(data)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.seen += [value for name, value in attrs if value and name in ("alt", "title")]


def _tag_text(text: str) -> list[str]:
    return [m.group(0) for m in TAG.finditer(text)] + [
        m.group(0) for m in ESCAPED_TAG.finditer(text)
    ]


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        "DIGEST_DATABASE_URL": f"sqlite:///{tmp_path / 'digest.db'}",
        "DIGEST_OUTBOX_DIR": str(tmp_path / "outbox"),
    }


def test_a_catalog_full_of_markup_renders_no_tag_text(tmp_path: Path) -> None:
    # The strict check: no tag text, escaped or not, in HTML, text part or subject.
    tools = []
    for n, tool in enumerate(week_tools()):
        marked = {field: value.format(n=n) for field, value in MARKUP.items()}
        quote = "It <b>works</b> &lt;script&gt;alert(2)&lt;/script&gt; mostly"
        reviews = [
            {**review, "quote": quote, "reviewer": "<i>Ed</i>"} for review in tool["reviews"]
        ]  # type: ignore[union-attr]
        tools.append({**tool, **marked, "reviews": reviews})
    catalog = write_catalog(tmp_path / "catalog.json", tools)
    people = write_subscribers(tmp_path / "people.csv", [{"email": "ada@example.com"}])
    env = _env(tmp_path)
    imported = run_digest("catalog", "import", str(catalog), cwd=tmp_path, env=env)
    assert imported.returncode == 0, imported.stderr
    assert "HTML markup" in imported.stderr
    assert run_digest("subscribers", "import", str(people), cwd=tmp_path, env=env).returncode == 0
    out = tmp_path / "preview"
    shown = run_digest("preview", "--week", WEEK, "--out", str(out), cwd=tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr
    html_part = (out / f"digest-{WEEK}.html").read_text(encoding="utf-8")
    text_part = (out / f"digest-{WEEK}.txt").read_text(encoding="utf-8")
    message: Message = email.message_from_bytes((out / f"digest-{WEEK}.eml").read_bytes())
    reader = _Text()
    reader.feed(html_part)
    visible = "\n".join(reader.seen)
    assert "Markup Mayhem" in visible and "Markup Mayhem" in text_part  # the words stay
    assert _tag_text(visible) == []
    assert ESCAPED_TAG.findall(html_part) == []
    assert _tag_text(text_part) == []
    assert _tag_text(str(message["Subject"])) == []
    for part in message.walk():
        if part.get_content_maintype() == "text":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            body = payload.decode("utf-8")
            checked = body if part.get_content_subtype() == "plain" else "\n".join(reader.seen)
            assert _tag_text(checked) == []
    assert "alert(1)" not in visible and "alert(1)" not in text_part


def _big_subscribers(path: Path, rows: int) -> Path:
    with path.open("w", encoding="utf-8") as out:
        out.write("email,name,categories,subscribed_at,consent_source\n")
        for n in range(rows):
            out.write(f"reader{n}@example.com,Reader {n},Writing,2025-01-01T10:00:00Z,import\n")
    return path


def _big_catalog(path: Path, tools: int) -> Path:
    template = week_tools()[0]
    records = [{**template, "slug": f"tool-{n}", "name": f"Tool {n}"} for n in range(tools)]
    path.write_text(json.dumps({"format": "verdict-digest/catalog@1", "tools": records}))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["subscribers", "catalog"])
def test_an_import_killed_halfway_leaves_nothing(tmp_path: Path, kind: str) -> None:
    # SIGKILL while rows are being written: the one transaction never commits, nothing is there.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")} | _env(tmp_path)
    assert run_digest("db", "upgrade", cwd=tmp_path, env=env).returncode == 0
    if kind == "subscribers":
        path = _big_subscribers(tmp_path / "people.csv", 300_000)
    else:
        path = _big_catalog(tmp_path / "catalog.json", 30_000)
    process = subprocess.Popen([DIGEST, kind, "import", str(path)], cwd=tmp_path, env=env)
    db = tmp_path / "digest.db"
    deadline = time.monotonic() + 120
    wal = db.with_name("digest.db-wal")
    while not (wal.exists() and wal.stat().st_size > 1_000_000):  # rows are being written
        assert process.poll() is None, "the import finished before it could be killed"
        assert time.monotonic() < deadline, "the import wrote nothing in two minutes"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    with Session(get_engine(f"sqlite:///{db}")) as session:
        assert session.exec(select(Subscriber)).first() is None
        assert session.exec(select(Tool)).first() is None
