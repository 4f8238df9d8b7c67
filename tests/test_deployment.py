"""The ops path against a real `prefect server start`: `digest serve` registers the weekly
deployment, a run triggered through the API for a given week completes, and its artifact and
ledger tell the same story."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)

from flows.serve import SERVED_DEPLOYMENTS
from tests.support.cli import DIGEST, run_digest, run_digest_process
from tests.support.factories import write_catalog, write_subscribers
from tests.support.prefect_server import (
    PREFECT,
    PrefectServer,
    delete_deployments,
    wait_for_deployment,
)
from tests.support.scenario import WEEK, week_tools

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_prefect_yaml_declares_the_weekly_deployment() -> None:
    # The deployment definition ops deploy: name, entrypoint, Monday 08:00 cron, one run at a time.
    document = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    (deployment,) = [d for d in document["deployments"] if d["name"] == "weekly"]
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
            deployment = wait_for_deployment(client, serve, tmp_path / "serve.log")
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
                    key=ArtifactFilterKey(any_=[f"weekly-digest-{WEEK.lower()}"]),
                    # This run's own: other tests on the shared server report the same week.
                    flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]),
                )
            )
            assert artifacts, "the run left no report artifact"
            report = str(artifacts[0].data)
            assert WEEK in report and "| sent | 3 |" in report
            assert (
                "Unsubscribe link in both parts of every variant (checked before the send): yes"
                in report
            )
            assert "headers: on all 3 messages this run sent" in report
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


def _deployment(prefect_server: PrefectServer) -> object | None:
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}),
        get_client(sync_client=True) as client,
    ):
        try:
            return client.read_deployment_by_name("weekly-digest/weekly")
        except ObjectNotFound:
            return None


def _serve_until_registered(
    tmp_path: Path, env: dict[str, str], prefect_server: PrefectServer
) -> None:
    serve = subprocess.Popen(
        [DIGEST, "serve"],
        cwd=tmp_path,
        env={**os.environ, **env},
        stdout=(tmp_path / "serve.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        # Stopped as soon as the deployment shows, often before Prefect's runner has started
        # (and would pause it): `digest serve` must pause it all the same.
        while _deployment(prefect_server) is None:
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "digest serve did not register the deployment"
            time.sleep(0.1)
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=30)


def test_moving_from_digest_serve_to_a_work_pool_keeps_the_schedule(
    tmp_path: Path, prefect_server: PrefectServer
) -> None:
    # Stopping `digest serve` pauses its deployment; deploying to the pool must run it again,
    # and a later `digest serve` must refuse to take the pool's deployment back.
    env = {
        "DIGEST_DATABASE_URL": f"sqlite:///{tmp_path / 'digest.db'}",
        "DIGEST_SECRET_KEY": os.environ["DIGEST_SECRET_KEY"],
        **prefect_server.env(),
    }
    prefect = [PREFECT]
    project = tmp_path / "project"
    for folder in ("flows", "deployments"):
        shutil.copytree(ROOT / folder, project / folder)
    try:
        _serve_until_registered(tmp_path, env, prefect_server)
        served = _deployment(prefect_server)
        assert served is not None and served.paused and not served.work_pool_name  # type: ignore[attr-defined]

        deploy_env = {
            **os.environ,
            **env,
            "DIGEST_PROJECT_DIR": str(project),
            "DIGEST_SCHEDULE_TIMEZONE": "Europe/Berlin",
        }
        for command in (
            ["work-pool", "create", "digest-pool", "--type", "process", "--overwrite"],
            ["--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml", "--all"],
        ):
            done = subprocess.run(
                prefect + command,
                cwd=project,
                env=deploy_env,
                capture_output=True,
                text=True,
                timeout=180,
                check=False,
            )
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        pooled = _deployment(prefect_server)
        assert pooled is not None
        assert pooled.work_pool_name == "digest-pool" and not pooled.paused  # type: ignore[attr-defined]
        assert pooled.schedules[0].schedule.timezone == "Europe/Berlin"  # type: ignore[attr-defined]

        again = run_digest_process("serve", cwd=tmp_path, env=env, timeout=120)
        assert again.returncode != 0 and "work pool" in again.stderr, again.stderr[-2000:]
        kept = _deployment(prefect_server)
        assert kept is not None
        assert kept.work_pool_name == "digest-pool" and not kept.paused  # type: ignore[attr-defined]
    finally:
        delete_deployments(prefect_server.api_url, *SERVED_DEPLOYMENTS)


def test_the_pool_schedule_and_the_served_schedule_are_one() -> None:
    # One cron for both ways of running, and one zone setting (DIGEST_SCHEDULE_TIMEZONE).
    from flows.serve import WEEKLY_CRON

    document = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    (schedule,) = document["deployments"][0]["schedules"]
    assert schedule["cron"] == WEEKLY_CRON
    assert schedule["timezone"] == "{{ $DIGEST_SCHEDULE_TIMEZONE }}"
