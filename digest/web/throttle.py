"""Sign-up limits: per client IP, per mailbox (plus-tags folded) and overall, in fixed windows.

Counters live in memory, owned by one app instance; each window starts them afresh. A refused
request is not counted, and the overall limit is checked first, so the tables never hold more
entries than the overall limit allows.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from digest.audience.addresses import email_key
from digest.config import Settings


def mailbox_for_limit(address: str) -> str:
    """The mailbox a limit counts: the address key with a `+tag` dropped (a+x@d is a@d)."""
    local, at, domain = email_key(address).rpartition("@")
    if not at:
        return email_key(address)
    return f"{local.partition('+')[0]}@{domain}"


@dataclass(frozen=True)
class Limits:
    per_ip: int
    per_address: int
    total: int
    window_seconds: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            per_ip=settings.signup_limit_per_ip,
            per_address=settings.signup_limit_per_address,
            total=settings.signup_limit_total,
            window_seconds=settings.signup_limit_window_seconds,
        )


class SignupLimiter:
    """Counts sign-ups; `allow` says whether one more may go through, else seconds to wait."""

    def __init__(self, limits: Limits, *, clock: Callable[[], float]) -> None:
        self.limits = limits
        self.clock = clock
        self._lock = threading.Lock()
        self._window = -1
        self._total = 0
        self._by_ip: Counter[str] = Counter()
        self._by_mailbox: Counter[str] = Counter()

    def allow(self, *, ip: str | None, address: str) -> int | None:
        """None if allowed (and counted); otherwise the seconds until the window turns."""
        now = self.clock()
        window = int(now // self.limits.window_seconds)
        mailbox = mailbox_for_limit(address) if address.strip() else ""
        with self._lock:
            if window != self._window:
                self._window, self._total = window, 0
                self._by_ip.clear()
                self._by_mailbox.clear()
            full = (
                self._total >= self.limits.total
                or (ip is not None and self._by_ip[ip] >= self.limits.per_ip)
                or (mailbox != "" and self._by_mailbox[mailbox] >= self.limits.per_address)
            )
            if full:
                return max(1, math.ceil((window + 1) * self.limits.window_seconds - now))
            self._total += 1
            if ip is not None:
                self._by_ip[ip] += 1
            if mailbox:
                self._by_mailbox[mailbox] += 1
            return None
