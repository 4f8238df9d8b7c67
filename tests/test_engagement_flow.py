"""The daily `engagement-report` deployment against a real `prefect server start`: `digest serve`
serves it beside the weekly one, and a run publishes the week's report as an artifact."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)
from starlette.testclient import TestClient

from digest.config import get_settings
from digest.db import upgrade
from digest.web.app import create_app
from flows.engagement_report import DAILY_CRON
from tests.support.cli import DIGEST
from tests.support.engagement import answer_week
from tests.support.prefect_server import PrefectServer
from tests.support.scenario import WEEK
from tests.support.sent_week import send_week
from tests.support.webhook_events import Signer

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
REPORT = "engagement-report/engagement-report"


def test_prefect_yaml_declares_the_daily_engagement_report() -> None:
    # Ops deploy it with the weekly one: daily cron in the schedule's zone, one run at a time.
    document = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    (deployment,) = [d for d in document["deployments"] if d["name"] == "engagement-report"]
    assert deployment["entrypoint"] == "flows/engagement_report.py:engagement_report"
    (schedule,) = deployment["schedules"]
    assert schedule["cron"] == DAILY_CRON == "0 7 * * *"
    assert schedule["timezone"] == "{{ $DIGEST_SCHEDULE_TIMEZONE }}"
    assert deployment["concurrency_limit"] == 1 and deployment["work_pool"]["name"]
    entry_file, _, function = deployment["entrypoint"].partition(":")
    assert f"def {function}(" in (ROOT / entry_file).read_text()


def _wait_for(client: Any, name: str, serve: subprocess.Popen[bytes], log: Path) -> Any:
    deadline = time.monotonic() + 120
    while True:
        assert serve.poll() is None, log.read_text()[-3000:]
        try:
            return client.read_deployment_by_name(name)
        except Exception:
            assert time.monotonic() < deadline, f"digest serve did not register {name}"
            time.sleep(1)


def _run(client: Any, deployment_id: Any, parameters: dict[str, Any], log: Path) -> Any:
    run = client.create_flow_run_from_deployment(deployment_id, parameters=parameters)
    deadline = time.monotonic() + 240
    while True:
        run = client.read_flow_run(run.id)
        if run.state is not None and run.state.is_final():
            assert run.state.is_completed(), log.read_text()[-3000:]
            return run
        assert time.monotonic() < deadline, f"run still {run.state}"
        time.sleep(1)


def _artifact(client: Any, run: Any) -> str:
    artifacts = client.read_artifacts(
        artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[f"engagement-{WEEK.lower()}"]),
            flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]),
        )
    )
    assert artifacts, "the run published no report"
    return str(artifacts[0].data)


def test_served_report_publishes_the_weeks_numbers_as_an_artifact(
    tmp_path: Path, prefect_server: PrefectServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A run for a given week, and a scheduled-style run without one, both publish the week.
    signer = Signer()
    monkeypatch.setenv("DIGEST_SENDGRID_WEBHOOK_PUBLIC_KEY", signer.public_key_b64)
    get_settings.cache_clear()
    settings = get_settings()
    upgrade(settings.database_url)
    with TestClient(create_app(settings), base_url=settings.site_url) as web:
        answer_week(web, signer, settings, send_week(settings, tmp_path))
    env = {
        "DIGEST_DATABASE_URL": settings.database_url,
        "DIGEST_SECRET_KEY": os.environ["DIGEST_SECRET_KEY"],
        **prefect_server.env(),
    }
    log = tmp_path / "serve.log"
    serve = subprocess.Popen(
        [DIGEST, "serve"],
        cwd=tmp_path,
        env={**os.environ, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with (
            temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}),
            get_client(sync_client=True) as client,
        ):
            deployment = _wait_for(client, REPORT, serve, log)
            assert deployment.schedules[0].schedule.cron == DAILY_CRON
            assert _wait_for(client, "weekly-digest/weekly", serve, log) is not None
            given = _artifact(client, _run(client, deployment.id, {"week": WEEK}, log))
            assert f"# Engagement {WEEK}" in given
            assert "| sent | 6 | |" in given and "| complaints | 1 |" in given
            assert given.count("](data:image/svg+xml;base64,") == 4
            assert os.environ["DIGEST_SECRET_KEY"] not in given
            scheduled = _artifact(client, _run(client, deployment.id, {}, log))
            assert "| sent | 6 | |" in scheduled
    finally:
        os.kill(serve.pid, signal.SIGTERM)
        try:
            serve.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            pytest.fail("digest serve kept running 30 s after SIGTERM")
