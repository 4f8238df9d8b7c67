"""A flow-run process dies with the process that started it (`digest serve`, or a worker).

Prefect's runner and workers start each deployment run in a child process of their own. When
the parent is killed outright (SIGKILL, the OOM killer) nobody stops that child: it would go on
sending, reparented, with no one to answer for it. `watch_parent` starts a daemon thread that
notices the parent is gone within a fraction of a second; the run's senders then stop after the
request in flight (`stop_with_the_process`), the run ends Failed with the reason if it gets there
within STOP_GRACE_SECONDS, and the process exits. What the lanes claimed and did not record
stays `sending` under its provider batch, for the next run to cancel and send again, or to
report uncertain: nothing is lost, nobody is mailed twice. A run that could not end by itself
shows Running until Prefect's zombie detection marks it Crashed (flows/crash_detection.py).

A run that `digest run` makes runs in that command's own process, so nothing of it can outlive
it; only runs started by a runner or a worker (deployment runs) are watched.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

_CHECK_SECONDS = 0.2
# How long the run gets to record the answer of the request in flight and end itself before the
# process leaves anyway: with the check and the last logs, inside the 5 s promised to ops.
STOP_GRACE_SECONDS = 3.0
# The exit status of a run whose parent died (EX_SOFTWARE would say "our bug"; this is not).
ORPHANED_EXIT = 75

_lock = threading.Lock()
_stops: dict[int, Callable[[str], None]] = {}
_watching: int | None = None  # the parent pid watched, once started
_orphaned: str | None = None  # why the run stops, once the parent is gone


def _original_parent() -> int:
    """The pid that started us: multiprocessing's record of it (a runner's `spawn` child knows it
    even if the parent died before this line), else our parent now."""
    parent = multiprocessing.parent_process()
    return parent.pid if parent is not None and parent.pid is not None else os.getppid()


def watch_parent(say: Callable[[str], None] | None = None) -> None:
    """Leave when the parent dies: stop the senders, give them STOP_GRACE_SECONDS, then exit.

    Idempotent: a process watches one parent, whatever number of times this is called.
    """
    global _watching
    with _lock:
        if _watching is not None:
            return
        _watching = _original_parent()
    thread = threading.Thread(
        target=_watch, args=(_watching, say or log.warning), name="lifeline", daemon=True
    )
    thread.start()


def _watch(parent: int, say: Callable[[str], None]) -> None:
    global _orphaned
    while os.getppid() == parent:
        time.sleep(_CHECK_SECONDS)
    reason = (
        f"The process that started this flow run (pid {parent}: `digest serve` or the worker) "
        "is gone, so the run stopped sending after the request in flight. Start `digest serve` "
        "or the worker again, then press Retry on this flow run: it sends what is left, nobody "
        "twice."
    )
    try:
        # The senders stop first: saying so may fail, since our output went to the dead parent
        # (Prefect's console then raises SystemExit in whichever thread logs next).
        with _lock:
            _orphaned = reason
            stops = list(_stops.values())
        for stop in stops:
            stop(reason)
        _quietly(say, reason)
        # The run usually ends by itself meanwhile (Failed, with the reason), and this process
        # with it; whatever still runs then (a pause, a long step) is left here.
        time.sleep(STOP_GRACE_SECONDS)
        _quietly(_flush_logs)
    finally:
        os._exit(ORPHANED_EXIT)


def _quietly(call: Callable[..., None], *args: str) -> None:
    """Best effort, even against SystemExit: leaving is what matters now."""
    with contextlib.suppress(BaseException):
        call(*args)


def _flush_logs() -> None:
    """Hand the run's last lines to the Prefect API if it still answers (half a second at most)."""
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=0.5)


@contextmanager
def stop_with_the_process(stop: Callable[[str], None]) -> Iterator[None]:
    """While the block runs, `stop(reason)` is called when the process goes away: its parent
    died (at once, if it already had), or an exception leaves the block (Ctrl-C, Prefect ending
    the run). Senders are threads, which would otherwise go on sending until they are done."""
    key = id(stop)
    with _lock:
        _stops[key] = stop
        orphaned = _orphaned
    if orphaned is not None:
        stop(orphaned)
    try:
        with _first_ctrl_c_stops(stop):
            yield
    except BaseException:
        stop(INTERRUPTED)
        raise
    finally:
        with _lock:
            _stops.pop(key, None)


@contextmanager
def _first_ctrl_c_stops(stop: Callable[[str], None]) -> Iterator[None]:
    """The first Ctrl-C stops the senders after the request in flight; KeyboardInterrupt is
    raised once the block ends, a second Ctrl-C raises it at once.

    Raised where it lands, the interrupt could cut a claim between its statement and its
    fetch, and leave that database connection unable to commit (SQLite: "statements in
    progress"), so the run could not even release its lease. Only in the main thread with
    Python's own handler in place: an ignored SIGINT (`nohup`, `cmd &`) stays ignored.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    # The handler only posts to a queue (SimpleQueue.put is safe in a signal handler): setting
    # the stop itself takes a lock the interrupted code may be holding.
    interrupts: queue.SimpleQueue[bool] = queue.SimpleQueue()
    interrupted = False

    def on_ctrl_c(signum: int, frame: object) -> None:
        nonlocal interrupted
        interrupted = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        interrupts.put(True)

    def relay() -> None:
        if interrupts.get():
            stop(INTERRUPTED)

    relay_thread = threading.Thread(target=relay, name="ctrl-c", daemon=True)
    relay_thread.start()
    signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        interrupts.put(False)
        relay_thread.join()
    if interrupted:
        raise KeyboardInterrupt


INTERRUPTED = (
    "The run was interrupted (Ctrl-C, a stop or a crash of its process), so it stopped sending "
    "after the request in flight. Run the week again or press Retry: it sends what is left, "
    "nobody twice."
)
