"""What a careless command line meets: one paragraph naming the cause and the fix, a non-zero
exit, and never a Python traceback, from the real `digest` command in a subprocess."""

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
