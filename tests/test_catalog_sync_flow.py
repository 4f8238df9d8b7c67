"""The flow's catalog sync in process (Prefect test harness): `sync-catalog` is the first task
only when DIGEST_CATALOG_URL is set, and the run's report says where the catalog came from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
)

from digest.audience.csv_files import import_subscribers
from digest.config import Settings, get_settings
from digest.db import ensure_schema, session_scope
from digest.run.report import render_markdown
from flows.weekly_digest import weekly_digest
from tests.support.factories import write_subscribers
from tests.support.scenario import WEEK, seed, week_tools

pytestmark = [
    pytest.mark.usefixtures("prefect_harness"),
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]
TOKEN = "flow-token-never-in-the-report-71aa"


def _task_names(flow_run_id: UUID) -> list[str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return [run.name for run in sorted(runs, key=lambda run: run.created or 0)]


def _artifact(flow_run_id: UUID) -> str:
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return str(artifact.data)


def _run(week: str) -> tuple[Any, UUID]:
    state = weekly_digest(week=week, return_state=True)
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    return state.result(), flow_run_id


def test_without_a_feed_the_run_works_as_before_with_no_sync_task(
    settings: Settings, tmp_path: Path
) -> None:
    # DIGEST_CATALOG_URL unset: the imported catalog is used, no sync-catalog task, no catalog
    # section in the report.
    seed(get_settings(), tmp_path)
    summary, flow_run_id = _run(WEEK)
    assert summary.counts == {"sent": 6} and summary.catalog is None
    assert not any(name.startswith("sync-catalog") for name in _task_names(flow_run_id))
    assert "## Catalog" not in _artifact(flow_run_id)


def test_with_a_feed_sync_catalog_runs_first_and_the_report_names_the_source(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file feed with generated_at after the week: imported by the run's first task, and the
    # artifact says from where, generated when, and what changed, never the token.
    feed = tmp_path / "feed.json"
    feed.write_text(
        json.dumps(
            {
                "format": "verdict-digest/catalog@1",
                "generated_at": "2026-11-23T07:30:00+01:00",
                "tools": week_tools(),
            }
        )
    )
    monkeypatch.setenv("DIGEST_CATALOG_URL", feed.as_uri())
    monkeypatch.setenv("DIGEST_CATALOG_TOKEN", TOKEN)
    get_settings.cache_clear()
    _subscribers(get_settings(), tmp_path)
    summary, flow_run_id = _run(WEEK)
    assert summary.counts == {"sent": 2}
    assert _task_names(flow_run_id)[0].startswith("sync-catalog")
    report = _artifact(flow_run_id)
    # Markdown-escaped, as all catalog text in the report is (the folder's name has underscores).
    assert f"- Source: {feed.as_uri()}" in report.replace("\\_", "_")
    assert "- Generated at: 2026-11-23T06:30:00+00:00" in report
    assert "- Changes: 7 added, 0 updated, 0 unchanged, 0 refused" in report
    assert report == render_markdown(summary)
    assert TOKEN not in report


def _subscribers(settings: Settings, folder: Path) -> None:
    people = write_subscribers(
        folder / "people.csv",
        [{"email": "ada@example.com"}, {"email": "w@example.com", "categories": "Writing"}],
    )
    with session_scope(ensure_schema(settings.database_url)) as session:
        import_subscribers(session=session, path=people)
