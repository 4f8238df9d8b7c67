"""The weekly run feeds itself: with DIGEST_CATALOG_URL set, `digest run` and the served
deployment fetch the week's catalog from a feed on 127.0.0.1 first, send the right week with no
`catalog import`, and refuse loudly (nothing imported, frozen or sent) when the feed fails."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)
from sqlalchemy import create_engine, text

from tests.support.cli import DIGEST, assert_user_error, run_digest
from tests.support.factories import tool_dict, write_subscribers
from tests.support.feed_server import Served, feed_document, feed_server
from tests.support.prefect_server import PrefectServer, wait_for_deployment
from tests.support.scenario import WEEK, week_tools

TOKEN = "feed-token-never-printed-9c2e"
FRESH = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)  # after 2026-W47 ended
STALE = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)  # during it

pytestmark = pytest.mark.slow


def _env(tmp_path: Path, prefect_server: PrefectServer, url: str, **extra: str) -> dict[str, str]:
    """A shell for ops: the feed, its token, and nothing imported but the subscribers."""
    env = {
        "DIGEST_DATABASE_URL": f"sqlite:///{tmp_path / 'digest.db'}",
        "DIGEST_OUTBOX_DIR": str(tmp_path / "outbox"),
        "DIGEST_SECRET_KEY": os.environ["DIGEST_SECRET_KEY"],
        "DIGEST_CATALOG_URL": url,
        "DIGEST_CATALOG_TOKEN": TOKEN,
        "DIGEST_CATALOG_WAIT_TRIES": "0",
        **prefect_server.env(),
        **extra,
    }
    people = write_subscribers(
        tmp_path / "people.csv",
        [
            {"email": "ada@example.com", "name": "Ada"},
            {"email": "bob@example.com", "name": "Bob"},
            {"email": "w@example.com", "categories": "Writing"},
            {"email": "art@example.com", "categories": "Image Generation"},
        ],
    )
    assert run_digest("subscribers", "import", str(people), cwd=tmp_path, env=env).returncode == 0
    return env


def _sql(tmp_path: Path, query: str) -> list[Any]:
    engine = create_engine(f"sqlite:///{tmp_path / 'digest.db'}")
    try:
        with engine.connect() as connection:
            return list(connection.execute(text(query)))
    finally:
        engine.dispose()


def _sent(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "outbox").glob(f"{WEEK}/*.eml"))


def _no_token(*outputs: str) -> None:
    for output in outputs:
        assert TOKEN not in output


def test_run_with_a_feed_and_no_import_sends_exactly_the_weeks_recipients(
    tmp_path: Path, prefect_server: PrefectServer
) -> None:
    # Done when: `digest run --week W` with only DIGEST_CATALOG_URL set mails the week's readers
    # (the Image Generation reader has nothing that week), says where the catalog came from,
    # and never prints the token; a later sync never changes the frozen week.
    served = Served(document=feed_document(week_tools(), FRESH))
    with feed_server(served) as url:
        env = _env(tmp_path, prefect_server, url)
        result = run_digest("run", "--week", WEEK, cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"catalog: {url} (generated: 2026-11-23T06:00:00+00:00): 7 added" in result.stdout
        _no_token(result.stdout, result.stderr)
        assert served.requests[0]["Authorization"] == f"Bearer {TOKEN}"
        status = json.loads(
            run_digest("status", "--week", WEEK, "--json", cwd=tmp_path, env=env).stdout
        )
        assert status["counts"] == {"sent": 3, "skipped": 1}
        assert len(_sent(tmp_path)) == 3
        assert not any("art@" in name for name in _sent(tmp_path))
        (frozen_before,) = _sql(tmp_path, "SELECT content FROM digest")

        changed = [{**t, "tagline": "Rewritten after the send"} for t in week_tools()]
        served.document = feed_document(changed, FRESH)
        synced = run_digest("catalog", "sync", cwd=tmp_path, env=env)
        assert synced.returncode == 0, synced.stderr
        assert "0 added, 7 updated, 0 unchanged, 0 refused" in synced.stdout
        again = run_digest("run", "--week", WEEK, cwd=tmp_path, env=env)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "HTTP 304" in again.stdout and "already sent" in again.stdout
    (frozen_after,) = _sql(tmp_path, "SELECT content FROM digest")
    assert frozen_after == frozen_before
    assert len(_sent(tmp_path)) == 3


def test_run_with_the_feed_answering_503_exits_non_zero_and_sends_nothing(
    tmp_path: Path, prefect_server: PrefectServer
) -> None:
    # Done when: a feed that keeps answering 503 ends the run with one sentence naming the feed
    # and the reason, before anything is imported, frozen or sent.
    served = Served(document=feed_document(week_tools(), FRESH), failures=[503] * 10)
    with feed_server(served) as url:
        env = _env(tmp_path, prefect_server, url, DIGEST_CATALOG_MAX_ATTEMPTS="2")
        result = run_digest("run", "--week", WEEK, cwd=tmp_path, env=env)
    assert_user_error(result, f"Catalog sync from {url} failed: HTTP 503 on each of 2 tries")
    _no_token(result.stdout, result.stderr)
    assert len(served.requests) == 2
    assert _sent(tmp_path) == []
    assert _sql(tmp_path, "SELECT count(*) FROM tool") == [(0,)]
    assert _sql(tmp_path, "SELECT count(*) FROM digest") == [(0,)]


def test_run_with_an_invalid_feed_imports_nothing_and_sends_nothing(
    tmp_path: Path, prefect_server: PrefectServer
) -> None:
    # Done when: one invalid record means no tool imported and nobody mailed, every problem named.
    broken = [*week_tools(), tool_dict("bad-price", pricing="cheap")]
    served = Served(document=feed_document(broken, FRESH))
    with feed_server(served) as url:
        env = _env(tmp_path, prefect_server, url)
        result = run_digest("run", "--week", WEEK, cwd=tmp_path, env=env)
    assert_user_error(result, url, "nothing was imported", "'bad-price'", "pricing")
    _no_token(result.stdout, result.stderr)
    assert _sent(tmp_path) == []
    assert _sql(tmp_path, "SELECT count(*) FROM tool") == [(0,)]
    assert _sql(tmp_path, "SELECT count(*) FROM digest") == [(0,)]


def test_a_stale_feed_refuses_the_week_then_a_fresh_one_sends_it(
    tmp_path: Path, prefect_server: PrefectServer
) -> None:
    # A feed made before the week ended would send a half week as if it were a quiet one:
    # refused with a sentence; once the site regenerates it, the same command sends the week.
    served = Served(document=feed_document(week_tools(), STALE))
    with feed_server(served) as url:
        env = _env(tmp_path, prefect_server, url)
        refused = run_digest("run", "--week", WEEK, cwd=tmp_path, env=env)
        assert_user_error(refused, f"refused {WEEK}", f"not complete for {WEEK}", url)
        assert _sent(tmp_path) == []
        assert _sql(tmp_path, "SELECT count(*) FROM tool") == [(0,)]
        served.document = feed_document(week_tools(), FRESH)
        accepted = run_digest("run", "--week", WEEK, cwd=tmp_path, env=env)
    assert accepted.returncode == 0, accepted.stderr[-3000:]
    assert len(_sent(tmp_path)) == 3


def test_a_run_that_waited_its_tries_for_a_fresh_feed_fails_with_the_reason(
    tmp_path: Path, prefect_server: PrefectServer
) -> None:
    # DIGEST_CATALOG_WAIT_TRIES more tries, DIGEST_CATALOG_WAIT_MINUTES apart, then the run
    # fails with the feed's staleness as its reason, having imported and sent nothing.
    served = Served(document=feed_document(week_tools(), STALE))
    with feed_server(served) as url:
        env = _env(
            tmp_path,
            prefect_server,
            url,
            DIGEST_CATALOG_WAIT_TRIES="2",
            DIGEST_CATALOG_WAIT_MINUTES="0.01",
        )
        started = time.monotonic()
        result = run_digest("run", "--week", WEEK, cwd=tmp_path, env=env)
    assert_user_error(result, f"not complete for {WEEK}", url, "Asked 3 times, 0.01 minutes apart")
    # While it waits, the log says when it asks next and how to stop waiting.
    said = " ".join(result.stderr.split())
    assert "Asking again in 0.01 minutes, at" in said and "(try 2 of 3" in said
    assert "(try 3 of 3" in said and "press Ctrl-C to stop waiting" in said
    assert len(served.requests) == 3
    assert time.monotonic() - started >= 1.2  # two waits of 0.6 s
    assert _sent(tmp_path) == []
    assert _sql(tmp_path, "SELECT count(*) FROM tool") == [(0,)]


def test_catalog_sync_prints_what_changed_and_never_the_credentials(
    tmp_path: Path, prefect_server: PrefectServer
) -> None:
    # `digest catalog sync` says added, updated, unchanged and refused; a 304 says so; neither
    # the token nor a password in the address is ever printed, even when the feed refuses us.
    served = Served(document=feed_document(week_tools(), FRESH))
    with feed_server(served) as url:
        env = _env(tmp_path, prefect_server, url)
        first = run_digest("catalog", "sync", cwd=tmp_path, env=env)
        second = run_digest("catalog", "sync", cwd=tmp_path, env=env)
        served.failures = [403]
        with_password = url.replace("http://", "http://ops:hunter2pw@")
        refused = run_digest("catalog", "sync", "--url", with_password, cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    assert "7 added, 0 updated, 0 unchanged, 0 refused" in first.stdout
    assert "not modified since the last sync (HTTP 304)" in second.stdout
    assert_user_error(refused, "HTTP 403", "DIGEST_CATALOG_TOKEN", url)
    for output in (first, second, refused):
        _no_token(output.stdout, output.stderr)
        assert "hunter2pw" not in output.stdout + output.stderr


def test_without_a_feed_catalog_sync_says_what_to_set(tmp_path: Path) -> None:
    # No DIGEST_CATALOG_URL and no --url: a sentence naming the setting, not a traceback.
    result = run_digest(
        "catalog",
        "sync",
        cwd=tmp_path,
        env={"DIGEST_DATABASE_URL": f"sqlite:///{tmp_path / 'digest.db'}"},
    )
    assert_user_error(result, "DIGEST_CATALOG_URL is not set", "--url")


@pytest.mark.parametrize(
    ("address", "said"),
    [
        ("ftp://site.example/catalog.json", "--url=ftp://site.example/catalog.json cannot be"),
        ("http://[::1/catalog.json", "--url is not a valid address"),
        ("http://127.0.0.1:9/\nx", "--url is not a valid address"),
        ("https://", "--url is not a valid address"),
        ("https://:443/x", "--url is not a valid address"),
        ("https://example.com:99999/x", "--url is not a valid address"),
        ("https://exa mple.com/", "--url is not a valid address"),
        ("missing-folder/catalog.json", "Check --url."),
    ],
)
def test_a_bad_url_option_is_blamed_on_the_option_not_the_setting(
    address: str, said: str, tmp_path: Path
) -> None:
    # `catalog sync --url X` names `--url` in its fix: DIGEST_CATALOG_URL is not what was wrong.
    result = run_digest(
        "catalog",
        "sync",
        "--url",
        address,
        cwd=tmp_path,
        env={"DIGEST_DATABASE_URL": f"sqlite:///{tmp_path / 'digest.db'}"},
    )
    assert_user_error(result, said)
    assert "DIGEST_CATALOG_URL" not in result.stderr


def _run_to_the_end(client: Any, deployment_id: Any, log: Path) -> Any:
    run = client.create_flow_run_from_deployment(deployment_id, parameters={"week": WEEK})
    deadline = time.monotonic() + 240
    while True:
        run = client.read_flow_run(run.id)
        if run.state is not None and run.state.is_final():
            return run
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(1)


def test_a_served_deployment_waits_for_a_fresh_feed_then_syncs_selects_and_sends(
    tmp_path: Path, prefect_server: PrefectServer
) -> None:
    # The unattended Monday: the deployment's run finds the feed not yet complete, waits
    # rescheduled (AwaitingFeed, its process gone: no worker held), asks again
    # DIGEST_CATALOG_WAIT_MINUTES later, then imports, selects and sends with no `catalog
    # import`; the UI shows sync-catalog first, and the report says where the catalog came from.
    served = Served(document=feed_document(week_tools(), FRESH))
    served.earlier = [feed_document(week_tools(), STALE)]
    log = tmp_path / "serve.log"
    with feed_server(served) as url:
        env = _env(
            tmp_path,
            prefect_server,
            url,
            DIGEST_CATALOG_WAIT_TRIES="2",
            DIGEST_CATALOG_WAIT_MINUTES="0.02",
        )
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
                deployment = wait_for_deployment(client, serve, log)
                run = _run_to_the_end(client, deployment.id, log)
                assert run.state.is_completed(), log.read_text()[-3000:]
                tasks = client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
                )
                first = min(tasks, key=lambda t: t.created)
                assert first.name.startswith("sync-catalog")
                syncs = [t for t in tasks if t.name.startswith("sync-catalog")]
                assert len(syncs) == 2  # refused once as stale, then imported
                states = client.read_flow_run_states(run.id)
                (waited,) = [state for state in states if state.name == "AwaitingFeed"]
                assert waited.is_scheduled() and f"not complete for {WEEK}" in waited.message
                assert "Asking again in 0.02 minutes, at" in waited.message
                assert "(try 2 of 3" in waited.message
                (artifact,) = client.read_artifacts(
                    artifact_filter=ArtifactFilter(
                        key=ArtifactFilterKey(any_=[f"weekly-digest-{WEEK.lower()}"]),
                        flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]),
                    )
                )
                report = str(artifact.data)
        finally:
            os.kill(serve.pid, signal.SIGTERM)
            try:
                serve.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(serve.pid, signal.SIGKILL)
    assert "## Catalog" in report and f"Source: {url}" in report
    assert "Generated at: 2026-11-23T06:00:00+00:00" in report
    assert "7 added, 0 updated, 0 unchanged, 0 refused" in report
    assert "| sent | 3 |" in report
    assert len(served.requests) == 2
    _no_token(report, log.read_text())
    assert len(_sent(tmp_path)) == 3
