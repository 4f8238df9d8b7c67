"""Freezing only what renders, and recomposing a week that nobody can have received yet."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.engine import Engine

from digest.config import get_settings
from digest.db import ensure_schema
from digest.delivery import ledger
from digest.errors import ContentTooLargeError, RefreezeRefusedError, TemplateError
from digest.models import Tool
from digest.run import preparation
from digest.weeks import IsoWeek
from tests.support.scenario import WEEK, seed


def _setup(tmp_path: Path) -> tuple[Engine, preparation.Edition]:
    settings = get_settings()
    seed(settings, tmp_path)
    return ensure_schema(settings.database_url), preparation.Edition.from_settings(settings)


def _tagline(engine: Engine, slug: str, tagline: str) -> None:
    with engine.begin() as connection:
        connection.execute(update(Tool).where(Tool.slug == slug).values(tagline=tagline))


def _freeze(engine: Engine, edition: preparation.Edition) -> preparation.PreparedDigest:
    return preparation.prepare_digest(engine, edition, IsoWeek.parse(WEEK), freeze=True)


def test_content_that_does_not_render_is_never_frozen(tmp_path: Path) -> None:
    # A control character stored before the import refused it breaks MJML: the week stays open.
    engine, edition = _setup(tmp_path)
    _tagline(engine, "code-llama-4", "Agents \x0b everywhere")
    with pytest.raises(TemplateError, match="was not frozen"):
        _freeze(engine, edition)
    with engine.connect() as connection:
        assert ledger.find_digest(connection, WEEK) is None
    _tagline(engine, "code-llama-4", "Agents everywhere")
    assert _freeze(engine, edition).content.pairs


def test_refreeze_recomposes_a_week_that_sent_nothing(tmp_path: Path) -> None:
    # A catalog fix reaches a frozen but unsent week only through --refreeze.
    engine, edition = _setup(tmp_path)
    first = _freeze(engine, edition)
    preparation.plan(engine, edition, first)
    _tagline(engine, "code-llama-4", "A corrected tagline")
    assert "A corrected tagline" not in _freeze(engine, edition).content.model_dump_json()
    assert preparation.refreeze(engine, IsoWeek.parse(WEEK)) is True
    again = _freeze(engine, edition)
    assert not again.frozen_earlier and again.digest_id is not None
    assert "A corrected tagline" in again.content.model_dump_json()
    with engine.connect() as connection:  # the old plan went with the old content
        assert ledger.state_counts(connection, digest_id=again.digest_id) == {}


def test_refreeze_is_refused_once_anyone_may_hold_the_digest(tmp_path: Path) -> None:
    # One row claimed (it may be at the provider) is enough: the content stays as sent.
    engine, edition = _setup(tmp_path)
    prepared = _freeze(engine, edition)
    assert prepared.digest_id is not None
    preparation.plan(engine, edition, prepared)
    with engine.begin() as connection:
        variant = sorted(ledger.pending_by_variant(connection, digest_id=prepared.digest_id))[0]
        ledger.claim_batch(
            connection, digest_id=prepared.digest_id, variant_id=variant, owner="x", limit=1
        )
    with pytest.raises(RefreezeRefusedError, match="`sending`"):
        preparation.refreeze(engine, IsoWeek.parse(WEEK))
    assert _freeze(engine, edition).digest_id == prepared.digest_id


def test_content_over_gmails_clip_is_never_frozen(tmp_path: Path) -> None:
    # A clipped email hides its unsubscribe link and postal address: refuse it, freeze nothing.
    engine, edition = _setup(tmp_path)
    _tagline(engine, "code-llama-4", "long " * 25_000)  # stored before the import's limits
    with pytest.raises(ContentTooLargeError, match="clips mail"):
        _freeze(engine, edition)
    with engine.connect() as connection:
        assert ledger.find_digest(connection, WEEK) is None
