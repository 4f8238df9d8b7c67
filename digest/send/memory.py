"""A backend that keeps what it "sent" in a list: the test double, no mocks needed.

It is handed in by tests (to a lane, or to `create_app(backend_factory=...)`), never picked by
configuration: whoever made it reads its `sent` list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import EmailMessage

from digest.send.base import BaseBackend, BatchResult, OutgoingBatch
from digest.send.buildable import build_all


@dataclass
class MemoryBackend(BaseBackend):
    """Builds each message exactly as the outbox would and appends it to `sent`."""

    sent: list[EmailMessage] = field(default_factory=list)
    batches: int = 0

    def send_batch(self, batch: OutgoingBatch) -> BatchResult:
        for _recipient, message, _data in build_all(batch):  # all built first: see buildable
            self.sent.append(message)
        self.batches += 1
        return BatchResult(
            message_id=f"memory-{batch.digest_id}-{self.batches}", accepted=len(batch.recipients)
        )
