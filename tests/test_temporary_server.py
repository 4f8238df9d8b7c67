"""`digest run` with no Prefect server configured: the temporary server it starts never outlives
it, and a week with nothing left to send needs no server at all."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.fakes.fake_sendgrid import FakeSendGrid
from tests.support.cli import DIGEST, run_digest
from tests.support.factories import write_catalog, write_subscribers
from tests.support.scenario import WEEK, week_tools

pytestmark = pytest.mark.slow
API_KEY = "SG.temporary-server-key"
STARTING = "Starting a temporary Prefect server"


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "PREFECT_API"))}
    env.update(
        {
            "PREFECT_HOME": str(tmp_path / "prefect-home"),
            "DIGEST_DATABASE_URL": f"sqlite:///{tmp_path / 'digest.db'}",
            **extra,
        }
    )
    assert (
        run_digest(
            "catalog",
            "import",
            str(write_catalog(tmp_path / "c.json", week_tools())),
            cwd=tmp_path,
            env=env,
        ).returncode
        == 0
    )
    people = [{"email": f"reader{i}@example.com"} for i in range(30)]
    subscribers = write_subscribers(tmp_path / "people.csv", people)
    assert (
        run_digest("subscribers", "import", str(subscribers), cwd=tmp_path, env=env).returncode == 0
    )
    return env


def _wait_for_server_child(run: subprocess.Popen[str]) -> int:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and run.poll() is None:
        for child in _children(run.pid):
            if b"server" in Path(f"/proc/{child}/cmdline").read_bytes():
                return child
        time.sleep(0.1)
    raise AssertionError("digest run never started its temporary Prefect server")


def test_sigkilled_run_leaves_no_prefect_server_behind(tmp_path: Path) -> None:
    # A run killed with SIGKILL mid-send must not leave its temporary server running, orphaned.
    with FakeSendGrid(api_key=API_KEY) as fake:
        fake.set_delay(0.5)
        env = _env(
            tmp_path,
            DIGEST_EMAIL_BACKEND="sendgrid",
            SENDGRID_API_KEY=API_KEY,
            DIGEST_SENDGRID_HOST=fake.url,
            DIGEST_BATCH_SIZE="5",
        )
        run = subprocess.Popen(
            [DIGEST, "run", "--week", WEEK],
            cwd=tmp_path,
            env=env,
            text=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = _wait_for_server_child(run)
        try:
            deadline = time.monotonic() + 120
            while not fake.requests and time.monotonic() < deadline and run.poll() is None:
                time.sleep(0.05)
            assert fake.requests, "the run never reached the provider"
            run.send_signal(signal.SIGKILL)  # the run alone, as the OOM killer or `kill -9` does
            run.wait()
            deadline = time.monotonic() + 30
            while _alive(server) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not _alive(server), "the temporary Prefect server outlived its run"
        finally:
            if _alive(server):
                os.kill(server, signal.SIGKILL)


def test_a_week_already_sent_is_answered_without_a_prefect_server(tmp_path: Path) -> None:
    # Nothing left to send: the rerun reads the ledger and starts no server (20 s saved).
    env = _env(tmp_path)
    first = run_digest("run", "--week", WEEK, cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert STARTING in first.stderr
    again = run_digest("run", "--week", WEEK, cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert STARTING not in again.stderr
    assert f"{WEEK} was already sent: nothing left to send." in again.stdout
    assert "sent 30" in again.stdout
