"""The ops path against a real `prefect server start`: `digest serve` registers the weekly
deployment, a run triggered through the API for a given week completes, and its artifact and
ledger tell the same story."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from tests.support.cli import DIGEST, run_digest
from tests.support.factories import write_catalog, write_subscribers
from tests.support.prefect_server import PrefectServer
from tests.support.scenario import WEEK, week_tools

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_prefect_yaml_declares_the_weekly_deployment() -> None:
    # The deployment definition ops deploy: name, entrypoint, Monday 08:00 cron, one run at a time.
    document = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    (deployment,) = document["deployments"]
    assert deployment["name"] == "weekly"
    assert deployment["entrypoint"] == "flows/weekly_digest.py:weekly_digest"
    assert deployment["schedules"][0]["cron"] == "0 8 * * 1"
    assert deployment["schedules"][0]["timezone"]
    assert deployment["concurrency_limit"] == 1
    assert deployment["work_pool"]["name"]
    entry_file, _, function = deployment["entrypoint"].partition(":")
    assert f"def {function}(" in (ROOT / entry_file).read_text()


def test_served_deployment_runs_a_given_week_from_the_api(
    tmp_path: Path, prefect_server: PrefectServer
) -> None:
    # Ops trigger `weekly-digest/weekly` with a week parameter; the run sends and reports it.
    env = {
        "DIGEST_DATABASE_URL": f"sqlite:///{tmp_path / 'digest.db'}",
        "DIGEST_SECRET_KEY": os.environ["DIGEST_SECRET_KEY"],
        "DIGEST_OUTBOX_DIR": str(tmp_path / "outbox"),
        **prefect_server.env(),
    }
    catalog = write_catalog(tmp_path / "catalog.json", week_tools())
    people = write_subscribers(
        tmp_path / "people.csv", [{"email": f"r{i}@example.com"} for i in range(3)]
    )
    assert run_digest("catalog", "import", str(catalog), cwd=tmp_path, env=env).returncode == 0
    assert run_digest("subscribers", "import", str(people), cwd=tmp_path, env=env).returncode == 0

    serve = subprocess.Popen(
        [DIGEST, "serve"],
        cwd=tmp_path,
        env={**os.environ, **env},
        stdout=(tmp_path / "serve.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with (
            temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}),
            get_client(sync_client=True) as client,
        ):
            deadline = time.monotonic() + 120
            deployment = None
            while deployment is None:
                assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
                try:
                    deployment = client.read_deployment_by_name("weekly-digest/weekly")
                except Exception:
                    assert time.monotonic() < deadline, (
                        "digest serve did not register the deployment"
                    )
                    time.sleep(1)
            assert deployment.schedules and deployment.schedules[0].schedule.cron == "0 8 * * 1"  # type: ignore[union-attr]
            run = client.create_flow_run_from_deployment(deployment.id, parameters={"week": WEEK})
            deadline = time.monotonic() + 240
            while True:
                run = client.read_flow_run(run.id)
                assert run.state is not None
                if run.state.is_final():
                    break
                assert time.monotonic() < deadline, f"run still {run.state.name}"
                time.sleep(1)
            assert run.state.is_completed(), (tmp_path / "serve.log").read_text()[-3000:]
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=[f"weekly-digest-{WEEK.lower()}"])
                )
            )
            assert artifacts, "the run left no report artifact"
            report = str(artifacts[0].data)
            assert WEEK in report and "| sent | 3 |" in report
            assert "List-Unsubscribe link in every variant: yes" in report
            assert "SG." not in report and os.environ["DIGEST_SECRET_KEY"] not in report
    finally:
        # One SIGTERM, as a service manager sends it, stops `digest serve`.
        os.kill(serve.pid, signal.SIGTERM)
        try:
            serve.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            pytest.fail("digest serve kept running 30 s after SIGTERM")
    status = run_digest("status", "--week", WEEK, "--json", cwd=tmp_path, env=env)
    assert '"sent": 3' in status.stdout
    assert len(list((tmp_path / "outbox" / WEEK).glob("*.eml"))) == 3
