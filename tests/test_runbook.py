"""The runbook (docs/runbook.md), run as written: its setup and load steps pasted into a shell on
SQLite and on a real PostgreSQL server, from a folder laid out like the project."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.cli import DIGEST
from tests.support.postgres import PostgresServer

ROOT = Path(__file__).resolve().parents[1]


def runbook_block(name: str) -> str:
    """The shell block that follows `<!-- runbook:NAME -->` in the runbook, unindented."""
    runbook = (ROOT / "docs" / "runbook.md").read_text(encoding="utf-8")
    found = re.search(rf"<!-- runbook:{name} -->\s*```sh\n(.*?)```", runbook, re.S)
    assert found, f"docs/runbook.md has no runbook:{name} block"
    return "\n".join(line.strip() for line in found.group(1).splitlines()) + "\n"


def _run(script: str, folder: Path, extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DIGEST_", "PYTEST", "SENDGRID_"))
    }
    environment["PATH"] = f"{Path(DIGEST).parent}:{environment['PATH']}"
    environment.update(extra)
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=folder,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder with the project's shipped sample files where the runbook expects them."""
    shutil.copytree(ROOT / "digest" / "samples", tmp_path / "digest" / "samples")
    return tmp_path


def _previewed(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    document = json.loads(result.stdout[result.stdout.index("{") :])
    assert isinstance(document, dict)
    return document


def test_the_sqlite_trial_steps_work_as_written(project: Path) -> None:
    # Steps 1 (SQLite) and 2 pasted in order on a machine with nothing else set up.
    result = _run(runbook_block("sqlite") + runbook_block("load"), project, {})
    document = _previewed(result)
    assert document["week"] == "2026-W10" and document["pairs"]
    assert (project / "digest.db").exists()


@pytest.mark.postgres
def test_the_postgresql_steps_work_as_written(
    project: Path, postgres_server: PostgresServer
) -> None:
    # Steps 1 (PostgreSQL: role, database, URL, schema) and 2, against a real server.
    where = {"PGHOST": postgres_server.host, "PGPORT": str(postgres_server.port)}
    result = _run(runbook_block("postgresql") + runbook_block("load"), project, where)
    document = _previewed(result)
    assert document["pairs"]
    assert not (project / "digest.db").exists()  # everything went to PostgreSQL
