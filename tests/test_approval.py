"""Approval before sending, against a real `prefect server start`: a run pauses with its form and
artifact, sends only once approved through the API, ends Cancelled on a no and Failed on
silence, and waits again when the content changes after an approval."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.flow_runs import resume_flow_run
from prefect.settings import PREFECT_API_URL, temporary_settings

from digest.db import ensure_schema
from digest.run import approval
from digest.weeks import utcnow
from tests.support.cli import DIGEST, run_digest
from tests.support.factories import write_catalog, write_subscribers
from tests.support.prefect_server import (
    PrefectServer,
    delete_deployments,
    wait_for_deployment,
)
from tests.support.scenario import WEEK, week_tools

pytestmark = pytest.mark.slow


def _env(tmp_path: Path, server: PrefectServer | None, **extra: str) -> dict[str, str]:
    """An approver's shell; without a server, runs pause under their own in-process API."""
    return {
        "DIGEST_DATABASE_URL": f"sqlite:///{tmp_path / 'digest.db'}",
        "DIGEST_SECRET_KEY": os.environ["DIGEST_SECRET_KEY"],
        "DIGEST_OUTBOX_DIR": str(tmp_path / "outbox"),
        "DIGEST_APPROVAL": "required",
        **(server.env() if server is not None else {}),
        **extra,
    }


def _seed(tmp_path: Path, env: dict[str, str]) -> None:
    catalog = write_catalog(tmp_path / "catalog.json", week_tools())
    people = write_subscribers(
        tmp_path / "people.csv",
        [{"email": "ada@example.com"}, {"email": "w@example.com", "categories": "Writing"}],
    )
    assert run_digest("catalog", "import", str(catalog), cwd=tmp_path, env=env).returncode == 0
    assert run_digest("subscribers", "import", str(people), cwd=tmp_path, env=env).returncode == 0


