"""Recipients built in a second process: the same as built here, and never needed.

The child is a real `python -m digest.delivery.building`; the send goes through the real
sendgrid client to the fake SendGrid.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from digest.config import get_settings
from digest.delivery import building, sending
from digest.delivery.building import BuildingProcess, RecipientBuilder, build_recipients
from digest.links import Links
from digest.send import get_backend
from digest.send.base import EncodedRecipients, OutgoingBatch, Recipient
from digest.send.sendgrid import SendGridBackend
from digest.send.sendgrid_request import encode_personalizations
from digest.tokens import Purpose, read_token
from tests.fakes.fake_sendgrid import FakeSendGrid
from tests.support.ledger_data import state_counts_of
from tests.support.send_path import begin_new_run, prepare_batched_week, send_plan_of
from tests.support.senders import sender_for
from tests.support.sendgrid_env import send_through

LINKS = Links(site_url="https://verdicts.example.com", key=b"k" * 32)
ROWS = [
    (1, 11, "ada@example.com", "Ada Lovelace"),
    (2, 12, "zoe@example.com", "Zoë O'Brien, PhD"),
    (3, 13, "noname@example.com", None),
    (4, 14, "li@example.com", "李小龙"),
    (5, 15, "esc@example.com", '<script>"x"</script>'),
]


def _wait_until(condition: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def child() -> Iterator[BuildingProcess]:
    process = BuildingProcess(LINKS)
    _wait_until(process.takes_more)
    yield process
    process.close()


def _no_building_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever is built from now on was built by the child."""

    def refuse(links: Links, rows: object) -> list[Recipient]:
        raise AssertionError("built in the sending process")

    monkeypatch.setattr(building, "build_recipients", refuse)


