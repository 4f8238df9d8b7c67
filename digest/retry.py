"""The one retry policy: how many tries, and how long to wait between them.

Every place that repeats a call over the network (SendGrid's mail send and its control calls, the
catalog feed) asks this policy how long to wait before its next try, and whether one is left,
instead of keeping a backoff of its own. Exponential backoff with full jitter, so that
parallel senders spread out; a server's own word (Retry-After, a rate limit's reset) replaces the
backoff, within `max_wait_seconds`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries in all; between them, waits from `wait` (tests pass their own sleep)."""

    attempts: int
    base_seconds: float = 0.5
    max_backoff_seconds: float = 30.0
    max_wait_seconds: float = 60.0
    jitter: bool = True
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("a retry policy needs at least one attempt")

    def tries(self) -> range:
        """The attempt numbers, 1-based."""
        return range(1, self.attempts + 1)

    def has_next(self, attempt: int) -> bool:
        return attempt < self.attempts

    def delay(self, attempt: int, told: float | None = None) -> float:
        """The wait after try `attempt`: the server's `told` seconds if it said, else backoff."""
        if told is not None:
            return min(max(0.0, told), self.max_wait_seconds)
        ceiling = min(self.max_backoff_seconds, self.base_seconds * 2 ** (attempt - 1))
        return self.rng.uniform(0.0, ceiling) if self.jitter else ceiling

    def pause(self, attempt: int, told: float | None = None) -> float:
        """Wait before the next try; returns how long."""
        wait = self.delay(attempt, told)
        self.sleep(wait)
        return wait
