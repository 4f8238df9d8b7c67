"""Claimed rows made recipients, on the second core while the sending process claims and posts.

Building a recipient signs three tokens and writes their links, greeting and headers: about
10 us of CPU, a third of the sending process's CPU per 1,000-row request, and that process is
held to one core by the interpreter's lock. A large send hands the building to one child
process (`python -m digest.delivery.building`) over a pipe: the rows go in as plain tuples and
the recipients come back in order, so the parent only claims, posts and records meanwhile. For a
backend that has a `recipient_encoder` (SendGrid) the child encodes them too and answers the
request's bytes: unpickling 1,000 recipients and writing their JSON took about a quarter of the
sending process's time at 100,000 readers on the 2-core machine (docs/benchmarks.md).

The child is ours rather than a `concurrent.futures.ProcessPoolExecutor`'s: a spawned pool
worker re-imports the parent's main module (the whole CLI) and, checked on this machine,
outlives a parent killed with SIGKILL. This one imports what building needs, leaves when its
pipe closes (the parent ended, however), ignores Ctrl-C (the parent decides when to stop), and
any trouble with it (it failed to start, died, hung, answered nonsense) only means building in
the sending process again: the send never depends on it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from functools import partial
from pathlib import Path
from typing import IO, Any, Self

from digest.links import Links
from digest.send.base import EncodedRecipients, Recipient, delivery_ids_of

log = logging.getLogger(__name__)

# Rows pending at which a send builds in a child process: below, the child's start (0.1 s of
# CPU) and the pipe cost more than the second core saves.
BUILD_PROCESS_FROM_ROWS = 10_000
# Requests queued in the child beyond which the sending process builds the next one itself.
_MAX_QUEUED = 4
# A child that has not answered in this long is taken for hung.
_ANSWER_TIMEOUT_SECONDS = 30.0
_READY = "ready"
# A request's recipients as built: as they are, or encoded for the backend.
Built = list[Recipient] | EncodedRecipients
# Recipients to their encoded form (`EncodedRecipients.encode` with the backend's encoder).
Encode = Callable[[list[Recipient]], EncodedRecipients]
# _PIPE: pickles cross only the pipe between the sending process and the child it started, which
# nothing else can write to; they are never read from a file or a socket.


def recipient_for(links: Links, row: Sequence[Any]) -> Recipient:
    """One claimed row, (delivery id, subscriber id, address, name) as the ledger's
    `ClaimedRecipient` or a plain tuple (what the child receives), as the backend's recipient:
    their own links, greeting and headers."""
    delivery_id, subscriber_id, email, name = row
    return Recipient.for_subscriber(
        delivery_id,
        email,
        name,
        unsubscribe_url=links.unsubscribe(subscriber_id),
        preferences_url=links.preferences(subscriber_id),
        vote_token=links.vote_token(delivery_id),
    )


def build_recipients(links: Links, rows: Iterable[Sequence[Any]]) -> list[Recipient]:
    return [recipient_for(links, row) for row in rows]


class BuildingProcess:
    """The child that builds (and encodes, given `encode`), and the futures of the requests it
    has been handed, in order."""

    def __init__(self, links: Links, encode: Encode | None = None) -> None:
        # The child imports this very code, wherever the parent found it.
        code_root = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(filter(None, [code_root, os.environ.get("PYTHONPATH")]))
        self._process = subprocess.Popen(
            [sys.executable, "-m", __name__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": path},
            start_new_session=True,  # Ctrl-C at a terminal reaches the parent only
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        self._to_child: IO[bytes] = self._process.stdin
        self._from_child: IO[bytes] = self._process.stdout
        # Each request handed in, in order: its future and the delivery ids it was for.
        self._waiting: deque[tuple[Future[Built], list[int]]] = deque()
        self._lock = threading.Lock()  # the queue of futures and the state below
        self._write_lock = threading.Lock()  # one request's bytes at a time into the pipe
        self._ready = False
        self._gone: str | None = None
        # The key goes down the pipe, never in the child's arguments or environment; `encode`
        # goes by name (a module-level function), and the child imports its module.
        self._write((links, encode))
        self._reader = threading.Thread(target=self._read, name="build-reader", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self._process.pid

    def takes_more(self) -> bool:
        """Started, alive, and not already behind."""
        with self._lock:
            return self._ready and self._gone is None and len(self._waiting) < _MAX_QUEUED

    def submit(self, rows: Sequence[Sequence[Any]]) -> Future[Built]:
        future: Future[Built] = Future()
        with self._write_lock:
            with self._lock:
                if self._gone is not None:
                    future.set_exception(ChildProcessError(self._gone))
                    return future
                self._waiting.append((future, [row[0] for row in rows]))
            self._write([tuple(row) for row in rows])
        return future

    def close(self) -> None:
        """Close the pipe (the child leaves at its end) and wait a moment for it."""
        self._stop("the send ended", expected=True)
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def kill(self, reason: str) -> None:
        self._stop(reason)
        self._process.kill()
        self._process.wait()

    def _write(self, item: object) -> None:
        try:
            pickle.dump(item, self._to_child, protocol=pickle.HIGHEST_PROTOCOL)
            self._to_child.flush()
        except (OSError, ValueError) as error:  # a closed or broken pipe: the child is gone
            self._stop(f"the building process could not be reached ({error})")

    def _read(self) -> None:
        try:
            if pickle.load(self._from_child) != _READY:  # noqa: S301 (see _PIPE)
                raise pickle.UnpicklingError("no greeting")
            with self._lock:
                self._ready = True
            while True:
                built = pickle.load(self._from_child)  # noqa: S301
                with self._lock:
                    future, delivery_ids = self._waiting.popleft()
                # Recipients of other rows would mail people twice and mark these rows sent.
                if delivery_ids_of(built) != delivery_ids:
                    reason = "the building process answered for other rows"
                    self._stop(reason)  # said, and the rest failed, before this one is
                    future.set_exception(ChildProcessError(reason))
                    self._process.kill()
                    return
                future.set_result(built)
        except Exception as error:  # the reader never dies with futures still waiting on it
            self._stop(f"the building process ended ({type(error).__name__})")

    def _stop(self, reason: str, *, expected: bool = False) -> None:
        with self._lock:
            first = self._gone is None
            if first:
                self._gone = reason
            waiting = [future for future, _ in self._waiting]
            self._waiting = deque()
        if first and not expected:
            log.warning("recipients are built in the sending process from now on: %s", reason)
        for future in waiting:
            if not future.done():
                future.set_exception(ChildProcessError(reason))
        with contextlib.suppress(OSError):
            self._to_child.close()


class RecipientBuilder:
    """Builds each request's recipients, in the child while it keeps up, here otherwise.

    `start(rows)` returns at once with what the request's own thread calls for the recipients,
    so the claiming thread goes on to the next claim meanwhile. Built here, they are not
    encoded: the backend encodes them as it sends, the same either way.
    """

    def __init__(self, links: Links, process: BuildingProcess | None = None) -> None:
        self._links = links
        self._process = process

    @classmethod
    def for_send(
        cls, links: Links, *, pending: int, from_rows: int | None, encode: Encode | None = None
    ) -> Self:
        if from_rows is None or pending < from_rows or not _second_core():
            return cls(links)
        try:
            return cls(links, BuildingProcess(links, encode))
        except OSError as error:  # no interpreter to start: build here, as for a small send
            log.warning("recipients are built in the sending process: %s", error)
            return cls(links)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._process is not None:
            self._process.close()

    def start(self, rows: Sequence[Sequence[Any]]) -> Callable[[], Built]:
        if self._process is None or not self._process.takes_more():
            return partial(build_recipients, self._links, rows)
        return partial(self._collect, self._process.submit(rows), rows)

    def _collect(self, future: Future[Built], rows: Sequence[Sequence[Any]]) -> Built:
        try:
            return future.result(timeout=_ANSWER_TIMEOUT_SECONDS)
        except FutureTimeout:
            if self._process is not None:
                self._process.kill("the building process did not answer in time")
        except ChildProcessError:
            pass  # said once, when the child went
        return build_recipients(self._links, rows)


def _second_core() -> bool:
    return len(os.sched_getaffinity(0)) > 1 if hasattr(os, "sched_getaffinity") else True


def _serve(source: IO[bytes], sink: IO[bytes]) -> None:
    """The child's loop: the links (and the encoder) first, then rows in, recipients out, until
    the pipe ends."""
    links, encode = pickle.load(source)  # noqa: S301 (see _PIPE)
    pickle.dump(_READY, sink)
    sink.flush()
    while True:
        try:
            rows = pickle.load(source)  # noqa: S301
        except EOFError:
            return
        recipients = build_recipients(links, rows)
        built = recipients if encode is None else encode(recipients)
        pickle.dump(built, sink, protocol=pickle.HIGHEST_PROTOCOL)
        sink.flush()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _serve(sys.stdin.buffer, sys.stdout.buffer)