def test_the_child_builds_exactly_what_the_sending_process_would(
    child: BuildingProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = build_recipients(LINKS, ROWS)
    _no_building_here(monkeypatch)
    builder = RecipientBuilder(LINKS, child)
    handles = [builder.start(ROWS[:2]), builder.start(ROWS[2:])]
    assert handles[0]() + handles[1]() == expected
    assert read_token(LINKS.key, Purpose.VOTE, expected[1].substitutions["%%vote_token%%"]) == 2


def test_a_child_given_an_encoder_answers_the_backends_own_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    encode = partial(EncodedRecipients.encode, encode_personalizations, 7)
    expected = encode(build_recipients(LINKS, ROWS))
    process = BuildingProcess(LINKS, encode)
    try:
        _wait_until(process.takes_more)
        _no_building_here(monkeypatch)
        built = RecipientBuilder(LINKS, process).start(ROWS)()
    finally:
        process.close()
    assert built == expected
    assert isinstance(built, EncodedRecipients) and built.delivery_ids == [1, 2, 3, 4, 5]
    people = json.loads(built.data)
    assert [p["custom_args"]["delivery_id"] for p in people] == ["1", "2", "3", "4", "5"]
    assert {p["custom_args"]["digest_id"] for p in people} == {"7"}
    assert people[4]["to"] == [{"email": "esc@example.com", "name": '"<script>\\"x\\"</script>"'}]


def test_a_dead_child_means_building_here_said_once(
    child: BuildingProcess, caplog: pytest.LogCaptureFixture
) -> None:
    builder = RecipientBuilder(LINKS, child)
    child.kill("killed by the test")
    _wait_until(lambda: not child.takes_more())
    assert builder.start(ROWS)() == build_recipients(LINKS, ROWS)
    assert builder.start(ROWS)() == build_recipients(LINKS, ROWS)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned == ["recipients are built in the sending process from now on: killed by the test"]


def test_a_send_that_ends_closes_the_child_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    process = BuildingProcess(LINKS)
    _wait_until(process.takes_more)
    process.close()
    with pytest.raises(ProcessLookupError):
        os.kill(process.pid, 0)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_a_child_that_stops_answering_is_killed_and_its_request_built_here(
    child: BuildingProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(building, "_ANSWER_TIMEOUT_SECONDS", 0.5)
    os.kill(child.pid, signal.SIGSTOP)
    builder = RecipientBuilder(LINKS, child)
    handle = builder.start(ROWS)
    assert handle() == build_recipients(LINKS, ROWS)
    assert not child.takes_more()
    with pytest.raises(ProcessLookupError):
        os.kill(child.pid, 0)


def test_an_answer_for_other_rows_is_never_used(
    child: BuildingProcess, caplog: pytest.LogCaptureFixture
) -> None:
    # A request written with no future waiting for it shifts every later answer by one: the
    # next request gets recipients of other rows, which must not go out for it.
    builder = RecipientBuilder(LINKS, child)
    os.kill(child.pid, signal.SIGSTOP)  # all three written before the child answers one
    first = builder.start(ROWS[:2])
    child._write([tuple(ROWS[4])])  # the stray request
    second = builder.start(ROWS[2:4])
    os.kill(child.pid, signal.SIGCONT)
    started = time.monotonic()
    assert first() == build_recipients(LINKS, ROWS[:2])
    assert second() == build_recipients(LINKS, ROWS[2:4])
    assert time.monotonic() - started < 10  # told at once, not after the answer timeout
    assert not child.takes_more()
    assert "answered for other rows" in caplog.text


def test_the_child_leaves_when_its_parent_is_killed(tmp_path: Path) -> None:
    parent = textwrap.dedent(
        """
        import os, signal, time
        from digest.delivery.building import BuildingProcess
        from digest.links import Links
        child = BuildingProcess(Links(site_url="https://x.example", key=b"k" * 32))
        while not child.takes_more():
            time.sleep(0.02)
        print(child.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    ran = subprocess.run(
        [sys.executable, "-c", parent], capture_output=True, text=True, timeout=60, check=False
    )
    assert ran.returncode == -signal.SIGKILL
    pid = int(ran.stdout.strip())

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie is gone too: it waits only for init to reap it.
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"

    _wait_until(gone, seconds=10)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSendGrid]:
    server = FakeSendGrid(api_key="SG.building-test").start()
    send_through(monkeypatch, server)
    yield server
    server.stop()


def test_a_send_starts_the_child_from_its_threshold_of_pending_rows() -> None:
    with RecipientBuilder.for_send(LINKS, pending=9, from_rows=10) as small:
        assert small._process is None
    with RecipientBuilder.for_send(LINKS, pending=10, from_rows=None) as never:
        assert never._process is None
    with RecipientBuilder.for_send(LINKS, pending=10, from_rows=10) as large:
        assert large._process is not None


def test_a_send_built_in_the_child_sends_every_reader_once(
    fake: FakeSendGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, digest_id = prepare_batched_week(get_settings(), tmp_path, batch_size=100, extra=994)
    owner = begin_new_run(settings, digest_id)
    # Every request through the child, built and encoded there, none built here (the child is
    # ready before the send).
    monkeypatch.setattr(building, "_MAX_QUEUED", 10**6)

    def ready_child(cls: type[RecipientBuilder], links: Links, **given: Any) -> RecipientBuilder:
        child = BuildingProcess(links, given["encode"])
        _wait_until(child.takes_more)
        return cls(links, child)

    monkeypatch.setattr(RecipientBuilder, "for_send", classmethod(ready_child))
    _no_building_here(monkeypatch)
    posted: list[OutgoingBatch] = []
    send_batch = SendGridBackend.send_batch
    monkeypatch.setattr(
        SendGridBackend, "send_batch", lambda self, b: posted.append(b) or send_batch(self, b)
    )
    with get_backend(settings) as backend:
        sender = replace(sender_for(settings, backend), build_process_from_rows=0)
        plan = send_plan_of(settings, digest_id, owner)
        report = sending.send(sender, plan, stop=sending.RunStop())
    assert report.stop is None and sum(r.sent for r in report.requests) == 1000
    assert posted and all(b.encoded is not None and not b.recipients for b in posted)
    assert sum(r.with_unsubscribe_headers for r in report.requests) == 1000
    received = Counter(m.to for m in fake.accepted)
    assert len(received) == 1000 and set(received.values()) == {1}
    key = settings.signing_key()
    for message in fake.accepted:
        token = message.substitutions["%%unsubscribe_url%%"].rsplit("/", 1)[1]
        assert read_token(key, Purpose.UNSUBSCRIBE, token) > 0
        assert int(message.custom_args["delivery_id"]) == read_token(
            key, Purpose.VOTE, message.substitutions["%%vote_token%%"]
        )
    assert state_counts_of(settings, digest_id) == {"sent": 1000}


def test_without_an_interpreter_to_start_the_send_builds_here(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sys, "executable", "/nonexistent/python3")
    with RecipientBuilder.for_send(LINKS, pending=10, from_rows=10) as builder:
        assert builder._process is None
        assert builder.start(ROWS)() == build_recipients(LINKS, ROWS)
    assert "built in the sending process" in caplog.text