def _start_run(tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [DIGEST, "run", "--week", WEEK],
        cwd=tmp_path,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _waiting(env: dict[str, str], run: subprocess.Popen[str], *, after: str | None = None) -> str:
    """The id of the flow run once it waits (a new waiting row, other than `after`'s hash)."""
    engine = ensure_schema(env["DIGEST_DATABASE_URL"])
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert run.poll() is None, run.communicate()
        found = approval.waiting_run(engine, week=WEEK, now=utcnow(), timeout_minutes=60)
        if found is not None and found.content_hash != after:
            return found.flow_run_id
        time.sleep(0.5)
    pytest.fail("the run never waited for approval")


def _paused(server: PrefectServer, flow_run_id: str) -> Any:
    with (
        temporary_settings(updates={PREFECT_API_URL: server.api_url}),
        get_client(sync_client=True) as client,
    ):
        deadline = time.monotonic() + 60
        while True:
            run = client.read_flow_run(flow_run_id)  # type: ignore[arg-type]
            if run.state is not None and run.state.is_paused():
                return run
            assert time.monotonic() < deadline, f"run is {run.state}"
            time.sleep(0.5)


def _finish(run: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = run.communicate(timeout=240)
    return run.returncode, out, err


def _final_state(server: PrefectServer, flow_run_id: str) -> Any:
    with (
        temporary_settings(updates={PREFECT_API_URL: server.api_url}),
        get_client(sync_client=True) as client,
    ):
        return client.read_flow_run(flow_run_id).state  # type: ignore[arg-type]


def _artifact(server: PrefectServer, key: str) -> str:
    with (
        temporary_settings(updates={PREFECT_API_URL: server.api_url}),
        get_client(sync_client=True) as client,
    ):
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    assert found, f"no artifact {key}"
    return str(max(found, key=lambda artifact: artifact.created).data)  # type: ignore[arg-type, return-value]


def _sent(tmp_path: Path) -> int:
    return len(list((tmp_path / "outbox" / WEEK).glob("*.eml")))


def _resume(server: PrefectServer, flow_run_id: str, answer: dict[str, str]) -> None:
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        resume_flow_run(flow_run_id, run_input=answer)  # type: ignore[arg-type]


def test_a_run_waits_with_its_form_and_an_approval_through_the_api_sends_it(
    tmp_path: Path, prefect_server: PrefectServer
) -> None:
    # Nothing goes before the yes; the form is on the paused run; the yes sends and is recorded.
    env = _env(tmp_path, prefect_server)
    _seed(tmp_path, env)
    note = run_digest("edit", "--week", WEEK, "--intro", "Hand-picked.", cwd=tmp_path, env=env)
    assert note.returncode == 0, note.stderr
    run = _start_run(tmp_path, env)
    flow_run_id = _waiting(env, run)
    paused = _paused(prefect_server, flow_run_id)
    assert paused.state.state_details.run_input_keyset, "the paused run shows no form"
    assert _sent(tmp_path) == 0
    edits = run_digest("edit", "--week", WEEK, "--show", cwd=tmp_path, env=env)
    assert '"frozen": false' in edits.stdout  # nothing froze while it waits
    # `digest status` tells ops the run waits, and how to answer it.
    waits = run_digest("status", "--week", WEEK, cwd=tmp_path, env=env)
    assert "waited for approval since" in waits.stdout, waits.stdout
    assert f"`digest approve --week {WEEK}`" in waits.stdout
    preview = _artifact(prefect_server, f"approval-{WEEK.lower()}")
    for fragment in ("Waiting for approval", "Subject:", "Editor's note: Hand-picked.",
                     "| 1 |", "Recipients by variant", "| every category | 1 | yes |",
                     "| writing | 1 | yes |", f"digest preview --week {WEEK} --serve"):  # fmt: skip
        assert fragment in preview, preview

    _resume(prefect_server, flow_run_id, {"decision": "approve", "note": "Ship it", "by": "Ada"})
    code, out, err = _finish(run)
    assert code == 0, err
    assert _sent(tmp_path) == 2
    assert "Approved by Ada" in out
    assert _final_state(prefect_server, flow_run_id).is_completed()
    assert "Approved by Ada" in _artifact(prefect_server, f"weekly-digest-{WEEK.lower()}")
    assert "Approved by Ada" in _artifact(prefect_server, f"approval-{WEEK.lower()}")
    refused = run_digest("edit", "--week", WEEK, "--intro", "Late", cwd=tmp_path, env=env)
    assert refused.returncode != 0 and "frozen" in refused.stderr
    assert "approval" not in run_digest("status", "--week", WEEK, cwd=tmp_path, env=env).stdout


def test_a_rejection_cancels_the_run_and_sends_nothing(
    tmp_path: Path, prefect_server: PrefectServer
) -> None:
    # A no ends the run Cancelled with the note; no mail, no frozen content.
    env = _env(tmp_path, prefect_server)
    _seed(tmp_path, env)
    run = _start_run(tmp_path, env)
    flow_run_id = _waiting(env, run)
    _paused(prefect_server, flow_run_id)
    _resume(prefect_server, flow_run_id, {"decision": "reject", "note": "Wrong lead", "by": "Bo"})
    code, _, err = _finish(run)
    assert code != 0 and "Traceback" not in err
    assert "rejected" in err and "Wrong lead" in err
    state = _final_state(prefect_server, flow_run_id)
    assert state.is_cancelled() and "Wrong lead" in (state.message or "")
    assert _sent(tmp_path) == 0
    status = run_digest("status", "--week", WEEK, "--json", cwd=tmp_path, env=env)
    assert '"total": 0' in status.stdout


def test_no_answer_within_the_timeout_fails_the_run_and_sends_nothing(
    tmp_path: Path, prefect_server: PrefectServer
) -> None:
    # Silence is not a yes: after DIGEST_APPROVAL_TIMEOUT_MINUTES the run is Failed, "not approved".
    env = _env(tmp_path, prefect_server, DIGEST_APPROVAL_TIMEOUT_MINUTES="1")
    _seed(tmp_path, env)
    run = _start_run(tmp_path, env)
    flow_run_id = _waiting(env, run)
    code, _, err = _finish(run)
    assert code != 0 and "not approved" in err and "Traceback" not in err
    state = _final_state(prefect_server, flow_run_id)
    assert state.is_failed() and "not approved" in (state.message or "")
    assert _sent(tmp_path) == 0


def test_an_edit_after_approval_makes_the_run_wait_and_approve_covers_the_content_now(
    tmp_path: Path, prefect_server: PrefectServer
) -> None:
    # An approval covers one exact content: an edit after it voids it, so the run waits. Edited
    # again while it waits, `digest approve` answers the content as it is now, says so, and the
    # run (resumed through the API) recomposes, finds that answer and sends without waiting.
    env = _env(tmp_path, prefect_server)
    _seed(tmp_path, env)
    given = run_digest("approve", "--week", WEEK, "--by", "Ada", cwd=tmp_path, env=env)
    assert given.returncode == 0 and "next run finds" in given.stdout, given.stderr
    edit = run_digest("edit", "--week", WEEK, "--subject", "Edited after", cwd=tmp_path, env=env)
    assert edit.returncode == 0 and "voids Ada's approval" in edit.stdout, edit.stderr
    run = _start_run(tmp_path, env)
    first = _waiting(env, run)  # the recorded approval no longer covers the content
    _paused(prefect_server, first)
    again = run_digest("edit", "--week", WEEK, "--intro", "One more thing", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    resumed = run_digest("approve", "--week", WEEK, "--by", "Bo", cwd=tmp_path, env=env)
    # Resumed through the API, or taken by the run's own look a moment before: said either way.
    told = " ".join(resumed.stdout.split())
    assert resumed.returncode == 0, resumed.stderr
    assert "resumes with it" in told or "found it first and resumed itself" in told, told
    assert "The content changed since the run published it" in " ".join(resumed.stdout.split())
    code, out, err = _finish(run)
    assert code == 0, err
    assert "Approved by Bo" in out and _sent(tmp_path) == 2
    message = next((tmp_path / "outbox" / WEEK).glob("*.eml")).read_text()
    assert "Edited after" in message and "One more thing" in message


def test_without_an_api_an_approval_after_an_edit_releases_the_run_for_the_content_now(
    tmp_path: Path,
) -> None:
    # The database path: the run waits on what it published; after an edit, `digest approve`
    # answers the current content and the waiting run, which recomposes and sends at once.
    env = _env(tmp_path, None)
    _seed(tmp_path, env)
    run = _start_run(tmp_path, env)
    flow_run_id = _waiting(env, run)
    edit = run_digest("edit", "--week", WEEK, "--intro", "Late note", cwd=tmp_path, env=env)
    assert edit.returncode == 0, edit.stderr
    given = run_digest("approve", "--week", WEEK, "--by", "Ada", cwd=tmp_path, env=env)
    assert given.returncode == 0, given.stderr
    assert f"recorded for flow run {flow_run_id}" in given.stdout, given.stdout
    assert "The content changed since the run published it" in " ".join(given.stdout.split())
    code, out, err = _finish(run)
    assert code == 0, err
    assert "Approved by Ada" in out and _sent(tmp_path) == 2
    message = next((tmp_path / "outbox" / WEEK).glob("*.eml")).read_text()
    assert "Late note" in message


def test_a_deployment_run_waits_in_the_ui_with_its_form_and_digest_approve_sends_it(
    tmp_path: Path, prefect_server: PrefectServer
) -> None:
    # The ops path: `digest serve`, a run from the deployment, the form on the paused run (the
    # schema the UI draws), and `digest approve` from a shell resuming it to send.
    import json
    import signal

    env = _env(tmp_path, prefect_server)
    _seed(tmp_path, env)
    serve = subprocess.Popen(
        [DIGEST, "serve"],
        cwd=tmp_path,
        env={**os.environ, **env},
        stdout=(tmp_path / "serve.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    engine = ensure_schema(env["DIGEST_DATABASE_URL"])
    try:
        with (
            temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}),
            get_client(sync_client=True) as client,
        ):
            deployment = wait_for_deployment(client, serve, tmp_path / "serve.log")
            created = client.create_flow_run_from_deployment(
                deployment.id, parameters={"week": WEEK}
            )
            deadline = time.monotonic() + 180
            while approval.waiting_run(engine, week=WEEK, now=utcnow(), timeout_minutes=60) is None:
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
                time.sleep(0.5)
            paused = _paused(prefect_server, str(created.id))
            keyset = paused.state.state_details.run_input_keyset
            schema = json.loads(client.read_flow_run_input(created.id, key=keyset["schema"]))
            decision = schema["properties"]["decision"]
            assert decision["enum"] == ["approve", "reject"]
            # No answer is chosen for the reviewer: one Submit must never send to everyone.
            assert "default" not in decision and "decision" in schema["required"]
            assert {"note", "by"} <= set(schema["properties"])
            for field in ("note", "by"):
                assert "report" in schema["properties"][field]["description"]
            assert _sent(tmp_path) == 0

            given = run_digest("approve", "--week", WEEK, "--note", "Fine", "--by", "Ada",
                               cwd=tmp_path, env=env)  # fmt: skip
            assert given.returncode == 0 and str(created.id) in given.stdout, given.stderr
            deadline = time.monotonic() + 120
            while not (run := client.read_flow_run(created.id)).state.is_final():  # type: ignore[union-attr]
                assert time.monotonic() < deadline, f"run still {run.state}"
                time.sleep(1)
            assert run.state is not None and run.state.is_completed()
        assert _sent(tmp_path) == 2
        assert "Approved by Ada at" in _artifact(prefect_server, f"weekly-digest-{WEEK.lower()}")
    finally:
        if serve.poll() is None:
            os.kill(serve.pid, signal.SIGTERM)
            serve.wait(timeout=30)
        delete_deployments(prefect_server.api_url, "weekly-digest/weekly")


def test_without_an_api_to_reach_the_answer_digest_approve_records_releases_the_run(
    tmp_path: Path,
) -> None:
    # `digest run` on a laptop pauses under its own in-process API, which no other shell can
    # reach: `digest approve` records the answer for the waiting run, which takes it and sends.
    env = _env(tmp_path, None)
    assert "PREFECT_API_URL" not in os.environ
    _seed(tmp_path, env)
    run = _start_run(tmp_path, env)
    flow_run_id = _waiting(env, run)
    given = run_digest("approve", "--week", WEEK, "--by", "Ada", cwd=tmp_path, env=env)
    assert given.returncode == 0, given.stderr
    assert f"recorded for flow run {flow_run_id}" in given.stdout, given.stdout
    code, out, err = _finish(run)
    assert code == 0, err
    assert "Approved by Ada" in out and _sent(tmp_path) == 2


def test_fifty_approvals_racing_the_paused_runs_own_look_all_say_approved_and_it_sends_once(
    tmp_path: Path, prefect_server: PrefectServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fifty `digest approve`s at once (47 through the command's code in threads, 3 as shells)
    # against a run that also looks for answers itself: one answer ends the wait and resumes it,
    # the run sends once, and every approver is told "approved" and what became of the answer.
    from concurrent.futures import ThreadPoolExecutor
    from contextvars import copy_context

    from digest.config import get_settings
    from digest.run.preparation import Edition
    from digest.weeks import IsoWeek
    from flows.cli import _resume_through_api, answer_sentence

    env = _env(tmp_path, prefect_server)
    _seed(tmp_path, env)
    run = _start_run(tmp_path, env)
    flow_run_id = _waiting(env, run)
    _paused(prefect_server, flow_run_id)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    settings = get_settings()
    engine = ensure_schema(settings.database_url)

    def approve(i: int) -> str:
        asked = approval.Decision(WEEK, "", True, "", f"approver-{i}", utcnow())
        answer = approval.answer_now(
            engine,
            Edition.from_settings(settings),
            IsoWeek.parse(WEEK),
            decision=asked,
            timeout_minutes=60,
            resume=_resume_through_api,
        )
        return answer_sentence(answer)

    shells = [
        subprocess.Popen(
            [DIGEST, "approve", "--week", WEEK, "--by", f"shell-{i}"],
            cwd=tmp_path,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    with (
        temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}),
        ThreadPoolExecutor(max_workers=47) as pool,
    ):
        futures = [pool.submit(copy_context().run, approve, i) for i in range(47)]
        said = [future.result() for future in futures]
    for shell in shells:
        out, err = shell.communicate(timeout=120)
        assert shell.returncode == 0, err
        said.append(" ".join(out.split()))
    assert len(said) == 50
    assert all(" approved by " in line and line.startswith(WEEK) for line in said), said
    deciding = [line for line in said if "resumes with it" in line or "found it first" in line]
    assert len(deciding) == 1, said
    others = [line for line in said if "had already taken an answer" in line]
    assert len(others) == 49, said
    code, out, err = _finish(run)
    assert code == 0, err
    winner = deciding[0].split(" approved by ")[1].split(":")[0]
    assert f"Approved by {winner}" in out
    assert all(f"Approved by {winner}" in line for line in others)
    assert _sent(tmp_path) == 2
    assert _final_state(prefect_server, flow_run_id).is_completed()
