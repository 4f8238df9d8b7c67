"""The `digest` command: exit codes, messages, and the interface's formats."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.support.cli import assert_user_error, run_digest
from tests.support.factories import tool_dict, write_catalog, write_subscribers
from tests.support.scenario import WEEK, week_tools


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        "DIGEST_DATABASE_URL": os.environ["DIGEST_DATABASE_URL"],
        "DIGEST_OUTBOX_DIR": str(tmp_path / "outbox"),
        "DIGEST_SECRET_KEY": os.environ["DIGEST_SECRET_KEY"],
    }


def _seed(tmp_path: Path) -> dict[str, str]:
    env = _env(tmp_path)
    assert run_digest("db", "upgrade", cwd=tmp_path, env=env).returncode == 0
    catalog = write_catalog(tmp_path / "catalog.json", week_tools())
    assert run_digest("catalog", "import", str(catalog), cwd=tmp_path, env=env).returncode == 0
    people = write_subscribers(
        tmp_path / "people.csv",
        [
            {"email": "ada@example.com", "name": "Ada"},
            {"email": "w@example.com", "categories": "Writing"},
        ],
    )
    assert run_digest("subscribers", "import", str(people), cwd=tmp_path, env=env).returncode == 0
    return env


def test_db_upgrade_is_idempotent(tmp_path: Path) -> None:
    # Upgrading twice is safe and says the schema is current.
    env = _env(tmp_path)
    first = run_digest("db", "upgrade", cwd=tmp_path, env=env)
    assert first.returncode == 0 and "migrated" in first.stdout
    second = run_digest("db", "upgrade", cwd=tmp_path, env=env)
    assert second.returncode == 0 and "already at revision" in second.stdout


def test_invalid_catalog_exits_non_zero_with_every_problem_and_no_traceback(tmp_path: Path) -> None:
    # A bad file is a user error: one paragraph, every bad record, nothing imported.
    env = _env(tmp_path)
    path = write_catalog(
        tmp_path / "bad.json", [tool_dict("ok"), tool_dict("BAD"), tool_dict("x", pricing="lots")]
    )
    result = run_digest("catalog", "import", str(path), cwd=tmp_path, env=env)
    assert_user_error(result, "nothing was imported", "record 1", "record 2", "--skip-invalid")
    status = run_digest("status", "--week", WEEK, "--json", cwd=tmp_path, env=env)
    assert json.loads(status.stdout) == {"week": WEEK, "total": 0, "counts": {}, "recalled": False}


def test_missing_file_and_bad_week_are_user_errors(tmp_path: Path) -> None:
    # Typos get a sentence with the fix, never a traceback.
    env = _env(tmp_path)
    assert_user_error(
        run_digest("catalog", "import", "nope.json", cwd=tmp_path, env=env), "Cannot read nope.json"
    )
    assert_user_error(run_digest("status", "--week", "2026-47", cwd=tmp_path, env=env), "YYYY-Www")
    assert_user_error(
        run_digest("run", "--week", "2026-W99", cwd=tmp_path, env=env), "no ISO week 99"
    )


def test_unreachable_database_is_a_user_error_without_password(tmp_path: Path) -> None:
    # A wrong DIGEST_DATABASE_URL names the variable and never prints the password.
    env = {**_env(tmp_path), "DIGEST_DATABASE_URL": "postgresql+psycopg://u:hunter2@127.0.0.1:1/db"}
    result = run_digest("status", "--week", WEEK, cwd=tmp_path, env=env)
    assert_user_error(result, "DIGEST_DATABASE_URL")
    assert "hunter2" not in result.stderr + result.stdout


def test_preview_json_follows_the_interface(tmp_path: Path) -> None:
    # `preview --format json` prints exactly the documented object, and records nothing.
    env = _seed(tmp_path)
    result = run_digest("preview", "--week", WEEK, "--format", "json", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert set(document) == {
        "week",
        "subject",
        "intro",
        "pairs",
        "also_new",
        "excluded",
        "skipped",
        "sends",
    }
    assert document["intro"] is None  # the editor's note: none written for this week
    assert document["skipped"] is False and document["sends"] is True
    assert document["week"] == WEEK and document["subject"]
    new_slugs = {"code-llama-4", "mistral-3-8b", "patchpilot", "stackscribe", "inkwell"}
    paired = [slug for pair in document["pairs"] for slug in (pair["a"], pair["b"])]
    assert all(pair["a"] in new_slugs for pair in document["pairs"])
    assert all(set(pair) == {"a", "b", "category", "verdict"} for pair in document["pairs"])
    assert all(pair["verdict"] for pair in document["pairs"])
    assert new_slugs <= set(paired) | set(document["also_new"])
    writer = run_digest(
        "preview",
        "--week",
        WEEK,
        "--format",
        "json",
        "--email",
        "W@example.com",
        cwd=tmp_path,
        env=env,
    )
    writer_doc = json.loads(writer.stdout)
    assert {p["category"].lower() for p in writer_doc["pairs"]} == {"writing"}
    status = run_digest("status", "--week", WEEK, "--json", cwd=tmp_path, env=env)
    assert json.loads(status.stdout)["total"] == 0


def test_preview_out_writes_html_text_and_eml(tmp_path: Path) -> None:
    # `--out DIR` writes digest-<week>.html, .txt and .eml; the .eml has the unsubscribe headers.
    env = _seed(tmp_path)
    result = run_digest(
        "preview", "--week", WEEK, "--out", str(tmp_path / "p"), cwd=tmp_path, env=env
    )
    assert result.returncode == 0, result.stderr
    for suffix in ("html", "txt", "eml"):
        assert (tmp_path / "p" / f"digest-{WEEK}.{suffix}").stat().st_size > 0
    eml = (tmp_path / "p" / f"digest-{WEEK}.eml").read_text()
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in eml


def test_run_then_status_then_rerun(tmp_path: Path) -> None:
    # `digest run` sends once; `status --json` reports the counts; a rerun adds nothing.
    env = _seed(tmp_path)
    first = run_digest("run", "--week", WEEK, cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    status = json.loads(
        run_digest("status", "--week", WEEK, "--json", cwd=tmp_path, env=env).stdout
    )
    assert status == {"week": WEEK, "total": 2, "counts": {"sent": 2}, "recalled": False}
    second = run_digest("run", "--week", WEEK, cwd=tmp_path, env=env)
    assert second.returncode == 0
    assert "already sent: nothing left to send" in second.stdout
    assert len(list((tmp_path / "outbox" / WEEK).glob("*.eml"))) == 2


def test_subscribers_export_round_trips(tmp_path: Path) -> None:
    # Exporting writes the import header plus status, and importing the export changes nothing.
    env = _seed(tmp_path)
    out = tmp_path / "export.csv"
    assert (
        run_digest("subscribers", "export", "--out", str(out), cwd=tmp_path, env=env).returncode
        == 0
    )
    assert (
        out.read_text().splitlines()[0]
        == "email,name,categories,subscribed_at,consent_source,status"
    )
    again = run_digest("subscribers", "import", str(out), cwd=tmp_path, env=env)
    assert "0 created, 0 updated, 2 unchanged" in again.stdout
    stdout = run_digest("subscribers", "export", cwd=tmp_path, env=env).stdout
    assert stdout == out.read_text()


def test_a_plain_postgresql_url_works(tmp_path: Path, postgres_url: str) -> None:
    # Ops write postgresql://...; the installed psycopg 3 driver is used for it.
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    env = {**_env(tmp_path), "DIGEST_DATABASE_URL": plain}
    result = run_digest("db", "upgrade", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    status = run_digest("status", "--week", WEEK, "--json", cwd=tmp_path, env=env)
    assert json.loads(status.stdout)["total"] == 0


def test_status_never_creates_a_database_and_names_the_one_it_reads(tmp_path: Path) -> None:
    # In a shell without the worker's DIGEST_DATABASE_URL, status must not report an empty,
    # freshly made SQLite file as "no deliveries": it says where it looked and what to set.
    env = {**_env(tmp_path), "DIGEST_DATABASE_URL": f"sqlite:///{tmp_path / 'absent.db'}"}
    result = run_digest("status", "--week", WEEK, cwd=tmp_path, env=env)
    assert_user_error(result, "absent.db", "DIGEST_DATABASE_URL")
    assert not (tmp_path / "absent.db").exists()

    env = _seed(tmp_path)
    shown = run_digest("status", "--week", WEEK, cwd=tmp_path, env=env)
    assert shown.returncode == 0 and "digest.db" in shown.stdout


def test_read_only_commands_never_create_a_database(tmp_path: Path) -> None:
    # preview and subscribers export read; pointed at a missing SQLite file they say so.
    env = {**_env(tmp_path), "DIGEST_DATABASE_URL": f"sqlite:///{tmp_path / 'absent.db'}"}
    for command in (["preview", "--week", WEEK, "--format", "json"], ["subscribers", "export"]):
        assert_user_error(run_digest(*command, cwd=tmp_path, env=env), "absent.db")
    assert not (tmp_path / "absent.db").exists()
