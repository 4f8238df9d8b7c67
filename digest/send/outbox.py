"""A backend that writes one `.eml` file per recipient under `<outbox>/<week>/`.

Files are written to a temporary name and renamed, so a crash never leaves half a message.
"""

from __future__ import annotations

import re
from pathlib import Path

from digest.send.base import BaseBackend, BatchResult, OutgoingBatch
from digest.send.messages import build_message

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")


class OutboxBackend(BaseBackend):
    """Delivers to a folder: for local runs, the demo and editors."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def send_batch(self, batch: OutgoingBatch) -> BatchResult:
        folder = self.directory / ("test" if batch.is_test else batch.week)
        folder.mkdir(parents=True, exist_ok=True)
        for recipient in batch.recipients:
            safe_address = _UNSAFE.sub("_", recipient.email.lower())
            name = f"{recipient.delivery_id:08d}-{safe_address}.eml"
            if batch.is_test:
                name = f"test-{batch.week}-{safe_address}.eml"
            target = folder / name
            temporary = target.with_suffix(".eml.tmp")
            temporary.write_bytes(bytes(build_message(batch, recipient)))
            temporary.replace(target)
        return BatchResult(message_id=f"outbox-{batch.week}", accepted=len(batch.recipients))
