"""What ops meet when a process dies, against a real `prefect server start` and the fake SendGrid
in its own process: a SIGKILL of `digest serve` or of a worker leaves nothing sending and no
process behind; the dead run shows Crashed (heartbeats and Prefect's zombie automation), and
Retry on it (the same flow run id) finishes the week with every subscriber mailed once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.crash_detection import AUTOMATION_NAME, SILENCE_SECONDS
from flows.serve import SERVED_DEPLOYMENTS
from tests.fakes.fake_sendgrid import FakeSendGridProcess, delivered_record
from tests.support.cli import DIGEST, run_digest
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
API_KEY = "SG.ops-crash-key"
SUBSCRIBERS = 240
# Promised to ops: sending stops this soon after the parent dies, and the run shows Crashed.
STOPS_WITHIN = 5.0
CRASHED_WITHIN = 90.0


def _left_behind(session: int) -> list[int]:
    """Live processes of the killed one's session (it was started leading its own), and flow-run
    processes anywhere (a worker starts each in a session of its own)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if fields[0] == "Z":
            continue
        if int(fields[3]) == session or f"DIGEST_TEST_MARK={session}".encode() in environ:
            found.append(int(proc.name))
    return found


def _lines(record: Path) -> int:
    return len(record.read_text().splitlines()) if record.exists() else 0


def _env(tmp_path: Path, fake: FakeSendGridProcess, server: PrefectServer) -> dict[str, str]:
    env = {
        "DIGEST_DATABASE_URL": f"sqlite:///{tmp_path / 'digest.db'}",
        "DIGEST_SECRET_KEY": os.environ["DIGEST_SECRET_KEY"],
        "DIGEST_EMAIL_BACKEND": "sendgrid",
        "SENDGRID_API_KEY": API_KEY,
        "DIGEST_SENDGRID_HOST": fake.url,
        "DIGEST_BATCH_SIZE": "4",
        **server.env(),
    }
    catalog = write_catalog(tmp_path / "catalog.json", week_tools())
    people = write_subscribers(
        tmp_path / "people.csv", [{"email": f"r{i}@example.com"} for i in range(SUBSCRIBERS)]
    )
    for what, path in (("catalog", catalog), ("subscribers", people)):
        done = run_digest(what, "import", str(path), cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
    return env


def _start(
    command: list[str], cwd: Path, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    """Start `command` leading a session of its own; its children inherit a mark that finds
    them wherever they go (the mark is the session's id, known once started: the pid)."""
    return subprocess.Popen(
        ["sh", "-c", 'DIGEST_TEST_MARK=$$ exec "$@"', "sh", *command],
        cwd=cwd,
        env={**os.environ, **env},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@pytest.fixture
def api(prefect_server: PrefectServer) -> Iterator[SyncPrefectClient]:
    with (
        temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}),
        get_client(sync_client=True) as client,
    ):
        yield client


def _until(check: Any, seconds: float, what: str) -> float:
    """Poll `check` until true; the seconds it took."""
    began = time.monotonic()
    while not check():
        assert time.monotonic() - began < seconds, what
        time.sleep(0.25)
    return time.monotonic() - began


def _kill_mid_send(process: subprocess.Popen[bytes], record: Path, log: Path) -> int:
    """SIGKILL `process` alone once sending is under way; the record's length at that moment."""
    _until(lambda: _lines(record) >= 12, 180, f"never reached the provider: {log.read_text()}")
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return _lines(record)


def _assert_nothing_left_sending(leader: int, record: Path, at_kill: int) -> None:
    # The orphaned flow-run process leaves, and the fake's log stops growing, within 5 s.
    try:
        _until(lambda: not _left_behind(leader), STOPS_WITHIN, "a process outlived its parent")
    except AssertionError:
        left = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in _left_behind(leader)]
        raise AssertionError(f"left behind: {left}") from None
    settled = _lines(record)
    time.sleep(3)
    assert _lines(record) == settled, "something still sends after its parent died"
    assert settled < SUBSCRIBERS + at_kill  # the kill did land mid-send


def _delete_deployment(env: dict[str, str]) -> None:
    """Both deployments go, so later tests on the session's server may `digest serve` them."""
    delete_deployments(env["PREFECT_API_URL"], *SERVED_DEPLOYMENTS)


def _serve(tmp_path: Path, env: dict[str, str], api: SyncPrefectClient) -> Any:
    log = tmp_path / "serve.log"
    serve = _start([DIGEST, "serve"], tmp_path, env, log)
    wait_for_deployment(api, serve, log)
    return serve


def _final(api: SyncPrefectClient, flow_run_id: Any) -> Any:
    state = api.read_flow_run(flow_run_id).state
    assert state is not None
    return state if state.is_final() else None


