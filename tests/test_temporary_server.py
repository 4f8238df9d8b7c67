"""`digest run` with no Prefect server configured: the temporary server it starts never outlives
it, a SIGKILL of the run stops its sending, and a run that would refuse or do nothing (a week
already sent, without new tools, recalled, a refreeze of a sent week) needs no server at all."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.fakes.fake_sendgrid import FakeSendGrid
from tests.support.cli import DIGEST, run_digest, run_digest_process
from tests.support.factories import write_catalog, write_subscribers
from tests.support.prefect_server import seed_prefect_home
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


def _sigint_as_in_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _env(tmp_path: Path, migrated_prefect_db: Path | None = None, **extra: str) -> dict[str, str]:
    """A working folder with the week's catalog and 30 readers. With `migrated_prefect_db`, the
    Prefect home is one that has started before (its start 6 s of CPU shorter); without, it is
    a new machine's."""
    home = tmp_path / "prefect-home"
    if migrated_prefect_db is not None:
        seed_prefect_home(home, migrated_prefect_db)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "PREFECT_API"))}
    env.update(
        {
            "PREFECT_HOME": str(home),
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


def test_sigkilled_run_leaves_no_prefect_server_behind(
    tmp_path: Path, migrated_prefect_db: Path
) -> None:
    # A run killed with SIGKILL mid-send must not leave its temporary server running, orphaned.
    with FakeSendGrid(api_key=API_KEY) as fake:
        fake.set_delay(0.5)
        env = _env(
            tmp_path,
            migrated_prefect_db,
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
            # Its senders were threads of the run: nothing sends after it.
            time.sleep(1)
            after = len(fake.requests)
            time.sleep(2)
            assert len(fake.requests) == after, "something still sends for the killed run"
            deadline = time.monotonic() + 30
            while _alive(server) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not _alive(server), "the temporary Prefect server outlived its run"
        finally:
            if _alive(server):
                os.kill(server, signal.SIGKILL)


def test_a_week_already_sent_is_answered_without_a_prefect_server(tmp_path: Path) -> None:
    # Nothing left to send: the rerun reads the ledger and starts no server (20 s saved). The
    # first run is a new machine's: its temporary server migrates a new Prefect database.
    env = _env(tmp_path)
    first = run_digest_process("run", "--week", WEEK, cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert STARTING in first.stderr
    again = run_digest_process("run", "--week", WEEK, cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert STARTING not in again.stderr
    assert f"{WEEK} was already sent: nothing left to send." in again.stdout
    assert "sent 30" in again.stdout


def test_runs_that_refuse_or_have_nothing_to_do_start_no_server(tmp_path: Path) -> None:
    # Each answer comes from the database at once, as the flow would give it: a week without
    # new tools (and its dry run), a recalled week, a refreeze of a week that reached people.
    from sqlalchemy import create_engine

    from digest.delivery.ledger import mark_recalled

    env = _env(tmp_path)
    quiet = "2026-W30"
    for args in (["--week", quiet], ["--week", quiet, "--dry-run"]):
        started = time.monotonic()
        empty = run_digest_process("run", *args, cwd=tmp_path, env=env)
        assert empty.returncode == 0, empty.stderr[-3000:]
        assert f"No new tools in {quiet}: nothing to send." in empty.stdout
        assert STARTING not in empty.stderr and time.monotonic() - started < 15

    # A week that reached people, sent in process on the session's server (its own server is
    # test_a_week_already_sent's subject).
    first = run_digest("run", "--week", WEEK, cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    refrozen = run_digest_process("run", "--week", WEEK, "--refreeze", cwd=tmp_path, env=env)
    assert refrozen.returncode == 2 and "cannot be recomposed" in refrozen.stderr
    assert STARTING not in refrozen.stderr and "Traceback" not in refrozen.stderr

    engine = create_engine(env["DIGEST_DATABASE_URL"])
    with engine.begin() as connection:
        mark_recalled(connection, week="2026-W48", stopped=0, on_their_way=0)
    engine.dispose()
    recalled = run_digest_process("run", "--week", "2026-W48", cwd=tmp_path, env=env)
    assert recalled.returncode == 2 and "was recalled" in recalled.stderr, recalled.stderr
    assert STARTING not in recalled.stderr and "Traceback" not in recalled.stderr


def test_ctrl_c_stops_the_sending_and_says_to_run_again(
    tmp_path: Path, migrated_prefect_db: Path
) -> None:
    # Ctrl-C mid-send: the senders stop after their request in flight, the command exits 130
    # with the way on (run again: nobody twice), and a rerun sends the rest exactly once.
    with FakeSendGrid(api_key=API_KEY) as fake:
        # Each answer takes 2 s: the interrupt lands mid-send even on a loaded machine.
        fake.set_delay(2.0)
        env = _env(
            tmp_path,
            migrated_prefect_db,
            DIGEST_EMAIL_BACKEND="sendgrid",
            SENDGRID_API_KEY=API_KEY,
            DIGEST_SENDGRID_HOST=fake.url,
            DIGEST_BATCH_SIZE="1",
        )
        run = subprocess.Popen(
            [DIGEST, "run", "--week", WEEK],
            cwd=tmp_path,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # As from a terminal: a suite started in the background (`cmd &`) passes SIGINT
            # on ignored, and Python then never turns it into KeyboardInterrupt.
            preexec_fn=_sigint_as_in_a_terminal,
        )
        deadline = time.monotonic() + 120
        while len(fake.requests) < 2 and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.05)
        run.send_signal(signal.SIGINT)
        _, err = run.communicate(timeout=120)
        stopped = len(fake.requests)
        time.sleep(2)
        assert len(fake.requests) == stopped, "the senders went on after Ctrl-C"
        assert run.returncode == 130, err[-3000:]
        assert f"run `digest run --week {WEEK}` again" in " ".join(err.split())
        # 30 requests of one reader, at most 16 in flight: it stopped before the last of them.
        assert stopped < 30
        fake.set_delay(0)
        # The rerun's own server is not what is checked here: in process, on the session's.
        again = run_digest("run", "--week", WEEK, cwd=tmp_path, env=env)
        assert again.returncode == 0, again.stderr[-3000:]
        delivered = [message.to for message in fake.delivered]
        assert sorted(delivered) == sorted(set(delivered)) and len(delivered) == 30


def test_a_run_failed_by_the_provider_ends_at_once_without_a_server_of_prefects_own(
    tmp_path: Path, migrated_prefect_db: Path
) -> None:
    # The send's threads log each lost answer through the run's logger: in the run's context, so
    # the lines reach the run's temporary server. Out of it, Prefect started an ephemeral server
    # of its own to deliver them and the command spent seconds (80 s on 20,000 readers) printing
    # connection errors after the run had ended.
    from tests.fakes.fake_sendgrid import Fault

    with FakeSendGrid(api_key=API_KEY) as fake:
        fake.always(Fault(status=503, message="outage"))
        env = _env(
            tmp_path,
            migrated_prefect_db,
            DIGEST_EMAIL_BACKEND="sendgrid",
            SENDGRID_API_KEY=API_KEY,
            DIGEST_SENDGRID_HOST=fake.url,
            DIGEST_BATCH_SIZE="2",
            PREFECT_LOGGING_LEVEL="INFO",  # as a shell has it: the request lines are logged
        )
        failed = run_digest_process("run", "--week", WEEK, cwd=tmp_path, env=env)
    assert failed.returncode == 1, failed.stderr[-3000:]
    assert "did not reach everyone" in failed.stderr
    assert "prefect - Starting temporary server" not in failed.stderr
    for noise in ("APILogWorker", "EventsWorker", "Logging error", "Traceback"):
        assert noise not in failed.stderr, failed.stderr[-3000:]
