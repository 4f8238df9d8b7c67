"""What an approval covers, without Prefect: one exact content (composed digest and edits), so
an edit or a catalog change voids it; for one content the latest answer counts; the approver's
page counts recipients by variant and escapes what the catalog and editors wrote."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from digest.catalog.importer import import_catalog
from digest.config import Settings
from digest.db import ensure_schema, session_scope
from digest.editorial.edits import editor_name
from digest.editorial.service import EditRequest, edit_week
from digest.run import approval
from digest.run.approval import Decision
from digest.run.preparation import Edition, prepare_digest
from digest.weeks import IsoWeek, utcnow
from tests.support.factories import write_catalog
from tests.support.scenario import WEEK, seed, week_tools

THE_WEEK = IsoWeek.parse(WEEK)


@pytest.fixture
def seeded(settings: Settings, tmp_path: Path) -> Settings:
    """The shared week, on SQLite and on PostgreSQL (the `settings` fixture's two databases)."""
    seed(settings, tmp_path)
    return settings


def _hash(settings: Settings) -> str:
    engine = ensure_schema(settings.database_url)
    prepared = prepare_digest(engine, Edition.from_settings(settings), THE_WEEK, freeze=False)
    return approval.hash_of(engine, prepared)


def _answer(engine: Engine, edition: Edition, *, approved: bool, note: str, by: str) -> Decision:
    """`digest approve` without a waiting run: the answer about the content as it is now."""
    asked = approval.Decision(WEEK, "", approved, note, by, utcnow())
    return approval.answer_now(
        engine, edition, THE_WEEK, decision=asked, timeout_minutes=60
    ).decision


def test_an_edit_or_a_catalog_change_gives_content_no_answer_covers(
    seeded: Settings, tmp_path: Path
) -> None:
    # The hash moves with every edit and every catalog change, and only then.
    settings = seeded
    engine = ensure_schema(settings.database_url)
    edition = Edition.from_settings(settings)
    first = _hash(settings)
    assert _hash(settings) == first
    given = _answer(engine, edition, approved=True, note="", by="Ada")
    assert given.content_hash == first
    assert approval.decision_for(engine, week=WEEK, content_hash=first) == given

    request = EditRequest(by=editor_name("Ada"), subject="A subject by hand")
    edit_week(engine, edition, THE_WEEK, request, now=utcnow())
    edited = _hash(settings)
    assert edited != first
    assert approval.decision_for(engine, week=WEEK, content_hash=edited) is None

    tools = week_tools()
    tools[0] = {**tools[0], "tagline": "A new tagline"}
    catalog = write_catalog(tmp_path / "changed.json", tools)
    with session_scope(engine) as session:
        import_catalog(session=session, path=catalog)
    assert _hash(settings) not in {first, edited}


def test_for_one_content_the_latest_answer_counts(seeded: Settings, tmp_path: Path) -> None:
    # A rejection can be taken back by a later approval of the same content, and the reverse.
    settings = seeded
    engine = ensure_schema(settings.database_url)
    edition = Edition.from_settings(settings)
    _answer(engine, edition, approved=False, note="No", by="A")
    digest_hash = _hash(settings)
    found = approval.decision_for(engine, week=WEEK, content_hash=digest_hash)
    assert found is not None and not found.approved and found.note == "No"
    _answer(engine, edition, approved=True, note="", by="B")
    found = approval.decision_for(engine, week=WEEK, content_hash=digest_hash)
    assert found is not None and found.approved and found.by == "B"


def test_the_approvers_page_counts_recipients_and_escapes_text(
    seeded: Settings, tmp_path: Path
) -> None:
    # Six readers: five get every category, one Writing only; an editor's markup stays text.
    settings = seeded
    engine = ensure_schema(settings.database_url)
    edition = Edition.from_settings(settings)
    request = EditRequest(by="Ada", intro="**bold** <script>x</script> | pipe")
    edit_week(engine, edition, THE_WEEK, request, now=utcnow())
    prepared = prepare_digest(engine, edition, THE_WEEK, freeze=False)
    recipients = approval.recipients_by_variant(engine, prepared.content, page_size=2)
    assert recipients == [("every category", 5, True), ("writing", 1, True)]
    page = approval.approval_markdown(
        prepared.content, digest_hash="a" * 64, recipients=recipients, decision=None
    )
    assert "Waiting for approval" in page
    assert "<script>" not in page and "\\*\\*bold\\*\\*" in page and "\\| pipe" in page
    assert "| every category | 5 | yes |" in page
    assert f"digest preview --week {WEEK} --serve" in page
