"""The installed `digest` console script as a process: it starts, answers --help, and ends a user's
mistake with a sentence and exit code 2, never a traceback. Everything else the command does is
tested in this process through `run_digest`; these check that the process around it holds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.cli import assert_user_error, run_digest, run_digest_process
from tests.support.scenario import WEEK

COMMANDS = [
    "run", "approve", "edit", "preview", "status", "recall", "catalog", "subscribers", "db",
    "web", "serve", "demo",
]  # fmt: skip


def test_help_lists_every_command_and_exits_zero(tmp_path: Path) -> None:
    # The entry point in pyproject.toml loads, and the library's and the flow's commands are on it.
    result = run_digest_process("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Usage: digest" in result.stdout
    for command in COMMANDS:
        assert f" {command} " in result.stdout, command
    assert result.stderr == ""


def test_no_arguments_prints_the_help_and_no_traceback(tmp_path: Path) -> None:
    # `digest` alone shows what it can do rather than failing obscurely.
    result = run_digest_process(cwd=tmp_path)
    assert "Usage: digest" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["status", "--week", "2026-47"], "YYYY-Www"),
        (["run", "--week", "2026-W99"], "no ISO week 99"),
        (["catalog", "import", "nope.json"], "Cannot read nope.json"),
    ],
)
def test_a_user_error_exits_2_with_a_sentence_from_the_process(
    args: list[str], said: str, tmp_path: Path
) -> None:
    # The process's exit code and stderr are what scripts and cron see: 2 and one sentence.
    env = {"DIGEST_DATABASE_URL": os.environ["DIGEST_DATABASE_URL"]}
    result = run_digest_process(*args, cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    assert_user_error(result, said)


def test_an_unreachable_database_exits_2_without_its_password(tmp_path: Path) -> None:
    # A database error raised below the CLI still ends as one sentence and exit 2.
    env = {"DIGEST_DATABASE_URL": "postgresql+psycopg://u:hunter2@127.0.0.1:1/db"}
    result = run_digest_process("status", "--week", WEEK, cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    assert_user_error(result, "DIGEST_DATABASE_URL")
    assert "hunter2" not in result.stdout + result.stderr


def test_an_unknown_option_is_a_usage_error(tmp_path: Path) -> None:
    # Click's own usage errors keep their exit code 2 and name the option.
    result = run_digest_process("status", "--wek", WEEK, cwd=tmp_path)
    assert result.returncode == 2
    assert "--wek" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["status", "--week", "2026-47"],
        ["status", "--wek", WEEK],
        ["catalog", "import", "nope.json"],
    ],
)
def test_in_process_runs_answer_as_the_process_does(args: list[str], tmp_path: Path) -> None:
    # The suite runs `digest` in process: its exit code, stdout and stderr must be the process's,
    # or the tests that rely on it would check something else than what users get.
    env = {"DIGEST_DATABASE_URL": os.environ["DIGEST_DATABASE_URL"]}
    inside = run_digest(*args, cwd=tmp_path, env=env)
    outside = run_digest_process(*args, cwd=tmp_path, env=env)
    assert (inside.returncode, inside.stdout, inside.stderr) == (
        outside.returncode,
        outside.stdout,
        outside.stderr,
    )
