"""Ctrl-C during a send: the first stops the senders and lets the code under way finish its
step (a claim cut between its statement and its fetch left SQLite unable to commit), the
second interrupts at once. Real signals, sent to this process."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from flows.lifeline import INTERRUPTED, stop_with_the_process


@pytest.fixture(autouse=True)
def sigint_as_in_a_terminal() -> Iterator[None]:
    # Python's own handler, as a process started from a terminal has it; pytest-xdist's workers
    # start with SIGINT ignored.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)
    # The handler runs between bytecodes of the main thread: give it a few.
    for _ in range(100):
        time.sleep(0.001)


def test_the_first_ctrl_c_stops_the_senders_and_is_raised_when_the_block_ends() -> None:
    reasons: list[str] = []
    stopped = threading.Event()

    def stop(reason: str) -> None:
        reasons.append(reason)
        stopped.set()

    finished_step = False
    with pytest.raises(KeyboardInterrupt), stop_with_the_process(stop):
        _ctrl_c()
        assert stopped.wait(5), "the stop was not called after Ctrl-C"
        finished_step = True
    assert finished_step, "the interrupt cut the step under way short"
    assert reasons[0] == INTERRUPTED
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_ctrl_c_interrupts_at_once() -> None:
    reached = []
    with pytest.raises(KeyboardInterrupt), stop_with_the_process(lambda reason: None):
        _ctrl_c()
        _ctrl_c()
        reached.append("after the second")
    assert reached == []


def test_a_block_without_ctrl_c_leaves_the_handler_as_it_was() -> None:
    with stop_with_the_process(lambda reason: None):
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_sigint_stays_ignored() -> None:
    # `nohup` and `cmd &` start processes with SIGINT ignored; a send there is not stopped by it.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        called: list[str] = []
        with stop_with_the_process(called.append):
            _ctrl_c()
        assert called == []
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
