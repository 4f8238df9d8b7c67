"""The send's writes: one thread records accepted requests, every write goes through one gate.

With sixteen requests in flight, each thread that recorded its own answer was one more writer
waiting on SQLite's single write lock, whose busy handler sleeps 1, 2, 5, 10 ms and more
between tries: on the 100k list the claiming thread, the head of the send, spent 85% of its
time in claims that took 12 ms instead of 4. Now one recorder thread marks every answer that
has come in, several requests to a transaction, and the claim, the recorder and the rare
settlements of failed requests take turns through one lock instead of SQLite's sleeps.

An accepted request is recorded within one transaction's time of its answer (the recorder never
waits for the claiming thread), and `flush` returns only once everything queued is recorded.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Self

from sqlalchemy.engine import Connection, Engine

from digest.delivery import ledger

log = logging.getLogger(__name__)

# Accepted requests recorded in one transaction, at most.
_PER_TRANSACTION = 32


@dataclass(frozen=True)
class Accepted:
    """A request the provider accepted, waiting to be recorded."""

    claimed: ledger.ClaimedBatch
    message_id: str | None
    # Called with the rows marked `sent` once they are (by the recorder's thread).
    then: Callable[[int], None]


class Recorder:
    """The send's one gate for writes, and the thread that records accepted requests."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._gate = threading.Lock()
        self._queue: queue.Queue[Accepted | None] = queue.Queue()
        self._failure: Exception | None = None
        # In its creator's context, as the pool's requests are: `then` reports to the run's
        # logger, which must find the run's settings (Prefect's, among them its API) there.
        self._thread = threading.Thread(
            target=contextvars.copy_context().run,
            args=(self._run,),
            name="send-recorder",
            daemon=True,
        )

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._queue.put(None)
        self._thread.join()

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """A write transaction, taken in turn with the send's other writers."""
        with self._gate, self._engine.begin() as connection:
            yield connection

    def accepted(self, request: Accepted) -> None:
        self._queue.put(request)

    def flush(self) -> None:
        """Wait until every accepted request handed in so far is recorded; a recording that
        failed (the database gone) is raised here, its rows left `sending` for the next run."""
        self._queue.join()
        if self._failure is not None:
            raise self._failure

    def _run(self) -> None:
        while (first := self._queue.get()) is not None:
            waiting = [first]
            while len(waiting) < _PER_TRANSACTION:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # seen after this transaction
                    self._queue.task_done()
                    break
                waiting.append(item)
            self._record(waiting)
        self._queue.task_done()

    def _record(self, waiting: list[Accepted]) -> None:
        """Mark the waiting requests in one transaction; if it fails, each again on its own but
        the one whose mark failed, so a failure leaves only its own rows `sending`."""
        recorded: list[tuple[Accepted, int]] = []
        try:
            self._mark(waiting, into=recorded)
        except Exception as failure:
            self._fail(failure)
            recorded = self._mark_one_by_one(waiting, but=len(recorded))
        try:
            for request, sent in recorded:
                request.then(sent)
        except Exception as failure:
            self._fail(failure)
        finally:
            for _ in waiting:
                self._queue.task_done()

    def _mark(self, waiting: list[Accepted], *, into: list[tuple[Accepted, int]]) -> None:
        """One transaction; each request and its rows marked go `into` as it is marked."""
        with self.writing() as connection:
            for request in waiting:
                sent = ledger.mark_sent(
                    connection, batch=request.claimed, message_id=request.message_id
                )
                into.append((request, sent))

    def _mark_one_by_one(self, waiting: list[Accepted], *, but: int) -> list[tuple[Accepted, int]]:
        """After a failed transaction (rolled back whole), every request but the `but`th on
        its own; `but` past the end (the commit failed) leaves none out."""
        recorded: list[tuple[Accepted, int]] = []
        for index, request in enumerate(waiting):
            if index == but:
                continue
            alone: list[tuple[Accepted, int]] = []
            try:
                self._mark([request], into=alone)
            except Exception as failure:
                self._fail(failure)
            else:
                recorded += alone
        return recorded

    def _fail(self, failure: Exception) -> None:
        log.error("recording an accepted request failed, its rows stay `sending`: %r", failure)
        self._failure = self._failure or failure