def _retry_to_the_end(
    tmp_path: Path, env: dict[str, str], api: SyncPrefectClient, flow_run_id: Any
) -> None:
    """Serve again, press Retry (the same flow run id, as the UI does), and let it finish."""
    serve = _serve(tmp_path, env, api)
    try:
        retried = subprocess.run(
            [PREFECT, "flow-run", "retry", str(flow_run_id)],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert retried.returncode == 0, retried.stdout + retried.stderr
        _until(lambda: api.read_flow_run(flow_run_id).state.is_completed(), 240, "no Retry")  # type: ignore[union-attr]
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(timeout=60)


def _everyone_once(tmp_path: Path, env: dict[str, str], record: Path) -> None:
    status = json.loads(
        run_digest("status", "--week", WEEK, "--json", cwd=tmp_path, env=env).stdout
    )
    assert status["counts"] == {"sent": SUBSCRIBERS}
    delivered = Counter(entry["to"] for entry in delivered_record(record))
    assert delivered == Counter({f"r{i}@example.com": 1 for i in range(SUBSCRIBERS)})


def test_a_sigkilled_digest_serve_leaves_nothing_sending_and_retry_finishes_once(
    tmp_path: Path, prefect_server: PrefectServer, api: SyncPrefectClient
) -> None:
    # `digest serve` alone is killed: its orphaned flow-run process stops sending and leaves
    # within 5 s, its run never stays Running, and Retry (same id) mails everyone once.
    record = tmp_path / "accepted.jsonl"
    with FakeSendGridProcess(API_KEY, record, delay=0.25) as fake:
        env = _env(tmp_path, fake, prefect_server)
        serve = _serve(tmp_path, env, api)
        try:
            deployment = api.read_deployment_by_name("weekly-digest/weekly")
            assert api.read_automations_by_name(AUTOMATION_NAME), "no crash detection set up"
            run = api.create_flow_run_from_deployment(deployment.id, parameters={"week": WEEK})
            at_kill = _kill_mid_send(serve, record, tmp_path / "serve.log")
            _assert_nothing_left_sending(serve.pid, record, at_kill)
            # It ended itself Failed with the reason, or, if it could not, the automation
            # marks it Crashed: either way it offers Retry.
            _until(lambda: _final(api, run.id), CRASHED_WITHIN, "the run stayed unfinished")
            ended = _final(api, run.id)
            assert ended.is_failed() or ended.is_crashed(), ended
            assert "Retry" in (ended.message or ""), ended
            _retry_to_the_end(tmp_path, env, api, run.id)
        finally:
            _delete_deployment(env)
    _everyone_once(tmp_path, env, record)


def test_a_killed_flow_run_shows_crashed_within_90_s_and_retry_finishes_once(
    tmp_path: Path, prefect_server: PrefectServer, api: SyncPrefectClient
) -> None:
    # The machine's way of dying: `digest serve` and its flow-run process killed together, so
    # nothing can report. Heartbeats stop, the automation marks the run Crashed within 90 s with
    # what to do, and Retry (same id) mails everyone once.
    record = tmp_path / "accepted.jsonl"
    with FakeSendGridProcess(API_KEY, record, delay=0.25) as fake:
        env = _env(tmp_path, fake, prefect_server)
        serve = _serve(tmp_path, env, api)
        try:
            deployment = api.read_deployment_by_name("weekly-digest/weekly")
            run = api.create_flow_run_from_deployment(deployment.id, parameters={"week": WEEK})
            _until(lambda: _lines(record) >= 12, 180, "the run never reached the provider")
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()
            killed = time.monotonic()
            state = api.read_flow_run(run.id).state
            assert state is not None and state.is_running()  # nobody left to say otherwise

            def crashed() -> bool:
                now = api.read_flow_run(run.id).state
                assert now is not None and (now.is_crashed() or not now.is_final()), now
                return now.is_crashed()

            _until(crashed, CRASHED_WITHIN, "the dead run was not marked Crashed")
            took = time.monotonic() - killed
            assert took < CRASHED_WITHIN
            crash = api.read_flow_run(run.id).state
            assert crash is not None and f"No heartbeat for {SILENCE_SECONDS} s" in crash.message  # type: ignore[operator]
            _retry_to_the_end(tmp_path, env, api, run.id)
        finally:
            _delete_deployment(env)
    _everyone_once(tmp_path, env, record)


def test_a_sigkilled_worker_leaves_no_flow_run_process_sending(
    tmp_path: Path, prefect_server: PrefectServer, api: SyncPrefectClient
) -> None:
    # The work pool's way: the worker starts the flow run in a child process; a SIGKILL of the
    # worker stops that child's sending within 5 s, and it leaves.
    record = tmp_path / "accepted.jsonl"
    project = tmp_path / "project"
    for folder in ("flows", "deployments"):
        shutil.copytree(ROOT / folder, project / folder)
    with FakeSendGridProcess(API_KEY, record, delay=0.25) as fake:
        env = _env(tmp_path, fake, prefect_server)
        deploy_env = {**env, "DIGEST_PROJECT_DIR": str(project), "DIGEST_SCHEDULE_TIMEZONE": "UTC"}
        for command in (
            ["work-pool", "create", "digest-pool", "--type", "process", "--overwrite"],
            ["--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml", "--all"],
        ):
            done = subprocess.run(
                [PREFECT, *command],
                cwd=project,
                env={**os.environ, **deploy_env},
                capture_output=True,
                text=True,
                timeout=180,
                check=False,
            )
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        log = tmp_path / "worker.log"
        worker = _start([PREFECT, "worker", "start", "--pool", "digest-pool"], tmp_path, env, log)
        try:
            deployment = api.read_deployment_by_name("weekly-digest/weekly")
            api.create_flow_run_from_deployment(deployment.id, parameters={"week": WEEK})
            at_kill = _kill_mid_send(worker, record, log)
            _assert_nothing_left_sending(worker.pid, record, at_kill)
        finally:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
            _delete_deployment(env)
