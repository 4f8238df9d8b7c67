"""Confirmation emails sent off the request: a small worker pool the app starts and stops.

The sign-up form answers before any provider call, so a known address and a new one get the
same page in the same time, and a provider error can fail no response. The pool lives with
the app (its lifespan); stopping waits for the mails already queued.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from digest.config import Settings
from digest.errors import SendAuthError
from digest.send.base import PermanentSendError, TransientSendError
from digest.web.confirmation import send_confirmation
from digest.web.context import BackendFactory
from digest.web.pages import Pages

log = logging.getLogger(__name__)


class ConfirmationMailer:
    """Queues confirmation emails for a worker thread; one per app instance."""

    def __init__(
        self,
        settings: Settings,
        pages: Pages,
        *,
        backend_factory: BackendFactory,
        on_failed: Callable[[int, datetime], None],
        workers: int = 2,
    ) -> None:
        self.settings = settings
        self.pages = pages
        self.backend_factory = backend_factory
        self.on_failed = on_failed
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._queued: set[Future[None]] = set()
        self._lock = threading.Lock()

    def wait_idle(self, timeout: float = 30) -> None:
        """Block until every queued email has been tried (tests and shutdown use it)."""
        with self._lock:
            queued = list(self._queued)
        wait(queued, timeout=timeout)

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._queued.discard(future)

    @asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        """Starlette lifespan: the pool runs while the app serves."""
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="confirmation-mail")
        try:
            yield
        finally:
            pool, self._pool = self._pool, None
            pool.shutdown(wait=True)

    def submit(
        self, *, subscriber_id: int, email: str, confirm_url: str, reserved_at: datetime
    ) -> None:
        """Queue one confirmation, its reservation taken (`on_failed` gives it back if it does
        not go); sent now on this thread if the app runs without lifespan."""
        if self._pool is None:
            self._send(subscriber_id, email, confirm_url, reserved_at)
            return
        future = self._pool.submit(self._send, subscriber_id, email, confirm_url, reserved_at)
        with self._lock:
            self._queued.add(future)
        future.add_done_callback(self._forget)

    def _send(
        self, subscriber_id: int, email: str, confirm_url: str, reserved_at: datetime
    ) -> None:
        try:
            send_confirmation(
                self.settings,
                self.pages,
                backend_factory=self.backend_factory,
                email=email,
                confirm_url=confirm_url,
            )
            return
        except (TransientSendError, PermanentSendError, SendAuthError, OSError) as exc:
            # The person sees nothing of this: "fill in the form again" is on their page.
            log.error(
                "confirmation email to subscriber %s not sent: %s",
                subscriber_id,
                type(exc).__name__,
            )
        except Exception:
            log.exception("confirmation email to subscriber %s failed", subscriber_id)
        self.on_failed(subscriber_id, reserved_at)
