"""What a careless command line meets: one paragraph naming the cause and the fix, a non-zero
exit, and never a Python traceback, from the `digest` command."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from digest.config import get_settings
from tests.support.cli import assert_user_error, run_digest
from tests.support.scenario import WEEK, seed


@pytest.fixture
def seeded(tmp_path: Path) -> dict[str, str]:
    seed(get_settings(), tmp_path)
    return {"DIGEST_DATABASE_URL": os.environ["DIGEST_DATABASE_URL"]}


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("bad address", "@-sign"),
        ("a@b.com, c@d.com", "invalid characters"),
        ("a@b.com\r\nBcc: c@d.com", "control characters"),
        ("x@", "after the @-sign"),
        ("", "empty"),
    ],
)
def test_a_test_copy_to_a_bad_address_is_refused_before_anything_is_sent(
    address: str, why: str, tmp_path: Path, seeded: dict[str, str]
) -> None:
    # --send-to takes exactly one mailbox; anything else is a sentence, not a traceback or a mail.
    result = run_digest("preview", "--week", WEEK, "--send-to", address, cwd=tmp_path, env=seeded)
    assert_user_error(result, "--send-to", why, "--send-to editor@example.com")
    assert not (tmp_path / "outbox").exists()


@pytest.mark.parametrize("target", ["a-file.txt", "a-file.txt/below"])
def test_preview_out_that_cannot_be_a_folder_is_refused(
    target: str, tmp_path: Path, seeded: dict[str, str]
) -> None:
    # --out names a folder: a file in the way is named in the error, with the fix.
    (tmp_path / "a-file.txt").write_text("not a folder", encoding="utf-8")
    result = run_digest("preview", "--week", WEEK, "--out", target, cwd=tmp_path, env=seeded)
    assert_user_error(result, "cannot be used as a folder", "--out preview")


@pytest.mark.slow
def test_an_unreachable_prefect_api_is_a_sentence_not_a_traceback(
    tmp_path: Path, seeded: dict[str, str]
) -> None:
    # A wrong PREFECT_API_URL says which address failed and the three ways out.
    env = {**seeded, "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    result = run_digest("run", "--week", WEEK, cwd=tmp_path, env=env)
    assert_user_error(result, "No Prefect server answers at", "unset PREFECT_API_URL")


@pytest.mark.slow
def test_refreeze_of_a_sent_week_is_refused_without_a_traceback(
    tmp_path: Path, seeded: dict[str, str]
) -> None:
    # The refusal comes from a task; the run ends with its sentence alone.
    assert run_digest("run", "--week", WEEK, cwd=tmp_path, env=seeded).returncode == 0
    result = run_digest("run", "--week", WEEK, "--refreeze", cwd=tmp_path, env=seeded)
    assert_user_error(result, "cannot be recomposed")


def test_a_week_without_new_tools_previews_as_nothing_to_send(
    tmp_path: Path, seeded: dict[str, str]
) -> None:
    # The run sends nothing for such a week, so the preview neither shows, writes nor mails one.
    quiet = "2026-W30"
    shown = run_digest("preview", "--week", quiet, cwd=tmp_path, env=seeded)
    assert shown.returncode == 0, shown.stderr
    assert "no new tools" in shown.stdout
    for option, value in (("--out", "p"), ("--send-to", "ed@example.com")):
        refused = run_digest("preview", "--week", quiet, option, value, cwd=tmp_path, env=seeded)
        assert_user_error(refused, "no new tools", "Nothing was written or sent")
    assert not (tmp_path / "p").exists() and not (tmp_path / "outbox").exists()


def test_an_empty_email_option_is_refused(tmp_path: Path, seeded: dict[str, str]) -> None:
    # An empty --email is a mistake, not "every category".
    result = run_digest("preview", "--week", WEEK, "--email", "", cwd=tmp_path, env=seeded)
    assert_user_error(result, "--email is empty")


@pytest.mark.parametrize(
    "command",
    [
        ["edit", "--week", "9999-W52", "--show"],
        ["preview", "--week", "9999-W52"],
        ["run", "--week", "9999-W52"],
        ["approve", "--week", "9999-W52"],
    ],
)
def test_a_week_past_the_calendar_is_a_sentence_and_exit_2(
    command: list[str], tmp_path: Path, seeded: dict[str, str]
) -> None:
    # 9999-W52 ends in the year 10000: a sentence with the range, not an OverflowError.
    result = run_digest(*command, cwd=tmp_path, env=seeded)
    assert_user_error(result, "'9999-W52' is out of range", "1970-W01 to 9998-W52")
    assert result.returncode == 2


@pytest.mark.parametrize(
    ("setting", "value", "said"),
    [
        ("DIGEST_FROM_EMAIL", "not an address", "DIGEST_FROM_EMAIL='not an address' is not an"),
        ("DIGEST_FROM_EMAIL", "", "DIGEST_FROM_EMAIL is empty"),
        ("DIGEST_FROM_EMAIL", "digest@example.com\r\nBcc: all@example.com", "U+000D"),
        ("DIGEST_FROM_NAME", "Verdict\r\nBcc: all@example.com", "DIGEST_FROM_NAME holds"),
        ("DIGEST_DATABASE_URL", "mysql://root:hunter2@db/digest", "names a mysql:// database"),
        ("DIGEST_DATABASE_URL", "digest.db", "DIGEST_DATABASE_URL is not a database URL"),
        ("DIGEST_BATCH_SIZE", "lots", "DIGEST_BATCH_SIZE='lots' is not a whole number"),
        ("DIGEST_BATCH_SIZE", "5000", "set it to a whole number from 1 to 1000"),
        ("DIGEST_CATALOG_WAIT_MINUTES", "soon", "is not a number: set it to a number of at"),
        ("DIGEST_APPROVAL", "yes", "DIGEST_APPROVAL='yes' is not one of"),
        ("DIGEST_SITE_URL", "verdicts.example.com", "DIGEST_SITE_URL='verdicts.example.com' is"),
        ("DIGEST_TIMEZONE", "Mars/Olympus", "not a known time zone"),
        ("DIGEST_TIMEZONE", "America", "DIGEST_TIMEZONE='America' is not a known time zone"),
        ("DIGEST_DATABASE_URL", "sqlite://", "DIGEST_DATABASE_URL names no database file"),
        ("DIGEST_DATABASE_URL", "sqlite:///:memory:", "names no database file"),
        ("SENDGRID_API_KEY", "SG.hunter2é", "SENDGRID_API_KEY holds a space, a line break"),
        ("SENDGRID_API_KEY", "SG.hunter2\n", "the value is not shown here"),
        ("DIGEST_CATALOG_TOKEN", " hunter2 ", "DIGEST_CATALOG_TOKEN holds a space"),
        ("DIGEST_POSTAL_ADDRESS", "  ", "DIGEST_POSTAL_ADDRESS is empty"),
        ("DIGEST_SITE_URL", "https://admin:hunter2@verdicts.example.com", "holds an @"),
        ("DIGEST_SENDGRID_HOST", "http://u:hunter2@127.0.0.1:1", "DIGEST_SENDGRID_HOST holds"),
        ("DIGEST_OUTBOX_DIR", "", "DIGEST_OUTBOX_DIR is empty"),
        ("DIGEST_SENDGRID_TIMEOUT_SECONDS", "nan", "set it to a number above 0, at most 600"),
        ("DIGEST_SENDGRID_TIMEOUT_SECONDS", "0", "TIMEOUT_SECONDS='0' is too small"),
    ],
)
def test_a_wrong_setting_is_named_with_its_fix_before_anything_runs(
    setting: str, value: str, said: str, tmp_path: Path
) -> None:
    # Settings are checked as a command starts, in our words: the variable, what is wrong,
    # what it takes; never pydantic's text, never a password, never a traceback.
    result = run_digest("status", "--week", WEEK, cwd=tmp_path, env={setting: value})
    assert_user_error(result, said)
    assert result.returncode == 2
    for raw in ("validation error", "pydantic", "For further information", "hunter2"):
        assert raw not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["preview", "--week", WEEK],
        ["status", "--week", WEEK],
        ["subscribers", "export"],
        ["run", "--week", WEEK],
    ],
)
def test_a_file_that_is_no_sqlite_database_is_named_with_the_fix(
    args: list[str], tmp_path: Path
) -> None:
    # DIGEST_DATABASE_URL pointing at some other file: a sentence, exit 2, the file untouched.
    other = tmp_path / "notes.db"
    other.write_text("not a database\n", encoding="utf-8")
    env = {"DIGEST_DATABASE_URL": f"sqlite:///{other}"}
    result = run_digest(*args, cwd=tmp_path, env=env)
    assert_user_error(result, "file is not a database", "Set DIGEST_DATABASE_URL")
    assert other.read_text(encoding="utf-8") == "not a database\n"


@pytest.mark.parametrize(
    "args",
    [["web", "--port", "-1"], ["web", "--port", "70000"], ["preview", "--serve", "--port", "-5"]],
)
def test_a_port_out_of_range_is_a_usage_error(args: list[str], tmp_path: Path) -> None:
    # Refused before anything starts, with the range; it was a traceback from the socket.
    result = run_digest(*args, cwd=tmp_path, env={})
    assert result.returncode == 2, result.stderr
    assert "Invalid value for '--port'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_run_that_could_not_send_is_refused_before_the_week_freezes(
    tmp_path: Path, seeded: dict[str, str]
) -> None:
    # SendGrid chosen without a key: refused before composing, so the week stays open to edits.
    env = {**seeded, "DIGEST_EMAIL_BACKEND": "sendgrid", "SENDGRID_API_KEY": ""}
    result = run_digest("run", "--week", WEEK, cwd=tmp_path, env=env)
    assert_user_error(result, "SENDGRID_API_KEY is not set")
    edited = run_digest("edit", "--week", WEEK, "--intro", "Still open.", cwd=tmp_path, env=seeded)
    assert edited.returncode == 0, edited.stderr
