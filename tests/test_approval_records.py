"""What an approval covers, without Prefect: one exact content (composed digest and edits), so
an edit or a catalog change voids it; for one content the latest answer counts; a waiting run
takes exactly one answer, whoever comes first; the approver's page counts recipients by variant
and escapes what the catalog and editors wrote."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from digest.catalog.importer import import_catalog
from digest.config import Settings
from digest.db import ensure_schema, session_scope
from digest.editorial.edits import editor_name
from digest.models import APPROVAL_TABLE as APPROVAL
from digest.run import approval
from digest.run.approval import Decision
from digest.run.editing import EditRequest, edit_week
from digest.run.preparation import Edition, prepare_digest
from digest.weeks import IsoWeek, utcnow
from tests.support.cli import assert_user_error, run_digest
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
    recipients = approval.recipients_by_variant(engine, prepared.content)
    assert recipients == [("every category", 5, True), ("writing", 1, True)]
    page = approval.approval_markdown(
        prepared.content, digest_hash="a" * 64, recipients=recipients, decision=None
    )
    assert "Waiting for approval" in page
    assert "<script>" not in page and "\\*\\*bold\\*\\*" in page and "\\| pipe" in page
    assert "| every category | 5 | yes |" in page
    assert f"digest preview --week {WEEK} --serve" in page


def _cli_env(settings: Settings, **more: str) -> dict[str, str]:
    """The shell of an approver with no Prefect API: answers reach a run through the database."""
    return {"DIGEST_DATABASE_URL": settings.database_url, "PREFECT_API_URL": "", **more}


def test_approving_after_an_edit_answers_the_current_content_and_frees_the_waiting_run(
    seeded: Settings, tmp_path: Path
) -> None:
    # The run waits on content A; an edit makes B. The answer is B's, the approver is told so,
    # and the run's own poll finds an answer too, so it recomposes, finds B approved and sends.
    settings = seeded
    engine = ensure_schema(settings.database_url)
    edition = Edition.from_settings(settings)
    waited = _hash(settings)
    waiting = approval.record_waiting(
        engine, week=WEEK, content_hash=waited, flow_run_id="run-1", at=utcnow()
    )
    edit_week(engine, edition, THE_WEEK, EditRequest(by="Ed", subject="Edited"), now=utcnow())
    current = _hash(settings)
    assert current != waited

    result = run_digest(
        "approve", "--week", WEEK, "--by", "Ada", cwd=tmp_path, env=_cli_env(settings)
    )
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stdout.split())
    assert f"The content changed since the run published it (content {waited[:12]})" in said
    assert f"this answer covers the content as it is now (content {current[:12]})" in said
    now_answer = approval.decision_for(engine, week=WEEK, content_hash=current)
    assert now_answer is not None and now_answer.approved and now_answer.by == "Ada"
    # What the paused run polls for: the answer that ended its wait, about the content now.
    assert approval.taken_answer(engine, waiting) == now_answer
    # Nobody approved the content the run waited on: undoing the edit would make it wait again.
    assert approval.decision_for(engine, week=WEEK, content_hash=waited) is None


def test_approve_refuses_a_week_whose_content_froze(seeded: Settings, tmp_path: Path) -> None:
    # Once a run began sending, neither an approval nor a rejection changes anything: exit 2.
    settings = seeded
    engine = ensure_schema(settings.database_url)
    prepare_digest(engine, Edition.from_settings(settings), THE_WEEK, freeze=True)
    for extra in ([], ["--reject"]):
        result = run_digest("approve", "--week", WEEK, *extra, cwd=tmp_path, env=_cli_env(settings))
        assert_user_error(result, f"The content of {WEEK} froze when its run began sending on")
        assert result.returncode == 2
    assert approval.decision_for(engine, week=WEEK, content_hash=_hash(settings)) is None


def test_an_edit_that_changes_approved_content_says_it_voids_the_approval(
    seeded: Settings, tmp_path: Path
) -> None:
    # The editor learns the approval is gone; an edit that changes nothing voids nothing.
    settings = seeded
    env = _cli_env(settings)
    given = run_digest("approve", "--week", WEEK, "--by", "Ada", cwd=tmp_path, env=env)
    assert given.returncode == 0, given.stderr
    edit = ["edit", "--week", WEEK, "--subject", "By hand"]
    first = run_digest(*edit, cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    assert "voids Ada's approval of" in first.stdout and "approved again" in first.stdout
    again = run_digest("approve", "--week", WEEK, "--by", "Ada", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    same = run_digest(*edit, cwd=tmp_path, env=env)
    assert same.returncode == 0, same.stderr
    assert "voids" not in same.stdout


def test_approve_checks_its_name_and_note_like_editors_text(
    seeded: Settings, tmp_path: Path
) -> None:
    # Control and bidi characters, line breaks and very long names are refused, nothing recorded.
    settings = seeded
    env = _cli_env(settings)
    for args, fragment in [
        (["--by", "Ada\x1b[2J"], "U+001B"),
        (["--by", "Ada\nLovelace"], "--by holds a line break"),
        (["--by", "A" * 10_000], "at most 100"),
        (["--note", "fine \u202e"], "U+202E"),
    ]:
        result = run_digest("approve", "--week", WEEK, *args, cwd=tmp_path, env=env)
        assert_user_error(result, fragment)
    engine = ensure_schema(settings.database_url)
    assert approval.decision_for(engine, week=WEEK, content_hash=_hash(settings)) is None


def test_edit_and_approve_never_create_a_missing_sqlite_file(tmp_path: Path) -> None:
    # A mistyped DIGEST_DATABASE_URL is an error, not a new empty database that takes the answer.
    missing = tmp_path / "other.db"
    env = {"DIGEST_DATABASE_URL": f"sqlite:///{missing}", "PREFECT_API_URL": ""}
    for args in (
        ["edit", "--week", WEEK, "--subject", "x"],
        ["approve", "--week", WEEK, "--by", "Ada"],
    ):
        result = run_digest(*args, cwd=tmp_path, env=env)
        assert_user_error(result, f"There is no database at {missing}")
        assert not missing.exists()


def test_an_answer_typed_in_the_ui_form_keeps_no_control_or_bidi_characters() -> None:
    # The UI's form is checked by nobody's command line: what it records is one clean line, and
    # the form refuses names and notes longer than the shell's limits.
    from pydantic import ValidationError

    from flows.approval import ApprovalForm, _one_clean_line

    assert _one_clean_line("Ada\x1b[31m \u202eLovelace\n  ok") == "Ada[31m Lovelace ok"
    with pytest.raises(ValidationError):
        ApprovalForm(by="x" * 101)
    with pytest.raises(ValidationError):
        ApprovalForm(note="x" * 501)


def test_racing_answers_end_a_wait_once_and_every_answer_learns_which_one_did(
    seeded: Settings,
) -> None:
    # Twenty answers at once for one waiting run, approvals and rejections mixed: exactly one
    # ends the wait, every other learns which answer the run took, and the run giving up later
    # changes nothing. Every answer stays recorded.
    engine = ensure_schema(seeded.database_url)
    digest_hash = _hash(seeded)
    waiting = approval.record_waiting(
        engine, week=WEEK, content_hash=digest_hash, flow_run_id="run-1", at=utcnow()
    )
    answers = [Decision(WEEK, digest_hash, i % 2 == 0, "", f"p{i}", utcnow()) for i in range(20)]
    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(lambda d: approval.answer_wait(engine, waiting, d), answers))
    winners = [answer.by for (ended, _), answer in zip(results, answers, strict=True) if ended]
    assert len(winners) == 1
    assert all(taken is not None and taken.by == winners[0] for _, taken in results)
    taken = approval.taken_answer(engine, waiting)
    assert taken is not None and taken.by == winners[0]
    given_up = approval.give_up_waiting(engine, waiting)
    assert given_up is not None and given_up.by == winners[0]
    latest = approval.waiting_run(engine, week=WEEK, now=utcnow(), timeout_minutes=60)
    assert latest is not None and latest.answered
    with engine.connect() as connection:
        recorded = connection.execute(
            select(func.count()).select_from(APPROVAL).where(APPROVAL.c.decision != "waiting")
        ).scalar_one()
    assert recorded == 20


def test_a_run_that_gave_up_waiting_takes_no_later_answer_and_the_next_run_does(
    seeded: Settings,
) -> None:
    # The run's time ran out first: a late answer does not end its wait (nobody can tell a run
    # that has stopped), `digest approve` says no run waits, and the answer counts next time.
    engine = ensure_schema(seeded.database_url)
    edition = Edition.from_settings(seeded)
    digest_hash = _hash(seeded)
    waiting = approval.record_waiting(
        engine, week=WEEK, content_hash=digest_hash, flow_run_id="run-1", at=utcnow()
    )
    assert approval.give_up_waiting(engine, waiting) is None
    late = Decision(WEEK, digest_hash, True, "", "Late", utcnow())
    assert approval.answer_wait(engine, waiting, late) == (False, None)
    asked = Decision(WEEK, "", True, "", "Ada", utcnow())
    answer = approval.answer_now(engine, edition, THE_WEEK, decision=asked, timeout_minutes=60)
    assert answer.handover is approval.Handover.NO_RUN and answer.waiting is None
    found = approval.decision_for(engine, week=WEEK, content_hash=digest_hash)
    assert found is not None and found.by == "Ada"


def test_approve_without_an_api_says_the_waiting_run_takes_the_answer(
    seeded: Settings, tmp_path: Path
) -> None:
    # No Prefect API in the approver's shell: the answer ends the wait in the database, and the
    # command says the run takes it at its next look; a second answer learns it came too late.
    engine = ensure_schema(seeded.database_url)
    waiting = approval.record_waiting(
        engine, week=WEEK, content_hash=_hash(seeded), flow_run_id="run-9", at=utcnow()
    )
    env = _cli_env(seeded)
    first = run_digest("approve", "--week", WEEK, "--by", "Ada", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    said = " ".join(first.stdout.split())
    assert said.startswith(f"{WEEK} approved by Ada: recorded for flow run run-9"), said
    second = run_digest("approve", "--week", WEEK, "--reject", "--by", "Bo", cwd=tmp_path, env=env)
    assert second.returncode == 0, second.stderr
    said = " ".join(second.stdout.split())
    assert said.startswith(f"{WEEK} rejected by Bo"), said
    assert "had already taken an answer and goes on with it: Approved by Ada" in said
    taken = approval.taken_answer(engine, waiting)
    assert taken is not None and taken.by == "Ada" and taken.approved
