"""The stop a run's send shares: once one part of it meets a reason for everyone to stop (a
refused key, a recall, a provider out of reach), every other part stops at its next step."""

from __future__ import annotations

import threading
from enum import StrEnum


class StopKind(StrEnum):
    """Why a run's send stopped before the work was done."""

    KEY_REFUSED = "key-refused"  # the provider refused our credentials
    LEASE_LOST = "lease-lost"  # another run took the digest over
    REQUEST_REFUSED = "request-refused"  # a refusal no recipient explains: sender or content
    PROVIDER_UNAVAILABLE = "provider-unavailable"  # transient errors outlasted every attempt
    NO_CANCEL_SLOT = "no-cancel-slot"  # every cancel slot is held, for longer than a run waits
    RECALLED = "recalled"  # the editor recalled the digest (`digest recall`)
    STOPPED = "stopped"  # the run's process is going away (parent died, interrupt): no new request


class RunStop:
    """A plain object (not a dataclass), so Prefect hands the same instance to every task."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.kind: StopKind | None = None
        self.reason = ""

    def set(self, kind: StopKind, reason: str) -> None:
        if not self._event.is_set():
            self.kind, self.reason = kind, reason
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`, waking at once when the run is stopped; True if stopped."""
        return self._event.wait(max(0.0, seconds))
