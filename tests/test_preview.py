"""`digest preview`: a skipped subscriber is told so, variants keep their own files, and every
link of a preview or test copy opens a page of `digest web` instead of a 404 or a real change.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from starlette.testclient import TestClient

from digest.cli.preview import preview_bundle
from digest.config import Settings, get_settings
from digest.db import get_engine, upgrade
from digest.errors import PreviewSkippedError
from digest.models import Subscriber
from digest.preview.rendering import (
    BANNER_TEXT,
    Preview,
    SkippedPreview,
    build_preview,
    plan_preview,
    preview_json,
    send_test,
    write_files,
)
from digest.run.editing import EditRequest, edit_week
from digest.run.preparation import Edition
from digest.web.app import create_app
from digest.weeks import IsoWeek, utcnow
from tests.support.cli import run_digest
from tests.support.scenario import WEEK, seed

THE_WEEK = IsoWeek.parse(WEEK)
SITE = "http://127.0.0.1:8000"


@pytest.fixture
def seeded(tmp_path: Path) -> Settings:
    """The shared week on SQLite, plus a subscriber of a category with nothing new."""
    settings = get_settings()
    upgrade(settings.database_url)
    seed(settings, tmp_path)
    with get_engine(settings.database_url).begin() as connection:
        connection.execute(
            insert(Subscriber).values(
                email="pics@example.com",
                email_key="pics@example.com",
                name="Pic Fan",
                categories=["Image Generation", "Audio"],
                status="active",
                created_at=datetime.now(UTC),
            )
        )
    return settings


def test_a_subscriber_the_run_skips_gets_a_reason_not_a_false_email(seeded: Settings) -> None:
    # "0 new tools arrived" under a subject naming four pairs is what they would never receive.
    planned = plan_preview(seeded, THE_WEEK, email="pics@example.com")
    assert isinstance(planned, SkippedPreview)
    assert "gets nothing this week" in planned.reason
    assert "Image Generation, Audio" in planned.reason
    assert planned.categories == ["Image Generation", "Audio"]
    document = preview_json(planned)
    assert {"week", "subject", "intro", "pairs", "also_new", "excluded"} <= set(document)
    assert document["skipped"] is True and document["intro"] is None
    assert document["pairs"] == [] and document["also_new"] == []
    with pytest.raises(PreviewSkippedError, match="gets nothing this week"):
        build_preview(seeded, THE_WEEK, email="pics@example.com")


def test_the_cli_says_a_skipped_subscriber_gets_nothing_and_exits_zero(
    seeded: Settings, tmp_path: Path
) -> None:
    # Exit 0, the reason and their categories on stdout, and no file written over another.
    out = tmp_path / "p"
    text = run_digest(
        "preview", "--week", WEEK, "--email", "pics@example.com", "--out", str(out), cwd=tmp_path
    )
    assert text.returncode == 0, text.stderr
    assert "no email for pics@example.com" in text.stdout
    assert "Their categories: Image Generation, Audio" in text.stdout
    assert not out.exists()
    as_json = run_digest(
        "preview", "--week", WEEK, "--email", "pics@example.com", "--format", "json", cwd=tmp_path
    )
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    assert document["skipped"] is True and document["categories"] == ["Image Generation", "Audio"]


def test_each_variant_writes_its_own_files(seeded: Settings, tmp_path: Path) -> None:
    # The every-category preview keeps digest-<week>.*; --email previews add the variant's key.
    out = tmp_path / "files"
    everyone = build_preview(seeded, THE_WEEK)
    writer = build_preview(seeded, THE_WEEK, email="writer@example.com")
    reader = build_preview(seeded, THE_WEEK, email="reader0@example.com")
    names = [p.name for preview in (everyone, writer, reader) for p in write_files(preview, out)]
    assert names[:3] == [f"digest-{WEEK}.html", f"digest-{WEEK}.txt", f"digest-{WEEK}.eml"]
    assert names[3:6] == [f"digest-{WEEK}-writing.{s}" for s in ("html", "txt", "eml")]
    assert names[6:] == [f"digest-{WEEK}-all.{s}" for s in ("html", "txt", "eml")]
    assert (out / f"digest-{WEEK}-writing.html").read_text() == writer.html
    assert (out / f"digest-{WEEK}.html").read_text() == everyone.html


def _site_links(preview: Preview) -> set[str]:
    found = set(re.findall(r'href="([^"]+)"', preview.html))
    found |= set(re.findall(r"https?://\S+", preview.text))
    header = str(preview.message["List-Unsubscribe"]).strip("<>")
    return {url for url in found | {header} if url.startswith(SITE)}


def test_every_preview_link_opens_a_page_and_changes_nobody(seeded: Settings) -> None:
    # Unsubscribe, preferences and an unsent week's "View in browser" open the preview page.
    preview = build_preview(seeded, THE_WEEK, email="reader0@example.com")
    links = _site_links(preview)
    assert f"{SITE}/preview-link" in links
    assert not [u for u in links if "/unsubscribe/" in u or "/preferences/" in u]
    assert f"{SITE}/archive/{WEEK}" not in links
    with TestClient(create_app(seeded), base_url=SITE) as client:
        for url in links - {u for u in links if "/compare/" in u}:
            page = client.get(url[len(SITE) :])
            assert page.status_code == 200, url
        assert (
            client.post("/preview-link", data={"List-Unsubscribe": "One-Click"}).status_code == 200
        )
        assert "came from a preview" in client.get("/preview-link").text
    with get_engine(seeded.database_url).connect() as connection:
        statuses = set(connection.execute(select(Subscriber.status)).scalars())  # type: ignore[call-overload]
    assert statuses == {"active"}


def test_a_preview_says_plainly_that_it_is_one(seeded: Settings) -> None:
    # A visible banner in the HTML and a line at the top of the text, [TEST] copies included.
    # It comes after the hidden preheader, which an inbox shows next to the subject: the test
    # copy's inbox line reads as a reader's would.
    preview = build_preview(seeded, THE_WEEK)
    body = preview.html[preview.html.index("<body") :]
    banner = body.index(BANNER_TEXT.split(".")[0])
    assert banner < 2000
    assert 0 < body.index(preview.content.preheader) < banner
    assert preview.text.startswith(f"[{BANNER_TEXT}]")


def test_the_live_preview_of_a_skipped_subscriber_says_so(seeded: Settings) -> None:
    # `--serve --email` shows the reason, escaped, instead of an email they would never get.
    bundle = preview_bundle(seeded, THE_WEEK, "pics@example.com")
    assert bundle.subject == "No email for pics@example.com this week"
    assert "gets nothing this week" in bundle.html and "Image Generation, Audio" in bundle.text
    shown = preview_bundle(seeded, THE_WEEK, "writer@example.com")
    assert "Inkwell" in shown.text


def test_the_live_preview_of_a_week_without_new_tools_shows_no_email(seeded: Settings) -> None:
    # A week with nothing new sends nothing: an editor's subject alone does not make an email.
    quiet = IsoWeek.parse("2025-W02")
    engine = get_engine(seeded.database_url)
    request = EditRequest(by="Ed", subject="Big week!")
    edited = edit_week(engine, Edition.from_settings(seeded), quiet, request, now=utcnow())
    assert edited.sends_nothing  # `digest edit` says so
    busy = EditRequest(by="Ed", intro="A note")
    assert not edit_week(
        engine, Edition.from_settings(seeded), THE_WEEK, busy, now=utcnow()
    ).sends_nothing
    bundle = preview_bundle(seeded, quiet, None)
    assert bundle.subject == "No email for 2025-W02"
    assert "has no new tools" in bundle.text and "Big week!" not in bundle.html


def test_the_json_preview_of_a_week_without_new_tools_says_it_sends_nothing(
    seeded: Settings,
) -> None:
    quiet = preview_json(build_preview(seeded, IsoWeek.parse("2025-W02")))
    assert quiet["sends"] is False and "has no new tools" in quiet["reason"]
    assert preview_json(build_preview(seeded, THE_WEEK))["sends"] is True


@pytest.mark.parametrize("backend", ["outbox", "sendgrid"])
def test_a_test_copy_says_test_in_its_subject_once_whatever_the_backend(
    backend: str, seeded: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `digest preview --send-to` promises a [TEST] copy: SendGrid takes the subject as sent, so
    # the mark must be in it, and the outbox must not mark it twice.
    from email import message_from_bytes

    from tests.fakes.fake_sendgrid import FakeSendGrid
    from tests.support.sendgrid_env import send_through

    with FakeSendGrid(api_key="SG.test-copy-key") as fake:
        settings = seeded if backend == "outbox" else send_through(monkeypatch, fake)
        preview = build_preview(settings, THE_WEEK)
        send_test(settings, preview, "editor@example.com")
        if backend == "sendgrid":
            (copy,) = fake.accepted
            subject = copy.subject or ""
        else:
            (eml,) = (tmp_path / "outbox" / "test").glob("*.eml")
            subject = str(message_from_bytes(eml.read_bytes())["Subject"])
    assert subject == f"[TEST] {preview.subject}"
