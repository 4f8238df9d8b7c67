"""Crash safety: `digest run` killed with SIGKILL at any point, then rerun. With a lead time
(requests held by SendGrid until `send_at`), plain reruns deliver every planned subscriber
exactly once by the fake's own record; sending at once (lead 0), a rerun mails nobody twice and
skips nobody but the rows it reports `uncertain`, and `--resend-uncertain` then misses nobody.
The list has a real list's shape: 64 content variants."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from digest.models import Delivery
from tests.fakes.fake_sendgrid import FakeSendGrid, delivered_record, read_record
from tests.support import list_shape
from tests.support.cli import DIGEST, run_digest
from tests.support.factories import write_catalog, write_subscribers
from tests.support.list_shape import WEEK
from tests.support.prefect_server import PrefectServer

pytestmark = pytest.mark.slow
SUBSCRIBERS = 300
API_KEY = "SG.kill-test-key"


def _seeded_env(
    tmp_path: Path, fake: FakeSendGrid, server: PrefectServer, *, lead: str = "0"
) -> dict[str, str]:
    env = {
        "DIGEST_SEND_LEAD_SECONDS": lead,
        "DIGEST_DATABASE_URL": f"sqlite:///{tmp_path / 'digest.db'}",
        "DIGEST_SECRET_KEY": os.environ["DIGEST_SECRET_KEY"],
        "DIGEST_EMAIL_BACKEND": "sendgrid",
        "SENDGRID_API_KEY": API_KEY,
        "DIGEST_SENDGRID_HOST": fake.url,
        "DIGEST_BATCH_SIZE": "10",
        "DIGEST_LEASE_SECONDS": "600",
        **server.env(),
    }
    catalog = write_catalog(tmp_path / "catalog.json", list_shape.week_tools())
    people = write_subscribers(tmp_path / "people.csv", list_shape.list_rows(SUBSCRIBERS))
    assert run_digest("catalog", "import", str(catalog), cwd=tmp_path, env=env).returncode == 0
    assert run_digest("subscribers", "import", str(people), cwd=tmp_path, env=env).returncode == 0
    return env


def _count(tmp_path: Path, *states: str) -> int:
    engine = create_engine(f"sqlite:///{tmp_path / 'digest.db'}")
    with engine.connect() as connection:
        query = select(func.count()).select_from(Delivery)
        if states:
            query = query.where(Delivery.state.in_(states))  # type: ignore[attr-defined]
        try:
            return int(connection.execute(query).scalar_one())
        except Exception:
            return 0
        finally:
            engine.dispose()


def _run_and_kill(tmp_path: Path, env: dict[str, str], ready: Callable[[], bool]) -> None:
    process = subprocess.Popen(
        [DIGEST, "run", "--week", WEEK],
        cwd=tmp_path,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    # A random point may come after the run ended by itself: then there is nothing to kill.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _kill_points(fake: FakeSendGrid, tmp_path: Path) -> dict[str, Callable[[], bool]]:
    wait_until = time.monotonic() + random.uniform(0.5, 6.0)
    return {
        # Planned, nothing sent: the rerun must send everyone, once.
        "before-first-batch": lambda: _count(tmp_path) >= SUBSCRIBERS,
        # The provider holds a request it has accepted: those rows are the `uncertain` ones.
        "mid-batch": lambda: len(fake.accepted) > 0 and _count(tmp_path, "sent") == 0,
        # Some batches recorded as sent, others not yet claimed.
        "between-batches": lambda: _count(tmp_path, "sent") >= 100,
        "random": lambda: time.monotonic() > wait_until,
    }


@pytest.mark.parametrize("point", ["before-first-batch", "mid-batch", "between-batches", "random"])
def test_sigkill_then_rerun_mails_nobody_twice_and_skips_only_the_uncertain(
    point: str, tmp_path: Path, prefect_server: PrefectServer
) -> None:
    # Whatever the moment of a crash, a rerun sends each planned subscriber at most once, and only
    # rows reported `uncertain` may be missing until they are resent on purpose.
    record = tmp_path / "accepted.jsonl"
    with FakeSendGrid(api_key=API_KEY, record_path=record) as fake:
        fake.set_delay(0.4)
        env = _seeded_env(tmp_path, fake, prefect_server)
        _run_and_kill(tmp_path, env, _kill_points(fake, tmp_path)[point])
        reached_provider = len(fake.requests) > 0 or _count(tmp_path, "sending") > 0
        fake.set_delay(0.0)
        rerun = run_digest("run", "--week", WEEK, cwd=tmp_path, env=env)
        status = json.loads(
            run_digest("status", "--week", WEEK, "--json", cwd=tmp_path, env=env).stdout
        )
        counts = status["counts"]
        # A rerun that leaves rows uncertain ends non-zero and names the command that resolves them.
        if counts.get("uncertain"):
            assert rerun.returncode != 0 and "--resend-uncertain" in rerun.stderr
        else:
            assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert status["total"] == SUBSCRIBERS
        assert set(counts) <= {"sent", "uncertain"}
        received = Counter(entry["to"] for entry in read_record(record))
        assert all(n == 1 for n in received.values()), received.most_common(3)
        # Everyone not uncertain got it; uncertain ones may or may not have.
        assert len(received) >= counts.get("sent", 0)
        assert len(received) <= SUBSCRIBERS
        missing = SUBSCRIBERS - len(received)
        assert missing <= counts.get("uncertain", 0)
        if not reached_provider:
            # Killed before any batch was claimed: nothing can be uncertain.
            assert counts == {"sent": SUBSCRIBERS}

        resend = run_digest("run", "--week", WEEK, "--resend-uncertain", cwd=tmp_path, env=env)
        assert resend.returncode == 0, resend.stderr[-3000:]
        received = Counter(entry["to"] for entry in read_record(record))
        assert len(received) == SUBSCRIBERS
        final = json.loads(
            run_digest("status", "--week", WEEK, "--json", cwd=tmp_path, env=env).stdout
        )
        assert final["counts"] == {"sent": SUBSCRIBERS}


@pytest.mark.parametrize("point", ["before-first-batch", "mid-batch", "between-batches", "random"])
def test_sigkill_then_plain_reruns_deliver_everyone_exactly_once(
    point: str, tmp_path: Path, prefect_server: PrefectServer
) -> None:
    # Requests held 900 s: whatever the moment of the crash, plain reruns cancel the batches the
    # dead run left in flight and send those rows again. Counting a cancelled batch as not
    # delivered, every planned subscriber gets the digest once, and nothing is left uncertain.
    record = tmp_path / "accepted.jsonl"
    with FakeSendGrid(api_key=API_KEY, record_path=record) as fake:
        fake.set_delay(0.4)
        env = _seeded_env(tmp_path, fake, prefect_server, lead="900")
        _run_and_kill(tmp_path, env, _kill_points(fake, tmp_path)[point])
        if point == "random":  # the recovering run is killed too, while it sends again
            _run_and_kill(tmp_path, env, _kill_points(fake, tmp_path)["random"])
        fake.set_delay(0.0)
        reruns = [run_digest("run", "--week", WEEK, cwd=tmp_path, env=env)]
        if reruns[-1].returncode != 0:  # a kill before planning ended leaves a second step
            reruns.append(run_digest("run", "--week", WEEK, cwd=tmp_path, env=env))
        assert reruns[-1].returncode == 0, reruns[-1].stderr[-3000:]
        status = json.loads(
            run_digest("status", "--week", WEEK, "--json", cwd=tmp_path, env=env).stdout
        )
        assert status["counts"] == {"sent": SUBSCRIBERS}
        delivered = Counter(entry["to"] for entry in delivered_record(record))
        assert delivered == Counter({f"reader{i}@example.com": 1 for i in range(SUBSCRIBERS)})
        assert all("--resend-uncertain" not in rerun.stderr for rerun in reruns)
        if point == "mid-batch":  # SendGrid held an accepted request: the rerun cancelled it
            assert "cancel" in fake.statuses.values()
            assert len(read_record(record)) > SUBSCRIBERS


def test_two_runs_at_once_never_double_send(tmp_path: Path, prefect_server: PrefectServer) -> None:
    # The second concurrent run for a week waits or refuses; nobody gets two copies.
    record = tmp_path / "accepted.jsonl"
    with FakeSendGrid(api_key=API_KEY, record_path=record) as fake:
        fake.set_delay(0.3)
        env = _seeded_env(tmp_path, fake, prefect_server)
        full_env = {**os.environ, **env}
        runs = [
            subprocess.Popen(
                [DIGEST, "run", "--week", WEEK],
                cwd=tmp_path,
                env=full_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        first, second = runs
        outputs = [p.communicate(timeout=300) for p in (first, second)]
        codes = [first.returncode, second.returncode]
        received = Counter(entry["to"] for entry in read_record(record))
        assert len(received) == SUBSCRIBERS and set(received.values()) == {1}
        refused = [out for code, out in zip(codes, outputs, strict=True) if code != 0]
        for _, stderr in refused:
            assert "Another run is sending" in stderr or "lost the digest's lease" in stderr
            assert "Traceback" not in stderr
